"""Row-sparse optimizers for embedding tables: lazy Adam, (row-wise) Adagrad, SGD.

A triplet batch gathers a few thousand rows of tables that may hold hundreds of
thousands. A dense optax optimizer touches every row at every step, so its cost
grows with the tables instead of the batch. The optimizers here take gradients
with respect to the *gathered* rows and update only those rows (and their
optimizer state), scattering the results back.

Params, gradients and indices are pytrees with the same structure, typically

  params      = {"user": float32[U, D], "item": float32[I, D]}
  row_grads   = {"user": float32[N, D], "item": float32[M, D]}
  row_indices = {"user": int32[N],      "item": int32[M]}

where `row_grads["item"][k]` is the gradient with respect to
`params["item"][row_indices["item"][k]]`. Indices may repeat (a user with two
positives in the batch, an item drawn as a negative twice): the gradients of
repeated rows are summed before the update, exactly as the gradient of the
gather would sum them, so a row is updated once per step whatever its
multiplicity.

Per step the work is O((N + M) * D) plus one O(U + I) int32 scratch fill used
to find each index's representative occurrence; nothing of size [U, D] is
touched, except on a table with at most `dense_row_ratio` (default 2) rows per
gathered index, which a batch mostly touches anyway: there one masked pass over
the table is cheaper on CPU than row gathers/scatters and gives the same values.
"""

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from tripjax import errors

Params = Any  # pytree of float[R, D] tables
Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = Union[float, jax.Array, Schedule]


# Tables with at most this many rows per gathered index take the masked dense
# path (see `_apply_rows`); measured in benchmarks/throughput.py.
DENSE_ROW_RATIO = 2.0


class RowOptimizer(NamedTuple):
  """A row-sparse optimizer: pure `init` and `update` functions.

  Attributes:
    init: `init(params) -> state`.
    update: `update(row_grads, row_indices, state, params, param_rows=None)
      -> (new_params, new_state)`; jit-able, and safe to call with donated
      `state` and `params`. `param_rows` (optional, params' structure,
      float32[N, D] leaves) are the rows of params at `row_indices`, as the
      forward pass gathered them; passing them saves one gather per table.
    sgd_learning_rate: `sparse_sgd`'s learning rate (a float or schedule),
      None for the other optimizers. A fused kernel that applies plain SGD
      itself (`tripjax.kernels`) reads it, with the state's `count`.
  """
  init: Callable[[Params], Any]
  update: Callable[[Params, Params, Any, Params], tuple[Params, Any]]
  sgd_learning_rate: ScalarOrSchedule | None = None


class SparseAdamState(NamedTuple):
  """State of `sparse_adam`."""
  count: jax.Array  # int32[]: updates applied so far (global step).
  mu: Params  # like params, float32[R, D]: first moments.
  nu: Params  # like params, float32[R, D]: second moments.


class SparseAdagradState(NamedTuple):
  """State of `sparse_adagrad`."""
  count: jax.Array  # int32[]: updates applied so far (drives schedules).
  sum_of_squares: Params  # like params, float32[R, D]: accumulated g**2.


class SparseRowwiseAdagradState(NamedTuple):
  """State of `sparse_rowwise_adagrad`."""
  count: jax.Array  # int32[]: updates applied so far (drives schedules).
  sum_of_squares: Params  # params' structure, float32[R]: accumulated mean g**2.


class SparseSgdState(NamedTuple):
  """State of `sparse_sgd`."""
  count: jax.Array  # int32[]: updates applied so far (drives schedules).


def sum_duplicate_rows(indices, grads, num_rows):
  """Sums the gradients of repeated indices, without sorting.

  Each index's entries are summed into the slot of one of its occurrences (its
  representative); the other slots get a zero gradient and the out-of-range
  index `num_rows`, which gathers clip and scatters with `mode="drop"` ignore.
  XLA's sort is slow on CPU (about 0.7 ms for 4,096 keys), so the
  representative is found by scattering positions into an int32[num_rows]
  scratch and gathering them back: any writer may win a repeated index, and
  the gather-back makes every occurrence agree on that winner.

  Args:
    indices: int32[N], rows of a table with `num_rows` rows (in range).
    grads: float32[N, D], the gradient of each gathered row.
    num_rows: static int, the number of rows of the table.

  Returns:
    unique_indices: int32[N]; each distinct index once, `num_rows` elsewhere.
    summed: float32[N, D]; the summed gradient where `unique_indices` is a
      row, zero elsewhere.
  """
  n = indices.shape[0]
  positions = jnp.arange(n, dtype=jnp.int32)
  scratch = jnp.zeros((num_rows,), jnp.int32).at[indices].set(positions)
  representative = scratch[indices]
  summed = jnp.zeros_like(grads).at[representative].add(grads)
  unique_indices = jnp.where(representative == positions, indices, num_rows)
  return unique_indices.astype(jnp.int32), summed


def _check_rows(row_grads, row_indices, params):
  """Raises ValueError unless grads/indices/params agree in structure and shape."""
  leaves, structure = jax.tree.flatten(params)
  for name, tree in (("row_grads", row_grads), ("row_indices", row_indices)):
    if jax.tree.structure(tree) != structure:
      raise errors.InvalidInput(
          f"{name} must have the structure of params ({structure}), got "
          f"{jax.tree.structure(tree)}.")
  paths = [jax.tree_util.keystr(p)
           for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  for where, table, grads, indices in zip(paths, leaves,
                                          jax.tree.leaves(row_grads),
                                          jax.tree.leaves(row_indices)):
    if table.ndim != 2:
      raise errors.InvalidInput(f"params{where} must be a [rows, dim] table, got shape "
                                f"{list(table.shape)}.")
    if indices.ndim != 1 or not jnp.issubdtype(indices.dtype, jnp.integer):
      raise errors.InvalidInput(f"row_indices{where} must be an integer vector, got "
                                f"{indices.dtype}{list(indices.shape)}.")
    if grads.shape != (indices.shape[0], table.shape[1]):
      raise errors.InvalidInput(
          f"row_grads{where} must have shape [{indices.shape[0]}, "
          f"{table.shape[1]}] (one row per index, the table's dim), got "
          f"{list(grads.shape)}.")


def learning_rate_at(learning_rate, count):
  """The step size for the update after `count` updates (optax's convention)."""
  if callable(learning_rate):
    return learning_rate(count)
  return learning_rate


def _apply_rows(row_update, dense_row_ratio, row_grads, row_indices, params,
                param_rows, *tables):
  """Sums duplicates, gathers rows, applies `row_update`, scatters the rows.

  A table with at most `dense_row_ratio` times as many rows as the step has
  indices is mostly touched anyway; streaming over it with a touched-row mask
  gives the same values (the untouched rows are selected unchanged) and is
  faster on CPU than row gathers and scatters.

  Args:
    row_update: `(g, p, *state_rows) -> (new_p, *new_state_rows)`, rowwise.
    dense_row_ratio: float; see above (0 always takes the row path).
    row_grads, row_indices, params, param_rows: as in `RowOptimizer.update`.
    *tables: per-row optimizer state pytrees, each with params' structure.

  Returns:
    new params and new state tables, as a tuple (params, *tables).
  """
  def one_table(grads, indices, table, rows, *state):
    num_rows = table.shape[0]
    indices = indices.astype(jnp.int32)
    if num_rows <= dense_row_ratio * indices.shape[0]:
      return _masked_dense(row_update, grads, indices, table, *state)
    unique, summed = sum_duplicate_rows(indices, grads.astype(table.dtype), num_rows)
    # XLA CPU fuses the index arithmetic into every gather and scatter and
    # redoes it per element; the barrier makes it a buffer computed once.
    unique, summed = jax.lax.optimization_barrier((unique, summed))
    if rows is None:
      rows = table.at[unique].get(mode="clip")
    gathered = [s.at[unique].get(mode="clip") for s in state]
    new_rows = row_update(summed, rows, *gathered)
    return tuple(
        t.at[unique].set(r.astype(t.dtype), mode="drop",
                         unique_indices=True)
        for t, r in zip((table,) + state, new_rows))

  if param_rows is None:
    param_rows = jax.tree.map(lambda _: None, params)
  per_table = jax.tree.map(one_table, row_grads, row_indices, params,
                           param_rows, *tables, is_leaf=lambda x: x is None)
  outer = jax.tree.structure(params)
  inner = jax.tree.structure((0,) * (1 + len(tables)))
  return jax.tree.transpose(outer, inner, per_table)


def _masked_dense(row_update, grads, indices, table, *state):
  """`row_update` on every row, kept only on the rows `indices` touch."""
  summed = jnp.zeros_like(table).at[indices].add(grads.astype(table.dtype))
  touched = jnp.zeros(table.shape[:1], bool).at[indices].set(True)[:, None]
  new_rows = row_update(summed, table, *state)
  return tuple(jnp.where(touched, r.astype(t.dtype), t)
               for t, r in zip((table,) + state, new_rows))


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
    _check_rows(row_grads, row_indices, params)
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

    new_params, mu, nu = _apply_rows(row_update, dense_row_ratio, row_grads,
                                     row_indices, params, param_rows,
                                     state.mu, state.nu)
    return new_params, SparseAdamState(count=count, mu=mu, nu=nu)

  return RowOptimizer(init, update)


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
    _check_rows(row_grads, row_indices, params)
    lr = learning_rate_at(learning_rate, state.count)

    def row_update(g, p, s):
      s = g * g + s
      scale = jnp.where(s > 0, jax.lax.rsqrt(s + eps), 0.0)
      return p - lr * (scale * g), s

    new_params, sums = _apply_rows(row_update, dense_row_ratio, row_grads,
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
    _check_rows(row_grads, row_indices, params)
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
    _check_rows(row_grads, row_indices, params)
    lr = learning_rate_at(learning_rate, state.count)
    new_params = jax.tree.map(
        lambda g, i, p: p.at[i.astype(jnp.int32)].add(-(lr * g.astype(p.dtype)),
                                                       mode="drop"),
        row_grads, row_indices, params)
    return new_params, SparseSgdState(count=optax.safe_increment(state.count))

  return RowOptimizer(init, update, sgd_learning_rate=learning_rate)


ROW_OPTIMIZERS = {"sparse_adam": sparse_adam, "sparse_adagrad": sparse_adagrad,
                  "sparse_rowwise_adagrad": sparse_rowwise_adagrad,
                  "sparse_sgd": sparse_sgd}


def row_optimizer(name: str, learning_rate: ScalarOrSchedule,
                  **kwargs) -> RowOptimizer:
  """Builds a row optimizer by name (a key of `ROW_OPTIMIZERS`)."""
  if name not in ROW_OPTIMIZERS:
    raise errors.InvalidInput(f"optimizer must be one of {sorted(ROW_OPTIMIZERS)}, got {name!r}.")
  return ROW_OPTIMIZERS[name](learning_rate, **kwargs)
