"""`experiments.train` in subprocesses on simulated CPU devices (the sharding and
jax.distributed tests): smoke.cfg for 2 epochs, evaluated after each."""

import os
import subprocess
import sys


def cpu_env(devices: int) -> dict:
  """The environment of a process with `devices` simulated CPU devices."""
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=(f"{os.environ.get('XLA_FLAGS', '')} "
                         f"--xla_force_host_platform_device_count={devices}"))


def train(workdir, *flags, devices: int = 1) -> subprocess.Popen:
  """Starts `python -m experiments.train` of smoke.cfg (2 epochs) into `workdir`."""
  return subprocess.Popen(
      [sys.executable, "-m", "experiments.train", "--flagfile=experiments/configs/smoke.cfg",
       "--epochs=2", "--eval_every=1", f"--workdir={workdir}", *flags],
      env=cpu_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes) -> list[tuple[str, str]]:
  """Each process's (stdout, stderr), once it has ended; fails the test unless all exit 0."""
  outputs = [p.communicate(timeout=300) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  return outputs
