"""The exact-negatives search on CPU, an XLA custom call through `jax.ffi`.

`sampling.negatives.missing_items_from_words` draws each negative with a binary search that XLA
runs as `search_steps` passes over all the queries' bounds (memory-bound on CPU, and every query
pays for the longest row). `missing_items_cpu.cc` runs each query's search on its own, over its
own row, in registers, on XLA's intra-op threads. Integer arithmetic: the items are exactly the
XLA draw's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tripjax.kernels import library


def missing_items_from_words(v: jax.Array, indptr: jax.Array, num_missing: jax.Array,
                             weighted, users: jax.Array, words: jax.Array,
                             targets: tuple[str, str] | None = None) -> jax.Array:
  """`negatives.missing_items_from_words`, computed by the CPU kernel (call it under `jax.jit`).

  Args:
    v: int32[P], per row non-decreasing (see `sampling.negatives`).
    indptr: int32[U + 1], the CSR row pointers.
    num_missing: int32[U], each row's missing items (uniform) or missing weight (weighted).
    weighted: None, or (prefix int32[P], cumulative int32[I], row_weight int32[U]).
    users: int32[T], a row per query (in row order for speed; any order is correct).
    words: uint32[T, n] (uniform) or uint32[2, T, n] (weighted).
    targets: the XLA targets (uniform, weighted) to call; None: the library's, registered
      here. Another build registered under other names is timed against this one by
      `benchmarks.kernel_ab --kernel=missing_items`.

  Returns:
    int32[T, n], item ids not in the rows.
  """
  if targets is None:
    library.register()
    targets = (library.MISSING_ITEMS, library.WEIGHTED_MISSING_ITEMS)
  out = jax.ShapeDtypeStruct(words.shape[-2:], jnp.int32)
  ints = lambda *arrays: [jnp.asarray(a, jnp.int32) for a in arrays]
  words = jnp.asarray(words, jnp.uint32)
  if weighted is None:
    return jax.ffi.ffi_call(targets[0], out)(
        *ints(v, indptr, num_missing, users), words)
  prefix, cumulative, row_weight = weighted
  return jax.ffi.ffi_call(targets[1], out)(
      *ints(v, prefix, cumulative, row_weight, indptr, num_missing, users), words)
