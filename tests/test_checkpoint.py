"""Tests of tripjax.checkpoint: round trips for every optimizer, atomicity, interrupted writes."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tripjax import checkpoint
from tripjax import model
from tripjax import sparse_optim


@pytest.mark.parametrize("optimizer", [optax.adam(1e-3), optax.sgd(0.1),
                                       sparse_optim.sparse_adagrad(0.1)],
                         ids=["adam", "sgd", "sparse_adagrad"])
def test_round_trip(tmp_path, optimizer):
  params = model.init_params(jax.random.key(0), 5, 7, 4)
  opt_state = optimizer.init(params)
  opt_state = jax.tree.map(lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x,
                           opt_state)
  ckpts = checkpoint.Checkpoints(tmp_path)
  ckpts.save(3, params, opt_state, jnp.int32(42), {"epoch": 3, "seed": 1})
  ckpts.close()

  ckpts = checkpoint.Checkpoints(tmp_path)
  assert ckpts.latest_epoch() == 3
  like = jax.tree.map(jnp.zeros_like, params)
  got_params, got_opt, step, meta = ckpts.restore(3, like, optimizer.init(like))
  ckpts.close()
  assert int(step) == 42 and meta == {"epoch": 3, "seed": 1}
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(got_params)):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(got_opt) == jax.tree.structure(opt_state)
  for a, b in zip(jax.tree.leaves(opt_state), jax.tree.leaves(got_opt)):
    np.testing.assert_array_equal(a, b)


def test_interrupted_write_is_ignored(tmp_path):
  """A temporary folder left by a write killed midway must not break restore."""
  params = model.init_params(jax.random.key(0), 3, 4, 2)
  ckpts = checkpoint.Checkpoints(tmp_path)
  ckpts.save(1, params, (), jnp.int32(1), {"epoch": 1})
  ckpts.close()
  # What Orbax leaves when killed before the rename that commits checkpoint 2.
  partial = tmp_path / "2.orbax-checkpoint-tmp-1700000000"
  (partial / "params").mkdir(parents=True)
  (partial / "params" / "garbage").write_bytes(b"\x00" * 10)

  ckpts = checkpoint.Checkpoints(tmp_path)
  assert ckpts.latest_epoch() == 1
  got, meta = ckpts.restore_params(1, params)
  np.testing.assert_array_equal(got["user"], params["user"])
  assert meta == {"epoch": 1}
  # The next save of that number succeeds.
  ckpts.save(2, params, (), jnp.int32(2), {"epoch": 2})
  ckpts.close()
  assert checkpoint.Checkpoints(tmp_path).latest_epoch() == 2


def test_keeps_only_the_latest(tmp_path):
  params = model.init_params(jax.random.key(0), 3, 4, 2)
  ckpts = checkpoint.Checkpoints(tmp_path, max_to_keep=2)
  for epoch in (1, 2, 3):
    ckpts.save(epoch, params, (), jnp.int32(epoch), {"epoch": epoch})
  ckpts.close()
  assert sorted(p for p in os.listdir(tmp_path) if p.isdigit()) == ["2", "3"]
