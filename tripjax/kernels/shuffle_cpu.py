"""The epoch's shuffle on CPU (a bucket shuffle keyed by 64 random bits), through `jax.ffi`.

A permutation of the whole epoch and a gather by it read memory at random, a cache miss per
triplet and array; `shuffle_cpu.cc` deals the triplets into 1024 buckets in one sequential
pass and shuffles each bucket in cache (Rao and Sandelius' method: uniform up to splitmix64,
which draws its words from the key, and the swaps' multiply-shift bias, below
(P / 1024) / 2**32 relative). Its header states the permutation exactly; the tests rebuild it
in numpy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tripjax.kernels import library

BUCKET_BITS = 10  # shuffle_cpu.cc's kBucketBits


def scratch_size(num_positives: int, num_negatives: int) -> int:
  """The int32 entries `shuffle`'s scratch needs (order included)."""
  return num_positives * (3 + num_negatives)


def shuffle(key: jax.Array, users: jax.Array, items: jax.Array, neg: jax.Array,
            scratch: jax.Array, padded_size: int, batch_size: int, with_order: bool = True,
            target: str | None = None
            ) -> tuple[jax.Array | None, jax.Array, jax.Array, jax.Array, jax.Array]:
  """The triplets in a random order, padded to whole batches (CPU only; call under `jax.jit`).

  Args:
    key: uint32[2], the 64-bit key (low word first) of the shuffle's splitmix64 words.
    users, items: int32[P].
    neg: int32[P, n].
    scratch: int32[>= scratch_size(P, n)], working memory, returned (aliased): keep it from
      call to call (donated to the jitted caller) and it is not faulted in again each time.
    padded_size: T >= P, the output length.
    batch_size: B; positions t >= P repeat the last (partial) batch's triplets, as
      `sampling.epoch._source` says.
    with_order: also return the permutation (else its place holds None).
    target: the XLA target to call; None: the library's, registered here. Another build
      registered under another name is timed against this one by
      `benchmarks.kernel_ab --kernel=shuffle`.

  Returns:
    (order int32[T], the permutation: position -> input index (padding included);
    users[order], items[order], neg[order], the scratch).
  """
  if target is None:
    library.register()
    target = library.SHUFFLE
  n = neg.shape[1]
  ints = jax.ShapeDtypeStruct((padded_size,), jnp.int32)
  order = jax.ShapeDtypeStruct((padded_size if with_order else 0,), jnp.int32)
  call = jax.ffi.ffi_call(target,
                          (order, ints, ints, jax.ShapeDtypeStruct((padded_size, n), jnp.int32),
                           jax.ShapeDtypeStruct(scratch.shape, jnp.int32)),
                          input_output_aliases={4: 4})
  order, *triplets, scratch = call(
      jnp.asarray(key, jnp.uint32), jnp.asarray(users, jnp.int32), jnp.asarray(items, jnp.int32),
      jnp.asarray(neg, jnp.int32), scratch, batch_size=np.int64(batch_size))
  return (order if with_order else None, *triplets, scratch)
