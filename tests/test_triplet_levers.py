"""Levers of the triplet loss that ml100k.cfg does not use: WARP-style negatives (`--warp`) and
the adaptive margin (`--adaptive_margin`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tripjax import errors
from tripjax import losses
from tripjax import sampling
from tripjax import sparse_optim
from tripjax import train_step
from tripjax.config import TrainConfig

NUM_USERS, NUM_ITEMS, DIM = 11, 23, 6


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference(u, p, candidate_vecs, candidates, margin, num_items):
  """WARP's choice in float64: (negatives, rank weights)."""
  u, p, c = (np.asarray(x, np.float64) for x in (u, p, candidate_vecs))
  cos_p = np.sum(_unit(u) * _unit(p), -1)
  cos_n = np.einsum("bd,bnd->bn", _unit(u), _unit(c))
  neg, weight = [], []
  for b in range(u.shape[0]):
    hits = np.flatnonzero(cos_n[b] - cos_p[b] + margin > 0)
    t = hits[0] + 1 if hits.size else 1
    neg.append(candidates[b, t - 1])
    weight.append(np.log(max(1, (num_items - 1) // t)) if hits.size else 0.0)
  return np.array(neg), np.array(weight)


def test_the_first_violating_candidate_and_its_rank_weight():
  k = jax.random.split(jax.random.key(0), 3)
  b, n = 64, 8
  u, p = jax.random.normal(k[0], (b, DIM)), jax.random.normal(k[1], (b, DIM))
  vecs = jax.random.normal(k[2], (b, n, DIM))
  candidates = jnp.arange(b * n, dtype=jnp.int32).reshape(b, n) % 997
  neg, weight = sampling.warp_negatives(u, p, vecs, candidates, 0.1, 1000)
  want_neg, want_weight = _reference(u, p, vecs, np.asarray(candidates), 0.1, 1000)
  np.testing.assert_array_equal(neg, want_neg)
  np.testing.assert_allclose(weight, want_weight, rtol=1e-6)
  # The batch spans the cases: a violation at the first draw, at a later one, and none.
  first = np.asarray(weight) == np.float32(np.log(999))
  assert first.any() and (~first & (np.asarray(weight) > 0)).any() and (weight == 0).any()


def test_a_positive_no_candidate_beats_weighs_zero():
  u = jnp.eye(DIM)[:2]
  p = u  # cos(u, p) = 1
  vecs = -jnp.broadcast_to(u[:, None], (2, 3, DIM))  # cos(u, n) = -1
  neg, weight = sampling.warp_negatives(u, p, vecs, jnp.ones((2, 3), jnp.int32), 0.5, 50)
  np.testing.assert_array_equal(weight, [0.0, 0.0])


def test_scale_weighs_each_hinge_and_keeps_the_denominator():
  k = jax.random.split(jax.random.key(1), 4)
  u, p, n = (jax.random.normal(key, (8, DIM)) for key in k[:3])
  weights = jnp.array([1, 1, 1, 1, 1, 1, 0, 0], jnp.float32)
  scale = jax.random.uniform(k[3], (8,), maxval=3.0)
  objective, per = train_step.batch_loss(u, p, n, weights, 0.5, 0.0, scale=scale)
  hinge = losses.triplet_cosine_loss(u, p, n, 0.5)
  np.testing.assert_allclose(per, hinge, rtol=1e-6)  # the per-triplet losses are unscaled
  np.testing.assert_allclose(objective, jnp.sum(weights * scale * hinge) / 6, rtol=1e-5)


def _chunk(seed, negatives=5, batch=32):
  rng = np.random.default_rng(seed)
  return sampling.Batches(
      users=jnp.asarray(rng.integers(0, NUM_USERS, (1, batch)), jnp.int32),
      pos=jnp.asarray(rng.integers(0, NUM_ITEMS, (1, batch)), jnp.int32),
      neg=jnp.asarray(rng.integers(0, NUM_ITEMS, (1, batch, negatives)), jnp.int32),
      weights=jnp.asarray(rng.uniform(0.5, 1.5, (1, batch)), jnp.float32))


def test_a_step_descends_the_rank_weighted_loss_of_the_warp_negatives():
  lr, margin = 0.3, 0.4
  optimizer = optax.sgd(lr)
  state = train_step.init_state(jax.random.key(2), optimizer, NUM_USERS, NUM_ITEMS, DIM)
  params = jax.tree.map(np.asarray, state.params)
  chunk = _chunk(0)
  users, pos, cands, weights = (np.asarray(x)[0] for x in chunk[:4])
  neg, scale = _reference(params["user"][users], params["item"][pos], params["item"][cands],
                          cands, margin, NUM_ITEMS)
  assert (scale > 0).any() and (scale == 0).any()

  def objective(p):
    hinge = losses.triplet_cosine_loss(p["user"][users], p["item"][pos], p["item"][neg], margin)
    return jnp.sum(weights * scale * hinge) / weights.sum()

  grads = jax.grad(objective)(state.params)
  want = jax.tree.map(lambda x, g: x - lr * g, params, grads)
  step = train_step.make_train_step(optimizer, margin, warp=True)
  after, _ = step(state, chunk)
  for side in ("user", "item"):
    np.testing.assert_allclose(after.params[side], want[side], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the fused CPU kernel")
def test_the_fused_step_weighs_the_warp_negatives_as_the_xla_step():
  def run(fused):
    optimizer = sparse_optim.sparse_sgd(0.5)
    state = train_step.init_state(jax.random.key(3), optimizer, NUM_USERS, NUM_ITEMS, DIM)
    step = train_step.make_train_step(optimizer, 0.4, fused_cpu=fused, warp=True)
    for seed in range(3):
      state, _ = step(state, _chunk(seed))
    return state.params

  fused, xla = run(True), run(False)
  for side in ("user", "item"):
    np.testing.assert_allclose(fused[side], xla[side], rtol=1e-5, atol=1e-6)


def test_warp_with_a_temperature_is_refused():
  with pytest.raises(errors.InvalidInput, match="--warp"):
    TrainConfig(warp=True, num_negatives=4, negative_temperature=0.3)
  with pytest.raises(errors.InvalidInput, match="--warp"):
    train_step.make_train_step(optax.sgd(0.1), negative_temperature=0.3, warp=True)
  with pytest.raises(errors.InvalidInput, match="--model=triplet"):
    TrainConfig(model="ease", warp=True)


# --------------------------------------------------------------------------- adaptive margin


@pytest.mark.parametrize("candidates", [None, 3])
def test_an_adaptive_margin_shrinks_with_the_likeness_of_positive_and_negative(candidates):
  k = jax.random.split(jax.random.key(4), 3)
  u, p = jax.random.normal(k[0], (8, DIM)), jax.random.normal(k[1], (8, DIM))
  n = jax.random.normal(k[2], (8, DIM) if candidates is None else (8, candidates, DIM))
  weights = jnp.ones(8)
  _, per = train_step.batch_loss(u, p, n, weights, 0.9, 0.0, 1e-3 if candidates else 0.0,
                                 adaptive_margin=True)
  pp = p if candidates is None else p[:, None]
  margins = 0.9 * (1.0 - np.sum(_unit(np.asarray(pp)) * _unit(np.asarray(n)), -1)) / 2
  uu = u if candidates is None else jnp.broadcast_to(u[:, None], n.shape)
  each = losses.triplet_cosine_loss(uu, jnp.broadcast_to(pp, n.shape), n, margins)
  want = each if candidates is None else each.max(-1)  # temperature 1e-3: the hardest
  np.testing.assert_allclose(per, want, rtol=1e-4, atol=1e-6)
  # No gradient flows through the margin: the gradient is the fixed-margin loss's.
  grad = jax.grad(lambda x: train_step.batch_loss(u, p, x, weights, 0.9, 0.0,
                                                  adaptive_margin=True)[0])
  fixed = jax.grad(lambda x: jnp.mean(losses.triplet_cosine_loss(u, p, x, jnp.asarray(
      0.9 * (1.0 - np.sum(_unit(np.asarray(p)) * _unit(np.asarray(n)), -1)) / 2))))
  if candidates is None:
    np.testing.assert_allclose(grad(n), fixed(n), rtol=1e-4, atol=1e-6)


def test_an_adaptive_margin_is_refused_by_the_fused_step():
  with pytest.raises(errors.InvalidInput, match="--adaptive_margin"):
    TrainConfig(optimizer="sparse_sgd", fused_cpu_step=True, adaptive_margin=True)
  with pytest.raises(errors.InvalidInput, match="--adaptive_margin"):
    train_step.make_train_step(sparse_optim.sparse_sgd(0.1), fused_cpu=True,
                               adaptive_margin=True)


@pytest.mark.parametrize("optimizer", [optax.sgd(0.3), sparse_optim.sparse_sgd(0.3)])
def test_a_step_with_an_adaptive_margin_descends_its_loss(optimizer):
  state = train_step.init_state(jax.random.key(5), optimizer, NUM_USERS, NUM_ITEMS, DIM)
  params = jax.tree.map(np.asarray, state.params)
  chunk = _chunk(1, negatives=1)
  users, pos, neg, weights = (np.asarray(x)[0] for x in chunk[:4])

  def objective(p):
    return train_step.batch_loss(p["user"][users], p["item"][pos], p["item"][neg[:, 0]],
                                 weights, 0.8, 0.0, adaptive_margin=True)[0]

  grads = jax.grad(objective)(state.params)
  want = jax.tree.map(lambda x, g: x - 0.3 * g, params, grads)
  after, _ = train_step.make_train_step(optimizer, 0.8, adaptive_margin=True)(state, chunk)
  for side in ("user", "item"):
    np.testing.assert_allclose(after.params[side], want[side], rtol=1e-5, atol=1e-6)
