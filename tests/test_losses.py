"""Tests of tripjax.losses against numpy formulas, and of their gradients."""

import jax
from jax.test_util import check_grads
import jax.numpy as jnp
import numpy as np
import pytest

from tripjax import losses


def _x64():
  """float64 context: `jax.enable_x64(True)` (new JAX) or `jax.experimental.enable_x64()`."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top
  return enable_x64()


def _np_cosine(a, b):
  return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_cosine_matches_numpy():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 17, 8)).astype(np.float32)
  np.testing.assert_allclose(jax.jit(losses.cosine)(a, b), _np_cosine(a, b), atol=1e-6)


def test_cosine_is_scale_invariant_and_bounded():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(2, 9, 5)).astype(np.float32)
  np.testing.assert_allclose(losses.cosine(3.0 * a, 0.01 * b), losses.cosine(a, b), atol=1e-6)
  np.testing.assert_allclose(losses.cosine(a, a), 1.0, atol=1e-6)
  np.testing.assert_allclose(losses.cosine(a, -a), -1.0, atol=1e-6)


@pytest.mark.parametrize("margin", [0.0, 0.5, 2.0])
def test_triplet_loss_matches_numpy(margin):
  rng = np.random.default_rng(2)
  u, p, n = rng.normal(size=(3, 64, 16)).astype(np.float32)
  want = np.maximum(_np_cosine(u, n) - _np_cosine(u, p) + margin, 0.0)
  got = jax.jit(losses.triplet_cosine_loss, static_argnums=3)(u, p, n, margin)
  assert got.shape == (64,)
  np.testing.assert_allclose(got, want, atol=1e-5)
  if margin == 0.5:  # both branches of the hinge occur
    assert 0 < np.mean(want > 0) < 1


def test_triplet_loss_hand_values():
  u = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
  p = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  n = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
  # cos(u,n) - cos(u,p) + 0.5: 0 - 1 + 0.5 -> 0; 1 - 0 + 0.5 = 1.5.
  np.testing.assert_allclose(losses.triplet_cosine_loss(u, p, n, 0.5), [0.0, 1.5], atol=1e-6)


def test_gradients_match_finite_differences():
  rng = np.random.default_rng(3)
  with _x64():
    u, p, n = (jnp.asarray(x, jnp.float64) for x in rng.normal(size=(3, 6, 4)))
    assert u.dtype == jnp.float64
    # Keep away from the hinge's kink, where finite differences are not defined.
    margin = 0.5
    raw = losses.cosine(u, n) - losses.cosine(u, p) + margin
    assert float(jnp.min(jnp.abs(raw))) > 1e-3
    fn = lambda u, p, n: jnp.sum(losses.triplet_cosine_loss(u, p, n, margin))
    check_grads(fn, (u, p, n), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_gradient_finite_at_zero_vectors_and_without_active_triplets():
  zeros = jnp.zeros((3, 4), jnp.float32)
  ones = jnp.ones((3, 4), jnp.float32)
  grads = jax.grad(lambda u, p, n: jnp.sum(losses.triplet_cosine_loss(u, p, n, 0.5)),
                   argnums=(0, 1, 2))(zeros, ones, zeros)
  for g in grads:
    assert np.all(np.isfinite(g))
  # No active triplet (margin met): zero gradient, not NaN.
  grads = jax.grad(lambda u: jnp.sum(losses.triplet_cosine_loss(u, ones, -ones, 0.5)))(ones)
  np.testing.assert_array_equal(grads, 0.0)
  np.testing.assert_array_equal(losses.cosine(zeros, ones), 0.0)


def _autodiff_loss(u, p, n, margin):
  """The loss through `cosine`, differentiated by JAX: the reference for the hand-written VJP."""
  return jax.nn.relu(losses.cosine(u, n) - losses.cosine(u, p) + margin)


@pytest.mark.parametrize("margin", [0.0, 0.3, 0.5, 0.9])
def test_hand_written_gradient_equals_autodiff(margin):
  rng = np.random.default_rng(7)
  u, p, n = (jnp.asarray(x, jnp.float32) for x in rng.normal(size=(3, 64, 16)))
  u = u.at[0].set(0.0)  # a zero user row
  p = p.at[1].set(0.0)  # a zero positive
  n = n.at[2].set(0.0)  # a zero negative
  weights = jnp.asarray(rng.uniform(size=64), jnp.float32)  # a non-uniform cotangent
  objective = lambda fn: lambda u, p, n: jnp.sum(weights * fn(u, p, n, margin))
  got = jax.jit(jax.grad(objective(losses.triplet_cosine_loss), argnums=(0, 1, 2)))(u, p, n)
  want = jax.grad(objective(_autodiff_loss), argnums=(0, 1, 2))(u, p, n)
  np.testing.assert_allclose(losses.triplet_cosine_loss(u, p, n, margin),
                             _autodiff_loss(u, p, n, margin), atol=1e-6)
  for g, w in zip(got, want):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, atol=1e-6, rtol=1e-5)
  assert float(jnp.max(jnp.abs(got[0]))) > 0  # some triplets are active


def test_margin_may_be_traced():
  u, p, n = jnp.ones((2, 3)), jnp.eye(3)[:2], -jnp.ones((2, 3))
  loss = jax.jit(lambda m: jnp.sum(losses.triplet_cosine_loss(u, p, n, m)))
  np.testing.assert_allclose(loss(jnp.float32(3.0)),
                             jnp.sum(_autodiff_loss(u, p, n, 3.0)), rtol=1e-6)
