"""iALS: implicit alternating least squares (Hu, Koren, Volinsky 2008).

Minimises, over user factors X: [U, D] and item factors Y: [I, D],

  sum_{u, i} c_ui (p_ui - x_u . y_i)^2 + lambda (|X|^2 + |Y|^2),

with p_ui = 1 for a training positive (else 0) and confidence c_ui = 1 + alpha r_ui (else 1),
r_ui the observation's value: 1 for a liked rating, `--low_rating_weight` for a low one (Hu et
al.'s confidence of a weaker observation; `registry.load_low_ratings`), `--high_rating_weight`
for a liked rating >= `--high_rating_floor` (`registry.observed`). Each sweep solves every
user exactly given Y, then every item exactly given X. With the Gramian trick a user's normal
equations only touch her own items:

  A_u = Y^T Y + alpha Y_u^T R_u Y_u + lambda I,   b_u = Y_u^T (1 + alpha r_u),

R_u = diag(r_u) (the identity when every observation is a liked rating).

Two solvers (`--ials_solver`):

- `cholesky`: the exact solve, O(nnz D^2 + U D^3) a sweep: batched [B, D, D] systems (`vmap` of
  `cho_factor`/`cho_solve`).
- `cg` (implicit's default, Takacs et al. 2011): `--ials_cg_steps` steps of conjugate gradient
  from the row's current factors, O(nnz D + U D^2) a step; A_u is never formed, only applied:
  A_u p = (Y^T Y + lambda I) p + alpha Y_u^T (Y_u p). With as many steps as D it is the exact
  solve; with a few (3), warm started each sweep, it converges to the same fixed point.

Rows are bucketed by their number of positives (padded to the next power of two) and gathered
as int32[B, L] blocks; each block of rows is one jitted call.

This is the classic regulariser (a plain lambda). Rendle et al. 2022 ("Revisiting the
Performance of iALS") tune a frequency-scaled one, lambda (|I_u| + alpha_0 |I|)^nu per row, and
a weight on the unobserved part of the Gramian; neither is implemented here.

The params also carry alpha and lambda (float32 scalars), so that `fold_in` can solve a new user
exactly as training solved the known ones.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax import retrieval
from tripjax.data import registry
from tripjax.models import base

_HIGHEST = jax.lax.Precision.HIGHEST
_INIT_STD = 0.01  # normal init of both tables (as in `implicit`'s ALS scale).
# B * L gathered items per solved block: small enough that a block's [B, L, D] rows stay in cache
# through the solve (CG reads them 8 times a sweep; 2^20 slots made both solvers 1.5-4x slower
# at the ML-1M shape).
_SLOTS_PER_BLOCK = 1 << 14
_MAX_ROWS_PER_BLOCK = 2048  # B: [B, D, D] systems per block.

# One block of rows of equal padded length: (rows int32[B], items int32[B, L], mask
# float32[B, L]); the mask holds each observation's value r (1 for a liked rating), padding
# slots 0.
Block = tuple[jax.Array, jax.Array, jax.Array]


def buckets(matrix: sp.csr_matrix) -> tuple[Block, ...]:
  """Groups the rows of a CSR matrix by length, padded to powers of two; host-side.

  Rows with length in (L/2, L] share a bucket of width L (empty rows go with L = 1), so padding
  at most doubles the work. A bucket is cut into blocks of B = clip(2^14 / L, 1, 2048) rows
  (fewer when the bucket is smaller), which keeps the [B, L, D] gather in cache and bounds the
  [B, D, D] systems; a bucket's last block is padded to B rows with the out-of-range row R
  (dropped when written), so each width compiles once.

  Args:
    matrix: CSR [R, C]: bool, or float with values > 0 (the observations' r).

  Returns:
    Blocks (rows int32[B], items int32[B, L], mask float32[B, L]), in increasing L; every row
    is in exactly one block; the mask holds the entries' values (1.0 for a bool matrix),
    padding rows are R, with mask 0.
  """
  matrix = sp.csr_matrix(matrix)
  lengths = np.diff(matrix.indptr)
  widths = 1 << np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)
  out = []
  for width in np.unique(widths):
    rows_of_width = np.flatnonzero(widths == width)
    block = int(np.clip(_SLOTS_PER_BLOCK // width, 1, _MAX_ROWS_PER_BLOCK))
    block = min(block, rows_of_width.size)
    for start in range(0, rows_of_width.size, block):
      rows = rows_of_width[start:start + block]
      real = rows.size
      rows = np.concatenate([rows, np.full(block - real, matrix.shape[0], rows.dtype)])
      slots = np.arange(width)[None, :]
      valid = np.concatenate([slots < lengths[rows[:real]][:, None],
                              np.zeros((block - real, width), bool)])
      starts = np.concatenate([matrix.indptr[rows[:real]], np.zeros(block - real, np.int64)])
      pos = np.minimum(starts[:, None] + slots, max(matrix.nnz - 1, 0))
      items = np.where(valid, matrix.indices[pos] if matrix.nnz else 0, 0)
      values = np.where(valid, matrix.data[pos].astype(np.float32) if matrix.nnz else 0.0, 0.0)
      out.append((jnp.asarray(rows, jnp.int32), jnp.asarray(items, jnp.int32),
                  jnp.asarray(values, jnp.float32)))
  return tuple(out)


def _solve_block(gram: jax.Array, other: jax.Array, items: jax.Array, mask: jax.Array,
                 alpha: jax.Array, reg: jax.Array) -> jax.Array:
  """Exact least squares of a block of rows given the other side's factors.

  Args:
    gram: float32[D, D], `other.T @ other`.
    other: float32[C, D], the fixed factors.
    items: int32[B, L], each row's positives (padded).
    mask: float32[B, L], each positive's value r (1 for a liked rating), 0 for padding.
    alpha: float32[], confidence weight.
    reg: float32[], lambda.

  Returns:
    float32[B, D], the rows' new factors.
  """
  y = other[items] * (mask > 0)[..., None]  # [B, L, D], padding rows zero.
  dim = other.shape[1]
  a = (gram + reg * jnp.eye(dim, dtype=gram.dtype))[None] + alpha * jnp.einsum(
      "bld,ble->bde", y * mask[..., None], y, precision=_HIGHEST)
  b = jnp.sum((1.0 + alpha * mask)[..., None] * y, axis=1)
  return jax.vmap(lambda a_, b_: jax.scipy.linalg.cho_solve(
      jax.scipy.linalg.cho_factor(a_), b_))(a, b)


def _cg_block(gram: jax.Array, other: jax.Array, items: jax.Array, mask: jax.Array,
              start: jax.Array, alpha: jax.Array, reg: jax.Array, steps: int) -> jax.Array:
  """Conjugate-gradient steps on a block of rows' normal equations (`_solve_block`'s system).

  Args:
    gram, other, items, mask, alpha, reg: as in `_solve_block`.
    start: float32[B, D], the rows' current factors (the starting point).
    steps: CG steps (static); a row stops moving once its residual is below 1e-10 in norm.

  Returns:
    float32[B, D].
  """
  y = other[items] * (mask > 0)[..., None]  # [B, L, D], padding rows zero.
  regularized = gram + reg * jnp.eye(other.shape[1], dtype=gram.dtype)

  def apply(p):  # A p for every row: [B, D] -> [B, D].
    along = mask * jnp.einsum("bld,bd->bl", y, p, precision=_HIGHEST)
    return (jnp.matmul(p, regularized, precision=_HIGHEST)
            + alpha * jnp.einsum("bl,bld->bd", along, y, precision=_HIGHEST))

  x = start
  r = jnp.sum((1.0 + alpha * mask)[..., None] * y, axis=1) - apply(x)
  p, rr = r, jnp.sum(r * r, axis=-1)
  for _ in range(steps):
    live = rr > 1e-20  # as implicit: a converged row is left alone (no 0 / 0).
    ap = apply(p)
    step = jnp.where(live, rr / jnp.where(live, jnp.sum(p * ap, axis=-1), 1.0), 0.0)
    x = x + step[:, None] * p
    r = r - step[:, None] * ap
    rr_new = jnp.sum(r * r, axis=-1)
    p = r + jnp.where(live, rr_new / jnp.where(live, rr, 1.0), 0.0)[:, None] * p
    rr = jnp.where(live, rr_new, rr)
  return x


@functools.partial(jax.jit, donate_argnums=0, static_argnames="cg_steps")
def _solve_into(out: jax.Array, gram: jax.Array, other: jax.Array, rows: jax.Array,
                items: jax.Array, mask: jax.Array, alpha: jax.Array, reg: jax.Array,
                cg_steps: int = 0) -> jax.Array:
  """`out` (float32[R, D]) with the block's rows replaced by their new factors.

  `cg_steps` 0 solves exactly (`_solve_block`); otherwise that many CG steps from the rows'
  values in `out` (`_cg_block`).
  """
  if cg_steps:
    start = out.at[rows].get(mode="fill", fill_value=0.0)  # padding rows (R) start at 0
    new = _cg_block(gram, other, items, mask, start, alpha, reg, cg_steps)
  else:
    new = _solve_block(gram, other, items, mask, alpha, reg)
  return out.at[rows].set(new, mode="drop")  # padding rows (R) are dropped


def sweep(other: jax.Array, row_blocks: Sequence[Block], current: jax.Array, alpha: jax.Array,
          reg: jax.Array, cg_steps: int = 0) -> jax.Array:
  """Solves every row given the other side's factors (one half of an iteration).

  One jitted call per block of rows (about 2 nnz / 2^14 of them, `buckets`). Not one
  program for the whole sweep: XLA:CPU (jax 0.10.2) deadlocked when one program held several
  blocks' Cholesky solves (unrolled, under `lax.map` or under `fori_loop`), each block alone
  being fine.

  Args:
    other: float32[C, D], the fixed factors (items for a user sweep, users for an item sweep).
    row_blocks: `buckets(matrix)` of the CSR [R, C] whose rows are solved.
    current: float32[R, D], the rows' factors now (CG's starting point; the exact solve only
      takes their shape).
    alpha: float32[], confidence weight.
    reg: float32[], lambda.
    cg_steps: 0 for the exact solve, else conjugate-gradient steps per sweep.

  Returns:
    float32[R, D]; the exact solve gives empty rows zeros (CG moves them towards zero).
  """
  gram = jnp.matmul(other.T, other, precision=_HIGHEST)
  out = jnp.array(current, copy=True) if cg_steps else jnp.zeros_like(current)
  for rows, items, mask in row_blocks:
    out = _solve_into(out, gram, other, rows, items, mask, alpha, reg, cg_steps=cg_steps)
  return out


def init(config, num_users: int, num_items: int, key: jax.Array | None = None) -> dict:
  """Untrained params: both tables normal with std 0.01, from `key` (default `config.seed`).

  Returns:
    {"user": float32[U, D], "item": float32[I, D], "alpha": float32[], "reg": float32[]}.
  """
  key = jax.random.key(config.seed) if key is None else key
  user_key, item_key = jax.random.split(key)
  dim = config.ials_factors
  return {"user": _INIT_STD * jax.random.normal(user_key, (num_users, dim), jnp.float32),
          "item": _INIT_STD * jax.random.normal(item_key, (num_items, dim), jnp.float32),
          "alpha": jnp.float32(config.ials_alpha), "reg": jnp.float32(config.ials_reg)}


def fit(config, train, *, key: jax.Array | None = None, params: dict | None = None) -> dict:
  """Trains iALS for `config.ials_iterations` sweeps.

  Args:
    config: a `TrainConfig` (`ials_factors`, `ials_alpha`, `ials_reg`, `ials_iterations`,
      `ials_solver`, `ials_cg_steps`, `seed` when no key is given, and `low_rating_weight`:
      when > 0 the run's low ratings are observations of that value, as its high ones are of
      `high_rating_weight`'s, `registry.observed`).
    train: bool CSR [U, I].
    key: PRNG key of the initial tables (default `jax.random.key(config.seed)`).
    params: optional starting params (e.g. `init(...)`), instead of drawing them from `key`.

  Returns:
    {"user": float32[U, D], "item": float32[I, D], "alpha": float32[], "reg": float32[]}.
  """
  train = registry.observed(config, train)
  params = init(config, *train.shape, key) if params is None else params
  user_buckets, item_buckets = buckets(train), buckets(train.T.tocsr())
  user, item = params["user"], params["item"]
  cg_steps = int(config.ials_cg_steps) if config.ials_solver == "cg" else 0
  for _ in range(int(config.ials_iterations)):
    user = sweep(item, user_buckets, user, params["alpha"], params["reg"], cg_steps)
    item = sweep(user, item_buckets, item, params["alpha"], params["reg"], cg_steps)
  return {**params, "user": user, "item": item}


@jax.jit
def loss(params: dict, rows: jax.Array, cols: jax.Array,
         values: jax.Array | None = None) -> jax.Array:
  """The training objective (weighted squared error plus L2), without forming [U, I].

  Args:
    params: iALS params.
    rows, cols: int32[nnz], the training positives (`train.nonzero()`).
    values: optional float32[nnz], their values r (default 1: liked ratings).

  Returns:
    float32[]: sum_ui c_ui (p_ui - x_u.y_i)^2 + reg (|X|^2 + |Y|^2).
  """
  x, y, alpha = params["user"], params["item"], params["alpha"]
  every = jnp.sum(jnp.matmul(x.T, x, precision=_HIGHEST) * jnp.matmul(y.T, y, precision=_HIGHEST))
  s = jnp.sum(x[rows] * y[cols], axis=-1)
  r = 1.0 if values is None else values
  observed = jnp.sum((1.0 + alpha * r) * (1.0 - s) ** 2 - s ** 2)
  return every + observed + params["reg"] * (jnp.sum(x * x) + jnp.sum(y * y))


def score(params: dict, users: jax.Array) -> jax.Array:
  """float32[B, I]: dot products of the users' and all items' factors."""
  return jnp.matmul(params["user"][users], params["item"].T, precision=_HIGHEST)


def fold_in(params: dict, liked: Sequence[int], key: jax.Array, *, steps: int = 0,
            margin: float = 0.0) -> jax.Array:
  """A new user's factors: the same exact solve as training, item factors fixed.

  The solve is closed-form, so `steps` and `margin` (the iterative fold-in's settings) and
  `key` are unused.

  Args:
    params: iALS params.
    liked: int[P], the liked items (duplicates ignored), P >= 1.
    key: unused.

  Returns:
    float32[D].
  """
  del key, steps, margin
  item = jnp.asarray(params["item"], jnp.float32)
  items = np.flatnonzero(retrieval.item_mask(liked, item.shape[0])).astype(np.int32)
  if items.size == 0:
    raise errors.InvalidInput("fold_in needs at least one liked item, got none.")
  gram = jnp.matmul(item.T, item, precision=_HIGHEST)
  return _solve_block(gram, item, jnp.asarray(items)[None], jnp.ones((1, items.size), jnp.float32),
                      params["alpha"], params["reg"])[0]


def params_like(config, train) -> dict:
  """The params as `jax.ShapeDtypeStruct`s (they do not depend on the training nnz)."""
  num_users, num_items = train.shape
  return jax.eval_shape(lambda: init(config, num_users, num_items, jax.random.key(0)))


def describe(config) -> str:
  solver = (f"{config.ials_cg_steps} CG steps" if config.ials_solver == "cg"
            else "exact solves")
  return (f"iALS, {config.ials_factors} factors, alpha {config.ials_alpha:g}, reg "
          f"{config.ials_reg:g}, {config.ials_iterations} iterations ({solver})"
          + base.describe_ratings(config, "observations", "value"))


MODEL = base.Model(name="ials", fit=fit, score=score, params_like=params_like,
                   item_vectors=lambda params: params["item"], init=init, fold_in=fold_in,
                   describe=describe)
