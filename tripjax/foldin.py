"""Fold-in: an embedding for a new user from the items they liked, with the item table frozen."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tripjax import errors
from tripjax import losses
from tripjax import model
from tripjax import retrieval


def _loss(user: jax.Array, pos: jax.Array, negatives: jax.Array, liked_weight: jax.Array,
          margin: float) -> jax.Array:
  """The training loss of one user: `losses.triplet_cosine_loss`, averaged over real triplets.

  Args:
    user: float32[D].
    pos: float32[P, D], the liked items' embeddings.
    negatives: float32[P, N, D], N negatives' embeddings per liked item.
    liked_weight: float32[P], 1 for real liked items, 0 for padding.
    margin: the triplet margin.

  Returns:
    float32 scalar, the weighted mean over the P * N triplets.
  """
  dim = user.shape[-1]
  u = jnp.broadcast_to(user, negatives.shape).reshape(-1, dim)
  p = jnp.broadcast_to(pos[:, None], negatives.shape).reshape(-1, dim)
  per_triplet = losses.triplet_cosine_loss(u, p, negatives.reshape(-1, dim),
                                           margin).reshape(negatives.shape[:2])
  weights = jnp.broadcast_to(liked_weight[:, None], per_triplet.shape)
  return jnp.sum(per_triplet * weights) / jnp.maximum(weights.sum(), 1.0)


@functools.partial(jax.jit, static_argnames=("steps", "num_negatives", "margin",
                                             "learning_rate"))
def _fold_in(item_table: jax.Array, liked: jax.Array, liked_weight: jax.Array,
             candidates: jax.Array, num_candidates: jax.Array, key: jax.Array, *, steps: int,
             num_negatives: int, margin: float, learning_rate: float) -> jax.Array:
  """Minimises `_loss` over one user vector with the item table frozen.

  Args:
    item_table: float32[I, D].
    liked: int32[P] liked items, padded (padding has weight 0).
    liked_weight: float32[P], 1 for real entries, 0 for padding.
    candidates: int32[I], the non-liked items first (`num_candidates` of them), then padding.
    num_candidates: int32[], how many negatives there are to draw from.
    key: PRNG key.

  Returns:
    float32[D], the user vector.
  """
  pos = item_table[liked]
  unit = losses.normalize(pos)
  user = jnp.sum(unit * liked_weight[:, None], 0) / jnp.maximum(liked_weight.sum(), 1.0)
  optimizer = optax.adam(learning_rate)

  def step(carry, step_key):
    u, opt_state = carry
    draw = jax.random.randint(step_key, (liked.shape[0], num_negatives), 0, num_candidates)
    grad = jax.grad(_loss)(u, pos, item_table[candidates[draw]], liked_weight, margin)
    updates, opt_state = optimizer.update(grad, opt_state, u)
    return (optax.apply_updates(u, updates), opt_state), None

  (user, _), _ = jax.lax.scan(step, (user, optimizer.init(user)), jax.random.split(key, steps))
  return user


def fold_in(params: model.Params, item_indices: Sequence[int], key: jax.Array,
            steps: int = 200, margin: float = 0.5, learning_rate: float = 0.05,
            num_negatives: int = 16) -> jax.Array:
  """An embedding for a new user from the items they liked, without retraining.

  Starts from the mean of the liked items' unit embeddings, then takes `steps` Adam steps on the
  training loss (`losses.triplet_cosine_loss`) over the user vector alone, item embeddings frozen:
  at each step every liked item is paired with `num_negatives` negatives drawn uniformly among the
  items not liked. One jitted `lax.scan`; the liked list is padded to a power of two, so users with
  similar numbers of liked items share a compilation. Deterministic given `key`.

  Args:
    params: `{"item": float32[I, D], ...}`.
    item_indices: int[P], the liked items (duplicates are ignored), 1 <= P < I.
    key: a `jax.random.key`.
    steps: optimisation steps (0 returns the mean of the liked items).
    margin: the triplet margin, as in training.
    learning_rate: Adam's learning rate.
    num_negatives: negatives per liked item per step.

  Returns:
    float32[D], usable with `top_k_for_vectors` (or `top_k`).
  """
  item_table = jnp.asarray(params["item"], jnp.float32)
  num_items = item_table.shape[0]
  mask = retrieval.item_mask(item_indices, num_items)
  liked = np.flatnonzero(mask).astype(np.int32)
  if liked.size == 0:
    raise errors.InvalidInput("fold_in needs at least one liked item, got none.")
  if liked.size == num_items:
    raise errors.InvalidInput(f"fold_in needs at least one item not liked; all {num_items} are "
                              "liked.")
  if steps < 0 or num_negatives <= 0 or margin < 0 or learning_rate <= 0:
    raise errors.InvalidInput("fold_in needs steps >= 0, num_negatives > 0, margin >= 0 and "
                              f"learning_rate > 0; got steps={steps}, "
                              f"num_negatives={num_negatives}, margin={margin}, "
                              f"learning_rate={learning_rate}.")
  padded = 1 << int(np.ceil(np.log2(liked.size)))
  weight = np.zeros(padded, np.float32)
  weight[:liked.size] = 1.0
  liked = np.pad(liked, (0, padded - liked.size))
  candidates = np.concatenate([np.flatnonzero(~mask), np.flatnonzero(mask)]).astype(np.int32)
  return _fold_in(item_table, liked, weight, candidates, np.int32((~mask).sum()), key,
                  steps=int(steps), num_negatives=int(num_negatives), margin=float(margin),
                  learning_rate=float(learning_rate))
