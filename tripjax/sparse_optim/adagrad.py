"""Adagrad for embedding tables: per element (`sparse_adagrad`) or per row
(`sparse_rowwise_adagrad`)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from tripjax import errors
from tripjax.sparse_optim.rows import (DENSE_ROW_RATIO, Params, RowOptimizer, ScalarOrSchedule,
                                       apply_rows, check_rows, learning_rate_at,
                                       sum_duplicate_rows)


class SparseAdagradState(NamedTuple):
  """State of `sparse_adagrad`."""
  count: jax.Array  # int32[]: updates applied so far (drives schedules).
  sum_of_squares: Params  # like params, float32[R, D]: accumulated g**2.


class SparseRowwiseAdagradState(NamedTuple):
  """State of `sparse_rowwise_adagrad`."""
  count: jax.Array  # int32[]: updates applied so far (drives schedules).
  sum_of_squares: Params  # params' structure, float32[R]: accumulated mean g**2.


def sparse_adagrad(learning_rate: ScalarOrSchedule,
                   initial_accumulator_value: float = 0.1,
                   eps: float = 1e-7,
                   dense_row_ratio: float = DENSE_ROW_RATIO) -> RowOptimizer:
  """Adagrad on the rows a batch touches (`optax.adagrad`'s math).

  For each row r in the batch, with g its summed gradient,

    s[r] += g**2
    p[r] -= lr(t - 1) * g / sqrt(s[r] + eps)     (0 where s[r] == 0)

  A row with zero gradient is unchanged by dense Adagrad too, so this equals
  `optax.adagrad(learning_rate, initial_accumulator_value, eps)` on every
  step, touched rows or not; it only skips the work.

  Args:
    learning_rate: a float, or an optax schedule called with the number of
      updates applied before this one (0 for the first, as in optax).
    initial_accumulator_value: starting value of the accumulators (>= 0).
    eps: added to the accumulator under the square root.
    dense_row_ratio: as in `sparse_adam`.

  Returns:
    A `RowOptimizer`.
  """
  if initial_accumulator_value < 0:
    raise errors.InvalidInput("sparse_adagrad: initial_accumulator_value must be >= 0, got "
                              f"{initial_accumulator_value}.")

  def init(params):
    fill = lambda p: jnp.full_like(p, initial_accumulator_value)
    return SparseAdagradState(count=jnp.zeros([], jnp.int32),
                              sum_of_squares=jax.tree.map(fill, params))

  def update(row_grads, row_indices, state, params, param_rows=None):
    check_rows(row_grads, row_indices, params)
    lr = learning_rate_at(learning_rate, state.count)

    def row_update(g, p, s):
      s = g * g + s
      scale = jnp.where(s > 0, jax.lax.rsqrt(s + eps), 0.0)
      return p - lr * (scale * g), s

    new_params, sums = apply_rows(row_update, dense_row_ratio, row_grads,
                                   row_indices, params, param_rows,
                                   state.sum_of_squares)
    return new_params, SparseAdagradState(
        count=optax.safe_increment(state.count), sum_of_squares=sums)

  return RowOptimizer(init, update)


def sparse_rowwise_adagrad(learning_rate: ScalarOrSchedule,
                           initial_accumulator_value: float = 0.0,
                           eps: float = 1e-8,
                           dense_row_ratio: float = DENSE_ROW_RATIO
                           ) -> RowOptimizer:
  """Row-wise Adagrad: one accumulator per row, the mean of its squared gradients.

  FBGEMM's `EmbOptimType.EXACT_ROWWISE_ADAGRAD` (fbgemm_gpu, the optimizer of
  DLRM's embedding tables; also caffe2's `RowWiseSparseAdagrad`): for each row
  r in the batch, with g its summed gradient (float32[D]),

    s[r] += mean(g**2)
    p[r] -= lr(t - 1) * g / (sqrt(s[r]) + eps)

  Rows absent from the batch are unchanged, as in dense row-wise Adagrad (their
  gradient is zero). The state is one scalar per row instead of a [D] row, so
  a step reads and writes 1/D of the accumulator traffic of `sparse_adagrad`,
  and the parameter rows are updated by one scatter-add of the step (they are
  never gathered: `param_rows` is accepted and unused).

  Args:
    learning_rate: a float, or an optax schedule called with the number of
      updates applied before this one (0 for the first, as in optax).
    initial_accumulator_value: starting value of the accumulators (>= 0;
      FBGEMM starts at 0).
    eps: added to sqrt(s) in the denominator (FBGEMM's default).
    dense_row_ratio: as in `sparse_adam`.

  Returns:
    A `RowOptimizer` whose state is a `SparseRowwiseAdagradState`.
  """
  if initial_accumulator_value < 0:
    raise errors.InvalidInput("sparse_rowwise_adagrad: initial_accumulator_value must be >= 0, "
                              f"got {initial_accumulator_value}.")

  def init(params):
    fill = lambda p: jnp.full(p.shape[:1], initial_accumulator_value, p.dtype)
    return SparseRowwiseAdagradState(count=jnp.zeros([], jnp.int32),
                                     sum_of_squares=jax.tree.map(fill, params))

  def update(row_grads, row_indices, state, params, param_rows=None):
    del param_rows  # the rows are updated in place by a scatter-add
    check_rows(row_grads, row_indices, params)
    lr = learning_rate_at(learning_rate, state.count)

    def step(summed, accumulators):
      """(-lr * g / (sqrt(s) + eps) float32[N, D], new s float32[N])."""
      new_s = accumulators + jnp.mean(summed * summed, axis=-1)
      scale = lr / (jnp.sqrt(new_s) + eps)
      return -(scale[:, None] * summed), new_s

    def one_table(grads, indices, table, accumulators):
      num_rows = table.shape[0]
      indices = indices.astype(jnp.int32)
      grads = grads.astype(table.dtype)
      if num_rows <= dense_row_ratio * indices.shape[0]:
        # Untouched rows have a zero summed gradient: their step is 0 and s + 0 = s.
        summed = jnp.zeros_like(table).at[indices].add(grads)
        delta, new_s = step(summed, accumulators)
        return table + delta, new_s
      unique, summed = sum_duplicate_rows(indices, grads, num_rows)
      unique, summed = jax.lax.optimization_barrier((unique, summed))
      delta, new_s = step(summed, accumulators.at[unique].get(mode="clip"))
      return (table.at[unique].add(delta, mode="drop", unique_indices=True),
              accumulators.at[unique].set(new_s, mode="drop", unique_indices=True))

    per_table = jax.tree.map(one_table, row_grads, row_indices, params,
                             state.sum_of_squares)
    new_params, sums = jax.tree.transpose(
        jax.tree.structure(params), jax.tree.structure((0, 0)), per_table)
    return new_params, SparseRowwiseAdagradState(
        count=optax.safe_increment(state.count), sum_of_squares=sums)

  return RowOptimizer(init, update)
