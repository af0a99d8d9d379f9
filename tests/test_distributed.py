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
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def test_two_processes_train_an_epoch_like_one(tmp_path):
  port = _free_port()
  jobs = [subprocess.Popen([sys.executable, "tests/distributed_check.py", str(pid), str(port),
                            str(tmp_path / f"p{pid}.json")], env=_env(2),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for pid in (0, 1)]
  single = subprocess.run([sys.executable, "tests/distributed_check.py", "-1", "0",
                           str(tmp_path / "single.json")], env=_env(1), capture_output=True,
                          text=True, timeout=300, check=False)
  for job in jobs:
    _, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
  assert single.returncode == 0, single.stderr[-3000:]
  both = json.loads((tmp_path / "p0.json").read_text())
  one = json.loads((tmp_path / "single.json").read_text())
  assert not (tmp_path / "p1.json").exists()  # only process 0 writes
  assert (both["processes"], both["devices"]) == (2, 4)
  assert (one["processes"], one["devices"]) == (1, 1)
  np.testing.assert_allclose(both["item"], one["item"], atol=1e-5)
  np.testing.assert_allclose(both["user"], one["user"], atol=1e-5)
  assert both["auc"] == pytest.approx(one["auc"], abs=1e-4)


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
            f"distributed.initialize('127.0.0.1:{_free_port()}', 2, 1, timeout_s=5)\n")
  done = subprocess.run([sys.executable, "-c", script], env=_env(1), capture_output=True,
                        text=True, timeout=120, check=False)
  assert done.returncode != 0
  assert "no coordinator answered within 5 s" in done.stderr
  assert "Traceback" not in done.stderr or "ResourceExhausted" in done.stderr
