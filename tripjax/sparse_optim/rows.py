"""The row-update machinery shared by the row-sparse optimizers, and their protocol.

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
the table replaces the row gathers/scatters and gives the same values (the
trade-off is timed in benchmarks/throughput.py).

Each optimizer (`adam`, `adagrad`, `sgd`) supplies a per-row update; `apply_rows` sums the
duplicates, gathers the rows, applies it and scatters them back.
"""

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

from tripjax import errors

Params = Any  # pytree of float[R, D] tables
Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = Union[float, jax.Array, Schedule]


# Tables with at most this many rows per gathered index take the masked dense
# path (see `apply_rows`).
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


def check_rows(row_grads, row_indices, params):
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


def apply_rows(row_update, dense_row_ratio, row_grads, row_indices, params,
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
