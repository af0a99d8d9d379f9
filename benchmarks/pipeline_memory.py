"""Peak memory and time of the data pipeline on an ML-20M-sized synthetic set (20M ratings).

Every measurement runs in a fresh child process and reports that process's peak resident set
size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`), so the stages do not pollute each other:

  generate:   make_synthetic(preset) alone; saves the frames for the next stage.
  pipeline:   loads the saved frames (their memory is part of the peak), then
              implicit_feedback + leave_k_out + leave_last_k_out. Generation excluded.
  end_to_end: make_synthetic + implicit_feedback + leave_k_out in one process. Generation included.

  python -m benchmarks.pipeline_memory [--preset=ml-20m] [--repeats=3]

Writes runs/benchmarks/pipeline_memory.json (atomically; `--output`: another file). The committed
figures in benchmarks/results/pipeline_memory.json (shown in benchmarks/RESULTS.md) were made, and
are updated, by

  python -m benchmarks.pipeline_memory --preset=ml-20m --repeats=3 \
      --output=benchmarks/results/pipeline_memory.json
"""

import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import pandas as pd
import scipy

from benchmarks import outputs
from experiments import run_cli
from tripjax import files

_PRESET = flags.DEFINE_string("preset", "ml-20m", "Synthetic preset to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Child processes per measured stage.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", outputs.default_output("pipeline_memory.json"),
                              "JSON file.")
_CHILD = flags.DEFINE_enum("child", None, ["generate", "pipeline", "end_to_end"],
                           "Internal: run one stage in this process and print its JSON.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Internal: where `generate` saves the frames.")

_LIMIT_MIB = 4096


def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _run_pipeline(ratings, items, timings):
  from tripjax import data  # pylint: disable=g-import-not-at-top
  t = time.perf_counter()
  dataset = data.implicit_feedback(ratings, items)
  timings["implicit_feedback_s"] = time.perf_counter() - t
  del ratings, items
  t = time.perf_counter()
  data.leave_k_out(dataset.matrix, k=10, seed=0)
  timings["leave_k_out_s"] = time.perf_counter() - t
  return dataset


def _child(stage: str, workdir: pathlib.Path) -> dict:
  from tripjax import data  # pylint: disable=g-import-not-at-top
  result = {"stage": stage, "baseline_peak_mib": _peak_mib()}
  timings = {}
  start = time.perf_counter()
  if stage in ("generate", "end_to_end"):
    t = time.perf_counter()
    ratings, items = data.make_synthetic(_PRESET.value, seed=0)
    timings["make_synthetic_s"] = time.perf_counter() - t
    result["num_ratings"] = len(ratings)
  if stage == "generate":
    for column in ratings.columns:
      np.save(workdir / f"{column}.npy", ratings[column].to_numpy())
    items.to_pickle(workdir / "items.pkl")
  elif stage == "pipeline":
    ratings = pd.DataFrame({c: np.load(workdir / f"{c}.npy")
                            for c in ("user_id", "item_id", "rating", "timestamp")})
    items = pd.read_pickle(workdir / "items.pkl")
    result["input_frames_mib"] = (ratings.memory_usage(deep=False).sum()) / 2**20
    result["peak_after_loading_mib"] = _peak_mib()
    dataset = _run_pipeline(ratings, items, timings)
    del ratings, items
    t = time.perf_counter()
    data.leave_last_k_out(dataset.matrix, dataset.timestamps, k=10)
    timings["leave_last_k_out_s"] = time.perf_counter() - t
    result["steps"] = {name: list(counts) for name, counts in dataset.steps.items()}
  else:
    dataset = _run_pipeline(ratings, items, timings)
    del ratings, items
    result["shape"] = list(dataset.matrix.shape)
  result["timings"] = timings
  result["total_s"] = time.perf_counter() - start
  result["peak_rss_mib"] = _peak_mib()
  return result


def _spawn(stage: str, workdir: str) -> dict:
  command = [sys.executable, "-m", "benchmarks.pipeline_memory", f"--child={stage}",
             f"--workdir={workdir}", f"--preset={_PRESET.value}"]
  proc = subprocess.run(command, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"child {stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _summarise(runs: list[dict]) -> dict:
  keys = sorted({k for run in runs for k in run["timings"]})
  return {
      "runs": runs,
      "median_timings_s": {k: statistics.median(r["timings"][k] for r in runs) for k in keys},
      "median_total_s": statistics.median(r["total_s"] for r in runs),
      "max_peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
      "median_peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
  }


def main(argv):
  del argv
  if _CHILD.value:
    if not _WORKDIR.value:
      raise app.UsageError("--child is internal (this benchmark runs its own children) and needs "
                           "--workdir; run without --child.")
    print(json.dumps(_child(_CHILD.value, pathlib.Path(_WORKDIR.value))))
    return
  from tripjax import errors  # pylint: disable=g-import-not-at-top
  from tripjax.data.synthetic_config import PRESETS  # pylint: disable=g-import-not-at-top
  if _PRESET.value not in PRESETS:
    raise errors.InvalidInput(f"--preset={_PRESET.value}: unknown; choose from "
                              f"{', '.join(sorted(PRESETS))}.")
  load_before = os.getloadavg()
  with tempfile.TemporaryDirectory() as workdir:
    generate = [_spawn("generate", workdir)]
    pipeline = [_spawn("pipeline", workdir) for _ in range(_REPEATS.value)]
  end_to_end = [_spawn("end_to_end", "") for _ in range(_REPEATS.value)]
  stages = {"generate": _summarise(generate), "pipeline": _summarise(pipeline),
            "end_to_end": _summarise(end_to_end)}
  payload = {
      "preset": _PRESET.value,
      "num_ratings": generate[0]["num_ratings"],
      "steps": pipeline[0]["steps"],
      "limit_mib": _LIMIT_MIB,
      "pipeline_excluding_generation_under_limit":
          stages["pipeline"]["max_peak_rss_mib"] < _LIMIT_MIB,
      "end_to_end_including_generation_under_limit":
          stages["end_to_end"]["max_peak_rss_mib"] < _LIMIT_MIB,
      "stages": stages,
      "environment": {
          "python": platform.python_version(), "numpy": np.__version__,
          "pandas": pd.__version__, "scipy": scipy.__version__, "cpus": os.cpu_count(),
          "load_average_before": load_before, "load_average_after": os.getloadavg(),
          "machine": platform.machine(),
      },
  }
  files.write_json_atomic(_OUTPUT.value, payload)
  for name, stage in stages.items():
    print(f"{name:>10}: peak RSS {stage['max_peak_rss_mib']:.0f} MiB (max of "
          f"{len(stage['runs'])}), median {stage['median_total_s']:.1f} s, "
          f"{ {k: round(v, 2) for k, v in stage['median_timings_s'].items()} }")
  print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
