"""Lazy Adam for embedding tables: Adam on the rows a batch touches (`sparse_adam`)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from tripjax.sparse_optim.rows import (DENSE_ROW_RATIO, Params, RowOptimizer, ScalarOrSchedule,
                                       apply_rows, check_rows, learning_rate_at)


class SparseAdamState(NamedTuple):
  """State of `sparse_adam`."""
  count: jax.Array  # int32[]: updates applied so far (global step).
  mu: Params  # like params, float32[R, D]: first moments.
  nu: Params  # like params, float32[R, D]: second moments.


def sparse_adam(learning_rate: ScalarOrSchedule, b1: float = 0.9,
                b2: float = 0.999, eps: float = 1e-8,
                dense_row_ratio: float = DENSE_ROW_RATIO) -> RowOptimizer:
  """Lazy Adam: Adam on the rows a batch touches, nothing elsewhere.

  Definition (TensorFlow's `LazyAdamOptimizer`, tf.contrib.opt /
  tensorflow_addons.optimizers.LazyAdam, and `torch.optim.SparseAdam`): at
  step t (the global count of updates, starting at 1), for each row r that
  appears in the batch, with g the summed gradient of r,

    mu[r] = b1 * mu[r] + (1 - b1) * g
    nu[r] = b2 * nu[r] + (1 - b2) * g**2
    p[r] -= lr(t - 1) * (mu[r] / (1 - b1**t)) / (sqrt(nu[r] / (1 - b2**t)) + eps)

  Rows absent from the batch keep their parameters AND moments bit for bit (in
  dense Adam their moments would decay and their momentum would keep moving
  them). The bias correction uses the global step t, as in both references
  (torch keeps one `step` per table, incremented whenever the table gets a
  gradient, which is every step here), not a per-row count. Epsilon is added
  to the bias-corrected sqrt(nu) as in `optax.adam` and Kingma & Ba's
  Algorithm 1 (TF and torch add it before the sqrt(1 - b2**t) correction, a
  difference of scale in eps only), so that when every row is touched this is
  exactly `optax.adam(learning_rate, b1, b2, eps)`.

  Args:
    learning_rate: a float, or an optax schedule called with the number of
      updates applied before this one (0 for the first, as in optax).
    b1: decay of the first moment.
    b2: decay of the second moment.
    eps: added to the denominator.
    dense_row_ratio: tables with at most this many rows per index in the step
      are updated by a masked pass over the whole table instead of row
      gathers/scatters (same values; faster when most rows are touched).

  Returns:
    A `RowOptimizer`.
  """

  def init(params):
    zeros = lambda p: jnp.zeros_like(p)
    return SparseAdamState(count=jnp.zeros([], jnp.int32),
                           mu=jax.tree.map(zeros, params),
                           nu=jax.tree.map(zeros, params))

  def update(row_grads, row_indices, state, params, param_rows=None):
    check_rows(row_grads, row_indices, params)
    count = optax.safe_increment(state.count)
    lr = learning_rate_at(learning_rate, state.count)
    t = count.astype(jnp.float32)
    correction1 = 1 - jnp.float32(b1) ** t
    correction2 = 1 - jnp.float32(b2) ** t

    def row_update(g, p, m, v):
      m = (1 - b1) * g + b1 * m
      v = (1 - b2) * (g * g) + b2 * v
      step = (m / correction1) / (jnp.sqrt(v / correction2) + eps)
      return p - lr * step, m, v

    new_params, mu, nu = apply_rows(row_update, dense_row_ratio, row_grads,
                                     row_indices, params, param_rows,
                                     state.mu, state.nu)
    return new_params, SparseAdamState(count=count, mu=mu, nu=nu)

  return RowOptimizer(init, update)
