"""The lab's cosine-margin triplet loss, with a normalisation that is safe at zero vectors."""

import jax
import jax.numpy as jnp

# Norms below this are treated as this (keeps cos(0, x) = 0 and its gradient finite).
_EPS = 1e-8


def normalize(x: jax.Array, eps: float = _EPS) -> jax.Array:
  """Scales the rows of `x` to unit L2 norm; rows shorter than `eps` are divided by `eps`.

  Args:
    x: float32[..., D].
    eps: smallest norm divided by.

  Returns:
    float32[..., D], `x / max(||x||, eps)` along the last axis; finite gradient everywhere.
  """
  squared = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine similarity of matching rows.

  Args:
    a: float32[..., D].
    b: float32[..., D], broadcastable against `a`.

  Returns:
    float32[...], `<a, b> / (max(|a|, eps) max(|b|, eps))`; 0 where either row is zero.
  """
  return jnp.sum(normalize(a) * normalize(b), axis=-1)


def triplet_cosine_loss(user_vecs: jax.Array, pos_vecs: jax.Array, neg_vecs: jax.Array,
                        margin: float = 0.5) -> jax.Array:
  """Per-triplet hinge loss `max(cos(u, n) - cos(u, p) + margin, 0)`.

  Args:
    user_vecs: float32[B, D], the users' embeddings.
    pos_vecs: float32[B, D], embeddings of an item each user liked.
    neg_vecs: float32[B, D], embeddings of an item each user did not.
    margin: how much closer (in cosine) the positive must be than the negative.

  Returns:
    float32[B], the loss of each triplet (0 where the margin is met).
  """
  return jax.nn.relu(cosine(user_vecs, neg_vecs) - cosine(user_vecs, pos_vecs) + margin)
