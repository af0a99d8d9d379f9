"""Two processes on 127.0.0.1 (jax.distributed, 2 CPU devices each) train like one."""

import json
import socket
import subprocess
import sys
import time

import pytest

import device_runs
from tripjax import distributed


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _job(workdir, *flags):
  """The training script on 2 processes x 2 CPU devices (a data:4 mesh)."""
  port = _free_port()
  return [device_runs.train(workdir, "--mesh=data:4", f"--coordinator_address=127.0.0.1:{port}",
                            "--num_processes=2", f"--process_id={pid}", *flags, devices=2)
          for pid in (0, 1)]


# Scores with a popularity offset: every input of the evaluation is placed on the mesh.
_PENALTY = "--popularity_penalty=0.05"


def test_two_processes_train_like_one_and_only_process_0_writes(tmp_path):
  # A job of 2 processes x 2 CPU devices stopped after epoch 1 and resumed to epoch 2, against
  # one process on one device trained straight through: the same metrics, each process
  # drawing half of every batch and evaluating a share of every block of users, one set of
  # files.
  single = device_runs.train(tmp_path / "single", _PENALTY)
  stopped = device_runs.finish(_job(tmp_path / "job", _PENALTY, "--stop_after_epoch=1"))
  assert "stopped after epoch 1 of 2" in stopped[0][0] and "stopped" not in stopped[1][0]
  assert not (tmp_path / "job" / "results.json").exists()
  outputs = device_runs.finish(_job(tmp_path / "job", _PENALTY))
  one_process = device_runs.finish([single])
  assert "results in" in outputs[0][0] and "AUC" not in outputs[1][0]  # 1 prints no results
  assert "Resumed from the checkpoint of epoch 1" in outputs[0][1]
  assert "Resumed from the checkpoint of epoch 1" in outputs[1][1]
  # Each process draws only its devices' half of every batch (smoke.cfg: batch 128).
  for pid, positions in ((0, "0-63"), (1, "64-127")):
    assert (f"Process {pid} of 2 draws batch positions {positions} of 128 (64 triplets of "
            "every batch") in outputs[pid][1]
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
  outputs = device_runs.finish(_job(tmp_path / "knn", "--model=itemknn"))
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
  script = ("import time; from tripjax import distributed\n"
            "start = time.monotonic()\n"
            "try:\n"
            f"  distributed.initialize('127.0.0.1:{_free_port()}', 2, 1, timeout_s=2)\n"
            "finally:\n"
            "  print(time.monotonic() - start)\n")
  done = subprocess.run([sys.executable, "-c", script], env=device_runs.cpu_env(1),
                        capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode != 0
  assert "no coordinator answered within 2 s" in done.stderr
  assert 2 <= float(done.stdout) < 6  # it waited its 2 s, and not much longer
  assert "Traceback" not in done.stderr or "ResourceExhausted" in done.stderr


def test_process_0_whose_peers_never_join_ends_after_a_bounded_wait(tmp_path):
  # JAX itself ends process 0 (its own fatal message, SIGABRT) once --join_timeout passes
  # without the others; the run says so first, and has written nothing.
  address = f"127.0.0.1:{_free_port()}"
  started = time.monotonic()
  process = device_runs.train(tmp_path / "alone", f"--coordinator_address={address}",
                              "--num_processes=2", "--process_id=0", "--join_timeout=1")
  _, err = process.communicate(timeout=120)
  assert process.returncode != 0 and time.monotonic() - started < 60
  assert f"Process 0 of 2 waits up to 1 s for the others at {address}" in err
  assert "DEADLINE_EXCEEDED" in err
  assert not (tmp_path / "alone").exists()
