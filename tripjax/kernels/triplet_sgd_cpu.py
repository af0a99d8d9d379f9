"""The fused CPU triplet step with `sparse_sgd`, an XLA custom call through `jax.ffi`.

On CPU, XLA runs the row-sparse step as a chain of passes over [B, D] arrays (gathers, five
row reductions, the gradient, scatter-adds) on one core. `triplet_sgd_cpu.cc` does the same
arithmetic in two passes, the first spread over XLA's intra-op threads, and updates the tables
in place (they are aliased to the outputs, so a donated state is not copied). It is compiled on
first use with the other kernels (`tripjax.kernels.library`).

    user, item, loss = triplet_sgd_update(user_table, item_table, users, pos, neg,
                                          cotangent, learning_rate, margin=0.5, l2=0.0,
                                          l2_cotangent=None)

equals, up to float rounding, the XLA step: `losses.triplet_cosine_loss` (plus l2), its
hand-written VJP scaled by `cotangent`, then `sparse_optim.sparse_sgd`'s scatter-adds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tripjax.kernels import library


def triplet_sgd_update(user_table: jax.Array, item_table: jax.Array, users: jax.Array,
                       pos: jax.Array, neg: jax.Array, cotangent: jax.Array,
                       learning_rate: jax.Array | float, margin: float, l2: float = 0.0,
                       l2_cotangent: jax.Array | None = None
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One fused sparse-SGD step of the triplet loss (CPU only; call it under `jax.jit`).

  Args:
    user_table: float32[U, D].
    item_table: float32[I, D].
    users: int32[B], rows of `user_table`.
    pos: int32[B], rows of `item_table` the users liked.
    neg: int32[B], rows of `item_table` drawn as negatives.
    cotangent: float32[B], d objective / d hinge loss of each triplet (weight / batch
      denominator, times WARP's scale where there is one).
    learning_rate: float32[], the step size.
    margin: the triplet margin.
    l2: weight of the squared norms (0 for none).
    l2_cotangent: float32[B]: the l2 term adds `l2 * l2_cotangent[k] * (|u|^2 + |p|^2 +
      |n|^2)` to the objective; None: `cotangent` (the same weights as the hinge's).

  Returns:
    (new user_table float32[U, D], new item_table float32[I, D], per-triplet hinge losses
    float32[B] at the old tables). Under jit with donated tables the update is in place.
  """
  library.register()
  size, dim = users.shape[0], user_table.shape[1]
  call = jax.ffi.ffi_call(
      library.TRIPLET_SGD_UPDATE,
      (jax.ShapeDtypeStruct(user_table.shape, jnp.float32),
       jax.ShapeDtypeStruct(item_table.shape, jnp.float32),
       jax.ShapeDtypeStruct((size,), jnp.float32),
       jax.ShapeDtypeStruct((3, size, dim), jnp.float32)),
      input_output_aliases={0: 0, 1: 1})
  user, item, loss, _ = call(
      user_table.astype(jnp.float32), item_table.astype(jnp.float32),
      users.astype(jnp.int32), pos.astype(jnp.int32), neg.astype(jnp.int32),
      cotangent.astype(jnp.float32),
      (cotangent if l2_cotangent is None else l2_cotangent).astype(jnp.float32),
      jnp.asarray(learning_rate, jnp.float32),
      margin=np.float32(margin), l2=np.float32(l2))
  return user, item, loss
