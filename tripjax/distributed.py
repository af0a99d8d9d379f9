"""Several processes (hosts) as one JAX runtime: `jax.distributed.initialize`, checked.

Each process runs the same command with its `--process_id`; after `initialize` every process
sees all devices (`jax.devices()`), so a `--mesh` spans the hosts, and `tripjax.sharding`
builds the global arrays from each process's copy. On CPU the processes' collectives go
through gloo. Only process 0 writes a run's files (`is_writer`).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, Sequence, TypeVar

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from tripjax import errors

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 60


def check(coordinator_address: str, num_processes: int, process_id: int) -> None:
  """Raises errors.InvalidInput (naming the flag) for settings that cannot form a job."""
  host, sep, port = str(coordinator_address).rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise errors.InvalidInput(f"--coordinator_address={coordinator_address}: expected "
                              "host:port (for example 10.0.0.1:1234).")
  if num_processes < 1:
    raise errors.InvalidInput(f"--num_processes={num_processes}: must be >= 1.")
  if not 0 <= process_id < num_processes:
    raise errors.InvalidInput(f"--process_id={process_id} is out of range for "
                              f"--num_processes={num_processes} (0 to {num_processes - 1}).")


def initialize(coordinator_address: str, num_processes: int, process_id: int,
               timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
  """Joins the job: `jax.distributed.initialize` with a bounded wait for the coordinator.

  Must run before anything touches a JAX device. A process other than 0 first waits at most
  `timeout_s` for the coordinator's port (`wait_for_coordinator`); process 0 waits at most
  `timeout_s` for its peers (JAX then ends the process with its own message).

  Raises:
    errors.InvalidInput: bad settings (`check`).
    errors.ResourceExhausted: the coordinator did not answer within `timeout_s` (one line
      naming the address), instead of waiting forever.
  """
  check(coordinator_address, num_processes, process_id)
  if process_id > 0:
    wait_for_coordinator(coordinator_address, timeout_s)
  elif num_processes > 1:
    logging.info("Process 0 of %d waits up to %g s for the others at %s; if they do not all "
                 "join, JAX ends this process with its own message.", num_processes,
                 timeout_s, coordinator_address)
  def failure(reason):
    return (f"--coordinator_address={coordinator_address}: process {process_id} of "
            f"{num_processes} could not join the job within {timeout_s} s ({reason}); start "
            "every process, with the same address and --num_processes, and check the host is "
            "reachable.")

  _join(timeout_s, failure, coordinator_address=coordinator_address,
        num_processes=num_processes, process_id=process_id)


def _join(timeout_s, failure: Callable[[str], str], **job) -> None:
  """`jax.distributed.initialize(**job)` within `timeout_s`, gloo for the CPU collectives.

  Raises:
    errors.ResourceExhausted: `failure(reason)`, the first line of JAX's error, instead of
      its bare RuntimeError / XlaRuntimeError (DEADLINE_EXCEEDED, UNAVAILABLE).
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(initialization_timeout=int(timeout_s), **job)
  except Exception as e:  # pylint: disable=broad-except
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.ResourceExhausted(failure(reason[:200])) from e


def launched_job() -> str | None:
  """The launcher whose environment describes a job of several processes that
  `jax.distributed.initialize()` reads by itself: "slurm" (`srun`, SLURM_NTASKS > 1),
  "ompi" (Open MPI's `mpirun`, OMPI_COMM_WORLD_SIZE > 1), or None."""
  for name, variable in (("slurm", "SLURM_NTASKS"), ("ompi", "OMPI_COMM_WORLD_SIZE")):
    size = os.environ.get(variable, "")
    if size.isdigit() and int(size) > 1:
      return name
  return None


def initialize_launched(timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
  """Joins the job a launcher started (`launched_job`): JAX reads the coordinator, the number
  of processes and this one's id from its environment.

  Raises:
    errors.ResourceExhausted: the job did not form within `timeout_s` (one line).
  """
  launcher = launched_job()
  _join(timeout_s, lambda reason: (
      f"the {launcher} job could not form within {timeout_s} s ({reason}); pass "
      "--coordinator_address, --num_processes and --process_id explicitly."))


def wait_for_coordinator(coordinator_address: str, timeout_s: float) -> None:
  """Returns once the coordinator's port accepts a connection; one line after `timeout_s`.

  JAX's own client aborts the process (a fatal log and a stack trace) when the coordinator is
  unreachable, so the other processes look for it first.
  """
  host, _, port = coordinator_address.rpartition(":")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=1.0):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise errors.ResourceExhausted(
            f"--coordinator_address={coordinator_address}: no coordinator answered within "
            f"{timeout_s:g} s ({e.strerror or e}); start process 0 first, with the same address, "
            "and check the host is reachable.") from e
      time.sleep(0.2)


def is_writer() -> bool:
  """Whether this process writes the run's files (process 0, or the only process)."""
  return jax.process_index() == 0


def gather_ints(values: Sequence[int]) -> np.ndarray:
  """Every process's `values`: int64[P, K], row p from process p (a collective: every process
  calls it at the same point). One process: `[values]`."""
  row = np.asarray([values], np.int64)
  if jax.process_count() == 1:
    return row
  return np.asarray(multihost_utils.process_allgather(row[0]), np.int64).reshape(
      jax.process_count(), -1)


def on_writer(fn: Callable[[], T], what: str) -> T | None:
  """Runs `fn` on process 0 only; the others learn whether it failed (a collective).

  Returns `fn()` on process 0 and None elsewhere. Process 0 re-raises its own error; the
  others raise errors.WorkdirError saying that process 0 failed to `what`, so no process
  waits forever for a writer that has stopped.
  """
  if jax.process_count() == 1:
    return fn()
  result, error = None, None
  if is_writer():
    try:
      result = fn()
    except Exception as e:  # pylint: disable=broad-except
      error = e
  failed = gather_ints([error is not None])[0, 0]
  if error is not None:
    raise error
  if failed:
    raise errors.WorkdirError(f"process 0 failed to {what}; its error says why.")
  return result
