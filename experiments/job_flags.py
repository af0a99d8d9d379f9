"""The flags of a job of several processes (`tripjax.distributed`), for the training script.

`--coordinator_address=host:port --num_processes=N --process_id=i` on every process joins them
into one JAX runtime before any device is touched; without them, a job started by `srun`
(SLURM) or `mpirun` (Open MPI) with several tasks is joined from the launcher's environment.
One process, no launcher: nothing happens.
"""

from absl import flags

from tripjax import distributed
from tripjax import errors

COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", "",
    "host:port of process 0's coordinator, the same on every process of a job of several "
    "(jax.distributed); empty: one process, or the job srun/mpirun describes.")
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 1, "Processes in the job (with --coordinator_address).", lower_bound=1)
PROCESS_ID = flags.DEFINE_integer(
    "process_id", 0, "This process's number in [0, --num_processes) (with "
    "--coordinator_address); process 0 writes the run's files.")
JOIN_TIMEOUT = flags.DEFINE_integer(
    "join_timeout", distributed.DEFAULT_TIMEOUT_S,
    "Seconds to wait for the other processes of the job before giving up.", lower_bound=1)


def initialize() -> None:
  """Joins the job the flags (or the launcher's environment) describe; call first in `main`.

  Raises:
    errors.InvalidInput: --process_id or --num_processes without --coordinator_address, or
      settings that cannot form a job (naming the flag).
    errors.ResourceExhausted: the job did not form in --join_timeout seconds.
  """
  if COORDINATOR_ADDRESS.value:
    distributed.initialize(COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value,
                           timeout_s=JOIN_TIMEOUT.value)
  elif NUM_PROCESSES.value > 1 or PROCESS_ID.value:
    raise errors.InvalidInput(
        f"--num_processes={NUM_PROCESSES.value} --process_id={PROCESS_ID.value} need "
        "--coordinator_address=host:port (process 0's host and a free port).")
  elif distributed.launched_job():
    distributed.initialize_launched(timeout_s=JOIN_TIMEOUT.value)
