"""The "shuffled" draw order, kept so that checkpoints saved before `draw_order` existed resume.

Such runs shuffled the positives first and then drew each one's negatives in that order from the
epoch's JAX key: `jax.random.randint` ranks when uniform (its excess mass is below 2**-16 while
I < 2**16), `integers.uniform_below` when weighted. The current draw ("rows",
`tripjax.sampling.epoch`) has the same distribution but gives other triplets; `tripjax.train`
uses this one only to resume a checkpoint that records no `draw_order`.
"""

import jax
import jax.numpy as jnp

from tripjax.sampling import integers
from tripjax.sampling import negatives

DRAW_ORDER = "shuffled"


def shuffled_draw(key: jax.Array, order: jax.Array, users: jax.Array, items: jax.Array,
                  v: jax.Array, indptr: jax.Array, num_missing: jax.Array, weighted, *,
                  num_negatives: int, search_steps: int
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One epoch's triplets, in the epoch's order, with negatives drawn in that order.

  Args:
    key: the epoch's key for the negatives.
    order: int32[P], the epoch's permutation of the positives.
    users, items: int32[P], each positive's row and item, in the matrix's row order.
    v, indptr, num_missing, weighted, search_steps: as in
      `negatives.missing_items_from_words`.
    num_negatives: n, negatives per triplet.

  Returns:
    (users int32[P], pos int32[P], neg int32[P, n]), in the epoch's order.
  """
  u, p = users[order], items[order]
  shape = (u.shape[0], num_negatives)
  maxval = num_missing[u][:, None]
  if weighted is None:
    x = jax.random.randint(key, shape, 0, maxval, dtype=jnp.int32)
    return u, p, negatives.missing_items(v, indptr, u, x, search_steps)
  x = integers.uniform_below(key, maxval, shape)
  return u, p, negatives.weighted_missing_items(v, *weighted, indptr, u, x, search_steps)
