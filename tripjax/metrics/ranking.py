"""Top-k over each user's candidates and the binary-relevance metrics at k.

precision@k = hits / k; recall@k = hits / n_test (the lab's definition, so recall@k < 1 when
n_test > k); ndcg@k = DCG / ideal DCG, with log2(rank + 2) discounts and the ideal over
min(k, n_test) hits; hit_rate@k = 1 if any hit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_SIGN_BIT = np.int32(np.iinfo(np.int32).min)  # the bits of -0.0
_NEG_INF_BITS = np.float32(-np.inf).view(np.int32)
_LOWEST_BITS = np.finfo(np.float32).min.view(np.int32)  # -3.4e38, the lowest finite float32


def top_k_unseen(scores: jax.Array, candidates: jax.Array, k: int) -> jax.Array:
  """Each user's k best candidate items, best first, ties to the lower item index.

  Args:
    scores: float[B, I]. A candidate scored -inf ranks with the lowest finite score; -0.0 ties
      0.0; subnormal scores rank exactly (the two rewrites are integer ops on the bits, and
      `lax.top_k` on float32 orders by the bits on CPU, where float ops would flush them to 0).
    candidates: bool[B, I], the items that may be recommended (not in train).
    k: static number of items.

  Returns:
    int32[B, k] item indices; -1 where a user has fewer than k candidates.
  """
  s = jnp.asarray(scores).astype(jnp.float32)
  bits = lax.bitcast_convert_type(s, jnp.int32)
  bits = jnp.where(bits == _SIGN_BIT, 0, bits)  # -0.0 -> 0.0 (top_k puts -0.0 below 0.0)
  bits = jnp.where(bits == _NEG_INF_BITS, _LOWEST_BITS, bits)  # -inf candidates beat the rest
  s = lax.bitcast_convert_type(bits, jnp.float32)
  vals, idx = lax.top_k(jnp.where(candidates, s, -jnp.inf), k)
  return jnp.where(vals > -jnp.inf, idx, -1).astype(jnp.int32)


def top_k_metrics(top: jax.Array, test_row: jax.Array, n_test: jax.Array,
                  ks: tuple[int, ...]) -> dict[str, jax.Array]:
  """precision/recall/NDCG/hit rate @k for one user.

  Args:
    top: int32[K], the user's top unseen items (-1 = none).
    test_row: bool[I], the user's test items.
    n_test: int32 scalar, number of test items.
    ks: static cutoffs, each <= K.

  Returns:
    name -> float32 scalar ("precision@k", "recall@k", "ndcg@k", "hit_rate@k" for each k).
  """
  kmax = top.shape[0]
  hits = test_row[jnp.maximum(top, 0)] & (top >= 0)
  disc = 1.0 / jnp.log2(jnp.arange(kmax, dtype=jnp.float32) + 2.0)
  ideal = jnp.cumsum(disc)
  out = {}
  for k in ks:
    h = jnp.sum(hits[:k], dtype=jnp.int32).astype(jnp.float32)
    dcg = jnp.sum(jnp.where(hits[:k], disc[:k], 0.0))
    idcg = ideal[jnp.clip(jnp.minimum(n_test, k) - 1, 0, kmax - 1)]
    out[f"precision@{k}"] = h / k
    out[f"recall@{k}"] = h / jnp.maximum(n_test, 1).astype(jnp.float32)
    out[f"ndcg@{k}"] = dcg / idcg
    out[f"hit_rate@{k}"] = (h > 0).astype(jnp.float32)
  return out
