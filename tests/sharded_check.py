"""Run by tests/test_sharding.py in a process with 4 simulated CPU devices; prints JSON."""

import dataclasses
import json
import sys
import tempfile

import jax
import numpy as np
import scipy.sparse as sp

from tripjax import checkpoint
from tripjax import loop
from tripjax import metrics
from tripjax import model
from tripjax import sharding
from tripjax.config import TrainConfig


def main():
  assert jax.device_count() == 4, jax.devices()
  rng = np.random.default_rng(0)
  train = sp.csr_matrix(rng.random((64, 80)) < 0.15)
  test = sp.csr_matrix((rng.random((64, 80)) < 0.05) & ~train.toarray())
  out = {}
  for optimizer, mesh in (("adam", "data:4"), ("sparse_adam", "data:2,model:2")):
    config = TrainConfig(dataset="synthetic-tiny", dim=8, epochs=1, batch_size=64,
                         optimizer=optimizer, learning_rate=0.05, num_negatives=2,
                         steps_per_dispatch=4, seed=3)
    one = loop.fit(config, train).state.params
    fitted = loop.fit(dataclasses.replace(config, mesh=mesh), train).state.params
    out[f"{optimizer} {mesh}"] = max(
        float(np.max(np.abs(np.asarray(fitted[k]) - np.asarray(one[k])))) for k in one)
    out[f"{optimizer} {mesh} item spec"] = list(fitted["item"].sharding.spec)
    # The batches the loop trains on: B split over `data`, each device holding its part.
    sampler = loop.prepare_training(config, train)[0]
    users = sharding.place_epoch(sampler, 0, sharding.make_mesh(mesh)).users
    out[f"{mesh} batch spec"] = list(users.sharding.spec)
    out[f"{mesh} batch shards"] = sorted({s.data.shape[-1] for s in users.addressable_shards})
  score_fn = model.score_fn(one)
  plain = metrics.evaluate(score_fn, train, test, block_size=16)
  split = metrics.evaluate(score_fn, train, test, block_size=16,
                           mesh=sharding.make_mesh("data:4"))
  out["eval"] = max(float(np.nanmax(np.abs(plain.per_user[k] - split.per_user[k])))
                    for k in plain.per_user)
  out["eval users"] = [plain.users_evaluated, split.users_evaluated]
  out["top items equal"] = bool(np.array_equal(plain.top_items, split.top_items))
  # 63 users in blocks of 15 (rounded up to 16 on data:4): a padded, uneven last block.
  plain = metrics.evaluate(score_fn, train[:63], test[:63], block_size=15)
  split = metrics.evaluate(score_fn, train[:63], test[:63], block_size=15,
                           mesh=sharding.make_mesh("data:4"))
  out["uneven eval"] = max(float(np.nanmax(np.abs(plain.per_user[k] - split.per_user[k])))
                           for k in plain.per_user)
  out["uneven eval users"] = [plain.users_evaluated, split.users_evaluated]
  out["uneven top items equal"] = bool(np.array_equal(plain.top_items, split.top_items))
  # A checkpoint of tables placed on 4 devices restores on 1 and on a 2-device mesh.
  placed = sharding.place(one, sharding.make_mesh("data:2,model:2"))
  with tempfile.TemporaryDirectory() as folder:
    ckpts = checkpoint.Checkpoints(folder)
    ckpts.save_params(1, placed, {"epoch": 1})
    ckpts.wait()
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), one)
    restored, _ = ckpts.restore_params(1, like)
    ckpts.close()
  two = sharding.place(restored, sharding.make_mesh("data:1,model:2", jax.devices()[:2]))
  out["restore 1"] = bool(all(np.array_equal(restored[k], one[k]) for k in one))
  out["restore 2"] = bool(all(np.array_equal(np.asarray(two[k]), one[k]) for k in one))
  out["restore 2 devices"] = len(two["item"].sharding.device_set)
  try:
    sharding.make_mesh("data:3")
  except ValueError as e:
    out["bad mesh"] = str(e)
  json.dump(out, sys.stdout)


if __name__ == "__main__":
  main()
