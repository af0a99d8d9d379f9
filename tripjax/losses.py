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


@jax.custom_vjp
def triplet_cosine_loss(user_vecs: jax.Array, pos_vecs: jax.Array, neg_vecs: jax.Array,
                        margin: float | jax.Array = 0.5) -> jax.Array:
  """Per-triplet hinge loss `max(cos(u, n) - cos(u, p) + margin, 0)`.

  The gradient is written by hand (it equals autodiff of `cosine`, tested): autodiff of
  normalise-then-dot makes several passes over the [B, D] arrays and dominated the CPU step.

  Args:
    user_vecs: float32[B, D], the users' embeddings.
    pos_vecs: float32[B, D], embeddings of an item each user liked.
    neg_vecs: float32[B, D], embeddings of an item each user did not.
    margin: how much closer (in cosine) the positive must be than the negative (no gradient).

  Returns:
    float32[B], the loss of each triplet (0 where the margin is met).
  """
  return _triplet_forward(user_vecs, pos_vecs, neg_vecs, margin)[0]


def _triplet_forward(u, p, n, margin):
  eps2 = _EPS * _EPS
  uu, pp, nn = (jnp.sum(x * x, axis=-1) for x in (u, p, n))
  iu, ip, in_ = (jax.lax.rsqrt(jnp.maximum(x, eps2)) for x in (uu, pp, nn))
  cos_p = jnp.sum(u * p, axis=-1) * iu * ip
  cos_n = jnp.sum(u * n, axis=-1) * iu * in_
  per = jax.nn.relu(cos_n - cos_p + margin)
  # A norm clamped at eps contributes no gradient through the norm (as with jnp.maximum).
  residuals = (u, p, n, uu > eps2, pp > eps2, nn > eps2, iu, ip, in_, cos_p, cos_n, per,
               jnp.zeros_like(margin))
  return per, residuals


def _triplet_backward(residuals, cotangent):
  u, p, n, mu, mp, mn, iu, ip, in_, cos_p, cos_n, per, zero_margin = residuals
  a = jnp.where(per > 0, cotangent, 0.0)
  col = lambda x: x[..., None]
  g_user = (col(a * iu) * (n * col(in_) - p * col(ip))
            - col(a * (cos_n - cos_p) * iu * iu * mu) * u)
  g_pos = col(a * cos_p * ip * ip * mp) * p - col(a * iu * ip) * u
  g_neg = col(a * iu * in_) * u - col(a * cos_n * in_ * in_ * mn) * n
  return g_user, g_pos, g_neg, zero_margin


triplet_cosine_loss.defvjp(_triplet_forward, _triplet_backward)
