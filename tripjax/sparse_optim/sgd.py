"""Plain SGD for embedding tables: one scatter-add per table (`sparse_sgd`)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from tripjax.sparse_optim.rows import RowOptimizer, ScalarOrSchedule, check_rows, learning_rate_at


class SparseSgdState(NamedTuple):
  """State of `sparse_sgd`."""
  count: jax.Array  # int32[]: updates applied so far (drives schedules).


def sparse_sgd(learning_rate: ScalarOrSchedule) -> RowOptimizer:
  """Plain SGD on the rows a batch touches (`optax.sgd(learning_rate)`'s math).

  p[r] -= lr(t - 1) * g for each row r in the batch. The step is one
  scatter-add of `-lr * row_grads` per table: repeated indices add up to the
  summed gradient inside the scatter (equal to optax.sgd on the dense gradient
  up to the order of the float additions), nothing else is read or written.
  This is the update of implicit's BPR (Hogwild SGD), the CPU reference point.

  Args:
    learning_rate: a float, or an optax schedule called with the number of
      updates applied before this one.

  Returns:
    A `RowOptimizer` whose state is a `SparseSgdState` (the step count).
  """

  def init(params):
    del params
    return SparseSgdState(count=jnp.zeros([], jnp.int32))

  def update(row_grads, row_indices, state, params, param_rows=None):
    del param_rows
    check_rows(row_grads, row_indices, params)
    lr = learning_rate_at(learning_rate, state.count)
    new_params = jax.tree.map(
        lambda g, i, p: p.at[i.astype(jnp.int32)].add(-(lr * g.astype(p.dtype)),
                                                       mode="drop"),
        row_grads, row_indices, params)
    return new_params, SparseSgdState(count=optax.safe_increment(state.count))

  return RowOptimizer(init, update, sgd_learning_rate=learning_rate)
