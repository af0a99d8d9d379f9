"""Training on every candidate negative, softmax-weighted (`--negative_temperature`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse as sp

from tripjax import losses
from tripjax import sampling
from tripjax import sparse_optim
from tripjax import train_step
from tripjax.config import TrainConfig


def _rows(seed=0, b=8, n=4, d=5):
  k = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(k[0], (b, d)), jax.random.normal(k[1], (b, d)),
          jax.random.normal(k[2], (b, n, d)))


def _reference(u, p, negs, margin, temperature):
  u, p, negs = (np.asarray(x, np.float64) for x in (u, p, negs))
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  cos_p = np.sum(unit(u) * unit(p), -1)[:, None]
  cos_n = np.einsum("bd,bnd->bn", unit(u), unit(negs))
  hinge = np.maximum(cos_n - cos_p + margin, 0.0)
  w = np.exp((hinge - hinge.max(-1, keepdims=True)) / temperature)
  return np.sum(w / w.sum(-1, keepdims=True) * hinge, -1)


@pytest.mark.parametrize("temperature", [0.01, 0.3, 100.0])
def test_batch_loss_weighs_the_candidates_by_softmax(temperature):
  u, p, negs = _rows()
  weights = jnp.ones(8)
  _, per = train_step.batch_loss(u, p, negs, weights, 0.5, 0.0, temperature)
  np.testing.assert_allclose(per, _reference(u, p, negs, 0.5, temperature), rtol=1e-5,
                             atol=1e-6)


def test_small_temperature_is_the_hardest_and_large_the_mean():
  u, p, negs = _rows(1)
  weights = jnp.ones(8)
  each = losses.triplet_cosine_loss(jnp.broadcast_to(u[:, None], negs.shape),
                                    jnp.broadcast_to(p[:, None], negs.shape), negs, 0.5)
  _, cold = train_step.batch_loss(u, p, negs, weights, 0.5, 0.0, 1e-4)
  _, hot = train_step.batch_loss(u, p, negs, weights, 0.5, 0.0, 1e4)
  np.testing.assert_allclose(cold, each.max(-1), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(hot, each.mean(-1), rtol=1e-3, atol=1e-6)
  # The weights carry no gradient: the gradient is the weighted sum of the candidates'.
  grad = jax.grad(lambda n: train_step.batch_loss(u, p, n, weights, 0.5, 0.0, 0.3)[0])(negs)
  mix = jax.nn.softmax(each / 0.3, axis=-1)
  want = jax.grad(lambda n: jnp.sum(jax.lax.stop_gradient(mix) * losses.triplet_cosine_loss(
      jnp.broadcast_to(u[:, None], negs.shape), jnp.broadcast_to(p[:, None], negs.shape), n,
      0.5)) / 8)(negs)
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("optimizer", [optax.adam(0.05), sparse_optim.row_optimizer(
    "sparse_adam", 0.05)])
def test_the_step_trains_on_every_candidate(optimizer):
  rng = np.random.default_rng(0)
  train = sp.csr_matrix(rng.random((30, 40)) < 0.2)
  sampler = sampling.EpochSampler(train, 32, 2, num_negatives=3, seed=0)
  batches = jax.tree.map(lambda x: x[0], sampler.epoch(0))
  state = train_step.init_state(jax.random.key(0), optimizer, 30, 40, 8)
  before = jax.tree.map(np.asarray, state.params)
  step = train_step.make_train_step(optimizer, 0.5, negative_temperature=100.0)
  after, metrics = step(state, batches)
  # Every candidate drawn (not only the hardest) moved.
  neg = np.unique(np.asarray(batches.neg)[np.asarray(batches.weights) > 0])
  moved = np.any(np.asarray(after.params["item"]) != before["item"], axis=1)
  assert moved[neg].all()
  assert np.isfinite(float(metrics["loss"]))


def test_the_fused_step_refuses_a_temperature():
  with pytest.raises(ValueError, match="negative_temperature"):
    TrainConfig(optimizer="sparse_sgd", fused_cpu_step=True, negative_temperature=0.5)
