r"""A whole training run, as a user runs it, with each phase's seconds and the peak memory.

`python -m experiments.train` runs in a child process on a fresh workdir (`--e2e_flagfile`, with
`--e2e_flags` added): load, filter and split the data, compile, train, evaluate every user,
evaluate popularity, write the results. Its `results.json` gives each phase's wall seconds
(`phase_seconds`) and its metrics; the child's peak resident set size
(`getrusage(RUSAGE_CHILDREN).ru_maxrss`) is set against `--e2e_limit_gib`.

  python -m benchmarks.end_to_end --e2e_flagfile=experiments/configs/ml20m.cfg \
      --e2e_flags=--dataset=synthetic-ml-20m

Writes runs/benchmarks/end_to_end_<dataset>.json unless `--e2e_out_json` names another file.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time

from absl import flags

from benchmarks import outputs
from experiments import run_cli
from tripjax import errors
from tripjax import files

_FLAGFILE = flags.DEFINE_string("e2e_flagfile", "experiments/configs/ml20m.cfg",
                                "The training run's flagfile.")
_FLAGS = flags.DEFINE_list("e2e_flags", ["--dataset=synthetic-ml-20m"],
                           "Flags added after the flagfile (comma-separated).")
_LIMIT_GIB = flags.DEFINE_float("e2e_limit_gib", 8.0, "The memory the run must stay under.")
flags.register_validator("e2e_limit_gib", lambda v: v > 0, "must be positive (GiB)")
_OUT_JSON = flags.DEFINE_string("e2e_out_json", None, "Output JSON (default: "
                                f"{outputs.default_output('end_to_end_<dataset>.json')}).")


def summary(results: dict, peak_bytes: int, wall_seconds: float, limit_gib: float) -> dict:
  """The benchmark's record of one run from its results.json and its measured process.

  Args:
    results: the run's results.json.
    peak_bytes: the training process's peak resident set size.
    wall_seconds: the process's wall time, start to exit (imports included).
    limit_gib: the memory limit the run is held to.
  """
  return {
      "dataset": results["dataset"],
      "config": results["config"],
      "phase_seconds": results["phase_seconds"],
      "process_seconds": wall_seconds,
      "peak_rss_gib": peak_bytes / 2**30,
      "limit_gib": limit_gib,
      "under_limit": peak_bytes < limit_gib * 2**30,
      "model": {k: results["model"][k] for k in ("auc", "precision@20", "recall@20", "ndcg@20")},
      "popularity": {k: results["popularity"][k] for k in ("auc", "ndcg@20")},
      "triplets_per_sec": results["triplets_per_sec"],
      "backend": results["backend"],
  }


def run(flagfile: str, extra: list[str], limit_gib: float) -> dict:
  """Trains in a child process on a temporary workdir; returns `summary` of it.

  Raises:
    errors.TripjaxError: the training process failed (its last stderr line).
  """
  with tempfile.TemporaryDirectory(prefix="tripjax-e2e-") as workdir:
    command = [sys.executable, "-m", "experiments.train", f"--flagfile={flagfile}", *extra,
               f"--workdir={workdir}/run"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          cwd=pathlib.Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - started
    if done.returncode:
      last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
      raise errors.TripjaxError(f"the training run failed: {last}")
    # ru_maxrss is in KiB on Linux: the largest of the waited-for children, here the only one.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    results = json.loads(pathlib.Path(workdir, "run", "results.json").read_text())
  record = summary(results, peak, wall, limit_gib)
  record["command_line"] = command[1:-1]
  return record


def main(argv):
  del argv
  record = run(_FLAGFILE.value, _FLAGS.value, _LIMIT_GIB.value)
  record.update(benchmark="end_to_end", machine=platform.machine(), cpus=os.cpu_count(),
                load_average=os.getloadavg())
  out = _OUT_JSON.value or outputs.default_output(
      f"end_to_end_{record['dataset']['name']}.json")
  record["command"] = "python -m benchmarks.end_to_end " + " ".join(map(shlex.quote,
                                                                       sys.argv[1:]))
  files.write_json_atomic(out, record)
  phases = ", ".join(f"{k} {v:.1f} s" for k, v in record["phase_seconds"].items())
  print(f"{record['dataset']['name']}: {phases}; peak {record['peak_rss_gib']:.2f} GiB "
        f"(limit {record['limit_gib']:g}); AUC {record['model']['auc']:.4f}; wrote {out}")


if __name__ == "__main__":
  run_cli.run(main)
