"""Sharded training, evaluation and checkpoints on 4 simulated CPU devices equal one device."""

import json
import shutil
import subprocess
import sys

import pytest

import device_runs
from tripjax import sharding
from tripjax.config import TrainConfig


@pytest.fixture(scope="module")
def sharded():
  done = subprocess.run([sys.executable, "tests/sharded_check.py"], capture_output=True,
                        text=True, env=device_runs.cpu_env(4), timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout)


@pytest.mark.parametrize("optimizer,mesh", [("adam", "data:4"),
                                            ("sparse_adam", "data:2,model:2")])
def test_sharded_training_equals_one_device(sharded, optimizer, mesh):
  assert sharded[f"{optimizer} {mesh}"] < 1e-5


def test_tables_stay_split_by_rows_over_model(sharded):
  assert sharded["sparse_adam data:2,model:2 item spec"] == ["model", None]
  assert sharded["adam data:4 item spec"] == []  # replicated: model is 1


def test_batches_are_split_over_data(sharded):
  # Batch 64: a quarter on each device of data:4, a half on each of data:2,model:2.
  assert sharded["data:4 batch spec"] == [None, None, "data"]
  assert sharded["data:4 batch shards"] == [16]
  assert sharded["data:2,model:2 batch spec"] == [None, None, "data"]
  assert sharded["data:2,model:2 batch shards"] == [32]


def test_sharded_evaluation_equals_one_device(sharded):
  assert sharded["eval"] < 1e-6
  assert sharded["eval users"][0] == sharded["eval users"][1] > 0
  assert sharded["top items equal"]


def test_sharded_evaluation_of_an_uneven_last_block_equals_one_device(sharded):
  assert sharded["uneven eval"] < 1e-6
  assert sharded["uneven eval users"][0] == sharded["uneven eval users"][1] > 0
  assert sharded["uneven top items equal"]


def test_a_checkpoint_of_4_devices_restores_on_1_and_2(sharded):
  assert sharded["restore 1"] and sharded["restore 2"]
  assert sharded["restore 2 devices"] == 2
  assert "--mesh=data:3" in sharded["bad mesh"] and "4" in sharded["bad mesh"]


def test_a_run_stopped_on_4_devices_goes_on_on_2_and_on_1(tmp_path):
  # The mesh is where a run computes, not what: the same run resumes under another one (its
  # flags then record the new mesh), tables and optimizer state restored from 4 devices.
  adam = "--optimizer=sparse_adam"  # row-sparse optimizer state, split over model too
  straight = device_runs.train(tmp_path / "straight", adam)
  device_runs.finish([device_runs.train(tmp_path / "on2", adam, "--mesh=data:2,model:2",
                                        "--stop_after_epoch=1", devices=4)])
  shutil.copytree(tmp_path / "on2", tmp_path / "on1")
  resumed = [err for _, err in device_runs.finish([
      device_runs.train(tmp_path / "on2", adam, "--mesh=data:2", devices=2),
      device_runs.train(tmp_path / "on1", adam), straight])]
  one = json.loads((tmp_path / "straight" / "results.json").read_text())["model"]
  for name, err, mesh in (("on2", resumed[0], "data:2"), ("on1", resumed[1], "")):
    assert "Resumed from the checkpoint of epoch 1" in err, name
    results = json.loads((tmp_path / name / "results.json").read_text())
    assert results["config"]["mesh"] == mesh
    assert f"--mesh={mesh}\n" in (tmp_path / name / "flags.txt").read_text()
    for key in ("auc", "ndcg@20", "recall@20"):
      assert results["model"][key] == pytest.approx(one[key], abs=1e-4), (name, key)


@pytest.mark.parametrize("spec,needle", [("data:0", "--mesh=data:0"), ("pipe:2", "pipe"),
                                         ("data:2,data:2", "data:2")])
def test_bad_mesh_specs_are_refused(spec, needle):
  with pytest.raises(ValueError, match=needle):
    sharding.parse_mesh(spec)


def test_the_fused_step_refuses_a_mesh_of_several_devices():
  with pytest.raises(ValueError, match="one device"):
    TrainConfig(optimizer="sparse_sgd", fused_cpu_step=True, mesh="data:2")
  TrainConfig(optimizer="sparse_sgd", fused_cpu_step=True, mesh="data:1")
