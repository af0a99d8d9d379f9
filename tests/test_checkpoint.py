"""Tests of tripjax.checkpoint: round trips for every optimizer, writers killed mid-save."""

import asyncio
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from unittest import mock

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
  assert ckpts.metadata(3) == {"epoch": 3, "seed": 1}
  ckpts.close()
  assert int(step) == 42 and meta == {"epoch": 3, "seed": 1}
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(got_params)):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(got_opt) == jax.tree.structure(opt_state)
  for a, b in zip(jax.tree.leaves(opt_state), jax.tree.leaves(got_opt)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("optimizer", [optax.adam(1e-3), sparse_optim.sparse_adam(0.1)],
                         ids=["adam", "sparse_adam"])
def test_checkpoints_of_the_earlier_layout_still_restore(tmp_path, optimizer):
  # Before the optimizer state was saved as a tree, it was saved as its leaves in order.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  params = model.init_params(jax.random.key(0), 5, 7, 4)
  opt_state = jax.tree.map(lambda x: x + 2, optimizer.init(params))
  leaves = {f"{i:05d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(opt_state))}
  manager = ocp.CheckpointManager(tmp_path, options=ocp.CheckpointManagerOptions(create=True))
  manager.save(2, args=ocp.args.Composite(
      params=ocp.args.StandardSave(jax.tree.map(np.asarray, params)),
      opt=ocp.args.StandardSave({"step": np.int32(9), "leaves": leaves}),
      meta=ocp.args.JsonSave({"epoch": 2})))
  manager.wait_until_finished()
  manager.close()
  ckpts = checkpoint.Checkpoints(tmp_path)
  restored = ckpts.restore_newest(params, optimizer.init(params))
  ckpts.close()
  assert restored.epoch == 2 and int(restored.step) == 9
  # Its folder is not kept among those whose failed reads go unlogged.
  quieted = checkpoint._UNRETRIEVED.folders  # pylint: disable=protected-access
  assert not any(f.startswith(str(tmp_path)) for f in quieted)
  assert jax.tree.structure(restored.opt_state) == jax.tree.structure(opt_state)
  for a, b in zip(jax.tree.leaves(opt_state), jax.tree.leaves(restored.opt_state)):
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


# The state saved as checkpoint e (~13 MB of float32): the writer and the test build it alike.
_TREE_SOURCE = textwrap.dedent("""
    import numpy as np

    def tree(epoch):
      base = np.random.default_rng(0).standard_normal((50_000, 32), dtype=np.float32)
      params = {"user": base + np.float32(epoch), "item": base[:20_000] - np.float32(epoch)}
      opt_state = {"mu": params["user"] * np.float32(0.5), "nu": params["item"] * 2}
      return params, opt_state
""")

# Saves checkpoints epoch after epoch (resuming after the folder's latest), as fast as it can.
_WRITER = _TREE_SOURCE + textwrap.dedent("""
    import sys
    from tripjax import checkpoint

    ckpts = checkpoint.Checkpoints(sys.argv[1], max_to_keep=2)
    first = epoch = (ckpts.latest_epoch() or 0) + 1
    while True:
      params, opt_state = tree(epoch)
      ckpts.save(epoch, params, opt_state, np.int32(epoch), {"epoch": epoch})
      if epoch == first:
        ckpts.wait()
        print("ready", flush=True)  # from now on, a kill lands amid saves
      epoch += 1
""")


def test_killed_writer_leaves_a_restorable_latest_checkpoint(tmp_path):
  """SIGKILLs a process that saves back to back; the latest checkpoint restores exactly."""
  namespace = {}
  exec(_TREE_SOURCE, namespace)  # pylint: disable=exec-used
  tree = namespace["tree"]
  rng = np.random.default_rng(0)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  latest_seen, partial_writes = [], 0
  for _ in range(3):
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.05, 0.6))
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    writer.stdout.close()
    partial_writes += any("tmp" in name for name in os.listdir(tmp_path))

    ckpts = checkpoint.Checkpoints(tmp_path)
    try:
      latest = ckpts.latest_epoch()
      params, opt_state = tree(latest)
      got_params, got_opt, step, meta = ckpts.restore(latest, params, opt_state)
    finally:
      ckpts.close()
    assert int(step) == latest and meta == {"epoch": latest}
    for want, got in zip(jax.tree.leaves((params, opt_state)),
                         jax.tree.leaves((got_params, got_opt))):
      np.testing.assert_array_equal(got, want)
    latest_seen.append(latest)
  # Every writer committed its first save before the kill, so each round got further.
  assert all(b > a for a, b in zip(latest_seen, latest_seen[1:])), latest_seen
  assert partial_writes  # some kill did land inside a save (saves run back to back)


def test_keeps_only_the_latest(tmp_path):
  params = model.init_params(jax.random.key(0), 3, 4, 2)
  ckpts = checkpoint.Checkpoints(tmp_path, max_to_keep=2)
  for epoch in (1, 2, 3):
    ckpts.save(epoch, params, (), jnp.int32(epoch), {"epoch": epoch})
  ckpts.close()
  assert sorted(p for p in os.listdir(tmp_path) if p.isdigit()) == ["2", "3"]


def _unretrieved_failure(message: str, future: bool = False) -> None:
  """Makes asyncio log "Task (or Future) exception was never retrieved" for `message`."""
  loop = asyncio.new_event_loop()

  async def read():
    raise ValueError(message)

  if future:
    pending = loop.create_future()
    pending.set_exception(ValueError(message))
  else:
    pending = loop.create_task(read())
  loop.run_until_complete(asyncio.sleep(0))
  loop.close()
  del pending
  gc.collect()


def test_unretrieved_reads_of_a_damaged_checkpoint_are_not_logged(tmp_path, caplog):
  damaged = tmp_path / "checkpoints" / "3"
  checkpoint._quiet_unretrieved_reads_of(str(damaged))  # pylint: disable=protected-access
  with caplog.at_level(logging.ERROR, logger="asyncio"):
    _unretrieved_failure(f'Error reading "{damaged}/opt/": value of size 16')
    _unretrieved_failure(f'Error reading "{damaged}/opt/": value of size 16', future=True)
    _unretrieved_failure(f'Error reading "{damaged}0/opt/": value of size 16')  # epoch 30
    _unretrieved_failure("something else went wrong", future=True)
  logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
  assert len(logged) == 2, logged
  assert logged[0].startswith("Task exception was never retrieved")
  assert logged[1].startswith("Future exception was never retrieved")
  assert f"{damaged}0/opt/" in logged[0] and "something else" in logged[1]


def _two_sealed_checkpoints(folder):
  """Checkpoints 1 and 2 of different parameters; returns those of 1."""
  ckpts = checkpoint.Checkpoints(folder)
  for epoch in (1, 2):
    params = model.init_params(jax.random.key(epoch), 300, 400, 8)
    ckpts.save(epoch, params, (), jnp.int32(epoch), {"epoch": epoch})
    if epoch == 1:
      first = params
  ckpts.close()
  return first


def _largest_array_file(folder):
  return max((p for p in folder.rglob("*") if p.is_file() and p.parent.name == "d"),
             key=lambda p: p.stat().st_size)


def _flip_a_bit(path):
  """Flips one bit in the middle of the file, its size unchanged."""
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x10
  path.write_bytes(bytes(data))


def _newest_with_warnings(folder, like, quarantine):
  """restore_newest(like) and the warnings it logged."""
  warned = []
  with mock.patch.object(checkpoint.logging, "warning",
                         lambda fmt, *a: warned.append(fmt % a)):
    ckpts = checkpoint.Checkpoints(folder)
    try:
      return ckpts.restore_newest(like, quarantine=quarantine), warned
    finally:
      ckpts.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove", "truncate_unsealed"])
def test_a_checkpoint_whose_files_differ_from_its_seal_is_skipped(tmp_path, damage):
  first = _two_sealed_checkpoints(tmp_path / "ckpts")
  for epoch in (1, 2):
    seal = json.loads((tmp_path / "ckpts" / str(epoch) / checkpoint.CHECKSUMS).read_text())
    assert any(name.startswith("params") for name in seal)
  chunk = _largest_array_file(tmp_path / "ckpts" / "2" / "params")
  if damage == "flip":
    _flip_a_bit(chunk)
  elif damage.startswith("truncate"):
    chunk.write_bytes(chunk.read_bytes()[:16])
    if damage == "truncate_unsealed":  # found by Orbax's failed restore
      (tmp_path / "ckpts" / "2" / checkpoint.CHECKSUMS).unlink()
  else:
    chunk.unlink()
  restored, warned = _newest_with_warnings(tmp_path / "ckpts", first, tmp_path / "damaged")
  assert restored.epoch == 1
  np.testing.assert_array_equal(restored.params["item"], first["item"])
  expected = {"flip": "differs from its checksum", "truncate": "holds 16 bytes",
              "remove": "is missing", "truncate_unsealed": "OUT_OF_RANGE"}[damage]
  assert len(warned) == 1 and expected in warned[0] and "using checkpoint 1" in warned[0]
  assert sorted(p.name for p in (tmp_path / "ckpts").iterdir() if p.name.isdigit()) == ["1"]
  assert len(list((tmp_path / "damaged").iterdir())) == 1


def test_an_unsealed_checkpoint_still_restores(tmp_path):
  # Written before seals, or killed between Orbax's commit and the seal.
  _two_sealed_checkpoints(tmp_path)
  (tmp_path / "2" / checkpoint.CHECKSUMS).unlink()
  (tmp_path / "2" / ".CHECKSUMS.partial").write_text("{")  # a seal killed while written
  like = model.init_params(jax.random.key(2), 300, 400, 8)
  restored, warned = _newest_with_warnings(tmp_path, like, None)
  assert restored.epoch == 2 and warned == []
  np.testing.assert_array_equal(restored.params["user"], like["user"])
  checkpoint.seal(str(tmp_path / "2"))  # a draft left behind is not recorded
  assert ".CHECKSUMS.partial" not in (tmp_path / "2" / checkpoint.CHECKSUMS).read_text()
  assert checkpoint.seal_mismatch(str(tmp_path / "2")) is None


@pytest.mark.parametrize("record", ["[]", "null", '{"params/x": 1}', '{"params/x": [1, 2, 3]}',
                                    "{"])
def test_a_seal_of_the_wrong_shape_is_a_reason_not_an_error(tmp_path, record):
  _two_sealed_checkpoints(tmp_path)
  (tmp_path / "2" / checkpoint.CHECKSUMS).write_text(record)
  assert "CHECKSUMS" in checkpoint.seal_mismatch(str(tmp_path / "2"))
  assert checkpoint.seal_mismatch(str(tmp_path / "1")) is None


def test_a_save_orbax_skips_leaves_the_seal_as_it_was(tmp_path):
  # Rerunning a finished one-go fit saves its number again: Orbax keeps the checkpoint it has,
  # and sealing it anew would vouch for whatever its files hold now.
  params = model.init_params(jax.random.key(0), 300, 400, 8)
  ckpts = checkpoint.Checkpoints(tmp_path)
  ckpts.save_params(1, params, {"epoch": 1})
  ckpts.close()
  _flip_a_bit(_largest_array_file(tmp_path / "1" / "params"))
  ckpts = checkpoint.Checkpoints(tmp_path)
  ckpts.save_params(1, params, {"epoch": 1})
  ckpts.close()
  assert "differs from its checksum" in checkpoint.seal_mismatch(str(tmp_path / "1"))


def test_a_committed_save_is_sealed_after_the_next_epoch_without_waiting(tmp_path):
  params = model.init_params(jax.random.key(0), 300, 400, 8)
  ckpts = checkpoint.Checkpoints(tmp_path)
  ckpts.save(1, params, (), jnp.int32(1), {"epoch": 1})
  ckpts.seal_committed()  # in flight or just committed: sealed only once committed
  ckpts._manager.wait_until_finished()  # pylint: disable=protected-access
  ckpts.seal_committed()
  assert (tmp_path / "1" / checkpoint.CHECKSUMS).exists()
  assert checkpoint.seal_mismatch(str(tmp_path / "1")) is None
  ckpts.close()


def test_a_checkpoint_of_other_table_shapes_is_one_error_naming_them(tmp_path):
  _two_sealed_checkpoints(tmp_path / "ckpt")  # tables 300 x 8 and 400 x 8
  like = model.init_params(jax.random.key(0), 300, 399, 8)
  ckpts = checkpoint.Checkpoints(tmp_path / "ckpt", read_only=True)
  try:
    with pytest.raises(checkpoint.errors.WorkdirError,
                       match=r"params\['item'\] of shape \(400, 8\).*give \(399, 8\)"):
      ckpts.restore_newest(like)
  finally:
    ckpts.close()
  assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["1", "2"]  # nothing moved
