"""Two processes on 127.0.0.1 (jax.distributed, 2 CPU devices each) train like one."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tripjax import distributed


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
              f"--xla_force_host_platform_device_count={devices}")


def _train(workdir, *flags, env):
  return subprocess.Popen(
      [sys.executable, "-m", "experiments.train", "--flagfile=experiments/configs/smoke.cfg",
       "--epochs=2", "--eval_every=1", f"--workdir={workdir}", *flags],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _job(workdir, *flags):
  """The training script on 2 processes x 2 CPU devices (a data:4 mesh)."""
  port = _free_port()
  return [_train(workdir, "--mesh=data:4", f"--coordinator_address=127.0.0.1:{port}",
                 "--num_processes=2", f"--process_id={pid}", *flags, env=_env(2))
          for pid in (0, 1)]


# Scores with a popularity offset: every input of the evaluation is placed on the mesh.
_PENALTY = "--popularity_penalty=0.05"


def _finish(processes):
  outputs = [p.communicate(timeout=300) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  return outputs


def test_two_processes_train_like_one_and_only_process_0_writes(tmp_path):
  # A job of 2 processes x 2 CPU devices stopped after epoch 1 and resumed to epoch 2, against
  # one process on one device trained straight through: the same metrics, each process
  # drawing half of every batch and evaluating a share of every block of users, one set of
  # files.
  single = _train(tmp_path / "single", _PENALTY, env=_env(1))
  stopped = _finish(_job(tmp_path / "job", _PENALTY, "--stop_after_epoch=1"))
  assert "stopped after epoch 1 of 2" in stopped[0][0] and "stopped" not in stopped[1][0]
  assert not (tmp_path / "job" / "results.json").exists()
  outputs = _finish(_job(tmp_path / "job", _PENALTY))
  one_process = _finish([single])
  assert "results in" in outputs[0][0] and "AUC" not in outputs[1][0]  # 1 prints no results
  assert "Resumed from the checkpoint of epoch 1" in outputs[0][1]
  assert "Resumed from the checkpoint of epoch 1" in outputs[1][1]
  # Each process draws only its devices' half of every batch (smoke.cfg: batch 128).
  assert "Process 0 of 2 draws batch positions 0-63 of 128" in outputs[0][1]
  assert "Process 1 of 2 draws batch positions 64-127 of 128" in outputs[1][1]
  both = json.loads((tmp_path / "job" / "results.json").read_text())
  one = json.loads((tmp_path / "single" / "results.json").read_text())
  assert "results in" in one_process[0][0]
  assert both["config"]["mesh"] == "data:4" and one["config"]["mesh"] == ""
  for key in ("auc", "ndcg@20", "recall@20"):
    assert both["model"][key] == pytest.approx(one["model"][key], abs=1e-4), key
  history = [json.loads(line) for line in
             (tmp_path / "job" / "metrics.jsonl").read_text().splitlines()]
  assert [h["epoch"] for h in history] == [1, 2]
  assert history[1]["loss"] < history[0]["loss"] and history[1]["auc"] > 0.55  # it trained
  assert sorted(p.name for p in (tmp_path / "job").iterdir()) == sorted(
      p.name for p in (tmp_path / "single").iterdir())


def test_a_model_fitted_in_one_go_on_two_processes_is_evaluated_by_process_0(tmp_path):
  # Every process fits item-kNN; process 0 alone evaluates it, on its own devices (not on the
  # mesh spanning both processes, where it would wait for the other one).
  outputs = _finish(_job(tmp_path / "knn", "--model=itemknn"))
  assert "results in" in outputs[0][0]
  results = json.loads((tmp_path / "knn" / "results.json").read_text())
  assert results["config"]["model"] == "itemknn"
  assert results["model"]["auc"] > results["popularity"]["auc"] - 0.05


@pytest.mark.parametrize("address,processes,pid,needle", [
    ("127.0.0.1:1234", 2, 2, "--process_id=2 is out of range"),
    ("127.0.0.1:1234", 2, -1, "--process_id=-1"),
    ("localhost", 2, 0, "--coordinator_address=localhost"),
    ("127.0.0.1:99999", 2, 0, "host:port"),
    ("127.0.0.1:1234", 0, 0, "--num_processes=0"),
])
def test_bad_job_settings_are_one_line(address, processes, pid, needle):
  with pytest.raises(ValueError, match=needle):
    distributed.check(address, processes, pid)


def test_an_unreachable_coordinator_is_a_bounded_wait(tmp_path):
  script = ("import sys; from tripjax import distributed\n"
            f"distributed.initialize('127.0.0.1:{_free_port()}', 2, 1, timeout_s=2)\n")
  done = subprocess.run([sys.executable, "-c", script], env=_env(1), capture_output=True,
                        text=True, timeout=120, check=False)
  assert done.returncode != 0
  assert "no coordinator answered within 2 s" in done.stderr
  assert "Traceback" not in done.stderr or "ResourceExhausted" in done.stderr
