"""Parse speed of ML-1M's `::` ratings format: tripjax's reader vs pandas' python engine.

Generates a ratings.dat-style file (default 1,000,000 lines) in a temporary folder, times
`tripjax.data.movielens.read_ratings(path, "dat")` and
`pd.read_csv(path, sep="::", engine="python", header=None)` in the same run (one untimed
warm-up each, then the median of --repeats runs), checks that both read the same values, and
prints and writes the figures as JSON, to runs/benchmarks/parse_speed.json unless `--out` names
another file. The committed figures in benchmarks/results/parse_speed.json (shown in
benchmarks/RESULTS.md) were made, and are updated, by

  python -m benchmarks.parse_speed --lines=1000000 --repeats=5 \
      --out=benchmarks/results/parse_speed.json
"""

import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import pandas as pd

from benchmarks import outputs
from experiments import run_cli
from tripjax import files
from tripjax.data import movielens

_LINES = flags.DEFINE_integer("lines", 1_000_000, "Lines in the generated ratings file.",
                              lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs of each parser (median reported).",
                                lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the generated file.")
_OUT = flags.DEFINE_string("out", outputs.default_output("parse_speed.json"),
                           "Where to write JSON.")


def write_ml1m_ratings(path: pathlib.Path, num_lines: int, seed: int) -> None:
  """Writes `num_lines` random ratings in ML-1M's `user::item::rating::timestamp` format."""
  rng = np.random.default_rng(seed)
  columns = (rng.integers(1, 6041, num_lines), rng.integers(1, 3953, num_lines),
             rng.integers(1, 6, num_lines), rng.integers(956_703_932, 1_046_454_590, num_lines))
  lines = "\n".join(f"{u}::{i}::{r}::{t}" for u, i, r, t in zip(*(c.tolist() for c in columns)))
  path.write_text(lines + "\n")


def _time(fn, repeats: int) -> tuple[list[float], object]:
  result = fn()  # warm-up: page cache, imports
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return times, result


def main(argv):
  del argv
  if _REPEATS.value < 3:
    raise app.UsageError(f"--repeats must be >= 3 for a median, got {_REPEATS.value}")
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "ratings.dat"
    write_ml1m_ratings(path, _LINES.value, _SEED.value)
    ours_times, ours = _time(lambda: movielens.read_ratings(path, "dat"), _REPEATS.value)
    python_times, python = _time(
        lambda: pd.read_csv(path, sep="::", engine="python", header=None), _REPEATS.value)
    size = path.stat().st_size
  if len(ours) != _LINES.value or not np.array_equal(ours.to_numpy(np.float64),
                                                     python.to_numpy(np.float64)):
    raise SystemExit("the two parsers disagree; the timing would mean nothing")
  ours_median = statistics.median(ours_times)
  python_median = statistics.median(python_times)
  result = {
      "benchmark": "parse ML-1M '::' ratings format",
      "lines": _LINES.value,
      "file_bytes": size,
      "repeats": _REPEATS.value,
      "tripjax_read_ratings_s": {"median": ours_median, "runs": ours_times},
      "pandas_python_engine_s": {"median": python_median, "runs": python_times},
      "speedup": python_median / ours_median,
      "tripjax_lines_per_s": _LINES.value / ours_median,
      "versions": {"python": platform.python_version(), "pandas": pd.__version__,
                   "numpy": np.__version__},
      "machine": {"platform": platform.platform(), "processor": platform.processor(),
                  "cpu_count": os.cpu_count()},
  }
  text = json.dumps(result, indent=2)
  print(text)
  out = files.write_atomic(_OUT.value, text + "\n")
  print(f"speedup {result['speedup']:.1f}x "
        f"(tripjax {ours_median:.3f} s vs pandas python engine {python_median:.3f} s); "
        f"wrote {out}")


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
