"""Fit time and peak memory of the item-item models (EASE, RP3beta, item-kNN) at the ML-20M shape.

  python -m benchmarks.item_item_fit [--users=138493] [--items=26744] [--positives=10000000]
      [--repeats=1] [--models=ease,rp3beta,itemknn]

A random bool CSR of the ML-20M shape (138,493 users x 26,744 items, about 10M positives; users'
activity log-normal, item popularity Zipf-like: `step_inputs.random_positives`) is made once and
saved; then each measurement runs in a fresh child process that loads it:

  baseline: loads the matrix, imports tripjax and starts JAX's device; nothing else.
  <model>:  the same, then `fit` with the model's tuned ML-100K flagfile
            (`experiments/configs/ml100k_<model>.cfg`: EASE's lambda, RP3beta's alpha, beta and
            top-k, item-kNN's k and shrink) `--repeats` times.

Each child reports its own peak resident set size (`getrusage(RUSAGE_SELF).ru_maxrss`); the
fit's own memory is the model child's peak minus the baseline child's. Fit seconds are the
median of the repeats, each ending when the params are on the device (`block_until_ready`); the
first includes compilation (EASE: X^T X as a sparse product on the host, written into the device
by blocks of rows, then one jitted Cholesky inverse; the item-item models' W is built with
numpy/scipy).

EASE checks its memory before allocating (`ease.check_memory`: `ease.fit_bytes(I)` against the
device's free memory, `DEFAULT_MEMORY_LIMIT_BYTES` on CPU); the JSON records what it says it
needs and its limit, and a refusal, an out-of-memory error or a killed child as a one-line
`error` instead of timings. `--ease_memory_limit_gib` sets `ease.MEMORY_LIMIT_BYTES` in the child.

Writes runs/benchmarks/item_item_fit.json (`--out_json`: another file). `--merge=OTHER.json`
runs nothing: it rewrites `--out_json` (an earlier run, same shape) with its rows of OTHER's
models replaced by OTHER's, each carrying OTHER's command, baseline and environment. The
committed figures in benchmarks/results/item_item_fit_ml20m.json (shown in benchmarks/RESULTS.md)
were made by

  nice -n 10 python -m benchmarks.item_item_fit \
      --out_json=benchmarks/results/item_item_fit_ml20m.json

and EASE's row (8 GiB, the CPU default, is under the 10.7 GiB it needs) by

  nice -n 19 python -m benchmarks.item_item_fit --models=ease --ease_memory_limit_gib=16 \
      --child_timeout_s=10800 --out_json=/tmp/ease27k.json
  python -m benchmarks.item_item_fit --merge=/tmp/ease27k.json \
      --out_json=benchmarks/results/item_item_fit_ml20m.json
"""

from __future__ import annotations

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
import scipy
import scipy.sparse as sp

from benchmarks import item_item_merge
from benchmarks import outputs
from benchmarks import step_inputs
from experiments import run_cli
from tripjax import files

_REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = item_item_merge.MODELS

_USERS = flags.DEFINE_integer("users", 138_493, "Users (rows) of the random matrix.",
                              lower_bound=1)
_ITEMS = flags.DEFINE_integer("items", 26_744, "Items (columns) of the random matrix.",
                              lower_bound=2)
_POSITIVES = flags.DEFINE_integer("positives", 10_000_000, "About this many positives.",
                                  lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random matrix.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Fits per model (median reported).", lower_bound=1)
_MODELS = flags.DEFINE_list("models", list(MODELS), f"Models to fit, of {', '.join(MODELS)}.")
_CONFIGS = flags.DEFINE_string("configs_dir", str(_REPO / "experiments" / "configs"),
                               "Folder of the tuned flagfiles ml100k_<model>.cfg.")
_EASE_LIMIT = flags.DEFINE_float("ease_memory_limit_gib", None,
                                 "EASE's memory limit (ease.MEMORY_LIMIT_BYTES) in the child; "
                                 "default: the library's own.", lower_bound=0.0)
_TIMEOUT = flags.DEFINE_integer("child_timeout_s", 7200, "Seconds a child may run.",
                                lower_bound=1)
_OUT_JSON = flags.DEFINE_string("out_json", outputs.default_output("item_item_fit.json"),
                                "Where the JSON goes.")
_MERGE = flags.DEFINE_string("merge", None,
                             "Run nothing: replace --out_json's rows of this JSON's models by "
                             "its rows (same shape) and rewrite --out_json.")
_RUN_FLAGS = (_USERS, _ITEMS, _POSITIVES, _SEED, _REPEATS, _MODELS, _CONFIGS, _EASE_LIMIT,
              _TIMEOUT, _OUT_JSON)
_CHILD = flags.DEFINE_enum("child", None, ["baseline", *MODELS],
                           "Internal: run one measurement in this process and print its JSON.")
_MATRIX = flags.DEFINE_string("matrix", None, "Internal: the child's .npz matrix.")


def _peak_mib() -> float:
  """This process's peak resident set size so far, MiB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_matrix(users: int, items: int, positives: int, seed: int = 0) -> sp.csr_matrix:
  """bool CSR [users, items] with about `positives` distinct positives, skewed like MovieLens.

  `step_inputs.random_positives` drops repeated draws; when that leaves under 98% of
  `positives`, it is drawn once more asking for proportionally more.
  """
  matrix = step_inputs.random_positives(users, items, positives, seed)
  if 0 < matrix.nnz < 0.98 * positives:
    matrix = step_inputs.random_positives(users, items, int(positives**2 / matrix.nnz), seed)
  return matrix


def _line(err: BaseException) -> str:
  """The first line of an error, with its type."""
  text = str(err).strip().splitlines()
  return f"{type(err).__name__}: {text[0] if text else ''}"


def _child(kind: str, matrix_path: str, repeats: int) -> dict:
  """One measurement in this process (see the module docstring)."""
  import jax  # pylint: disable=g-import-not-at-top
  from tripjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from tripjax import errors  # pylint: disable=g-import-not-at-top
  from tripjax import models  # pylint: disable=g-import-not-at-top
  from tripjax.models import ease  # pylint: disable=g-import-not-at-top

  train = sp.load_npz(matrix_path).tocsr()
  device = jax.devices()[0]
  out = {"child": kind, "device_kind": device.device_kind, "jax": jax.__version__,
         "rss_before_fit_mib": _peak_mib()}
  if kind == "baseline":
    out["peak_rss_mib"] = _peak_mib()
    return out
  config = config_lib.TrainConfig.from_flagfile(pathlib.Path(_CONFIGS.value) /
                                                f"ml100k_{kind}.cfg")
  model = models.get(config.model)
  out["settings"] = model.describe(config)
  if kind == "ease":
    if _EASE_LIMIT.value is not None:
      ease.MEMORY_LIMIT_BYTES = int(_EASE_LIMIT.value * 2**30)
    out["ease_needs_bytes"] = ease.fit_bytes(train.shape[1])
    out["ease_memory_limit_bytes"] = ease.memory_limit()
  runs = []
  try:
    for _ in range(repeats):
      start = time.perf_counter()
      params = jax.block_until_ready(model.fit(config, train, key=jax.random.key(0)))
      runs.append(time.perf_counter() - start)
      del params
  except (errors.TripjaxError, MemoryError) as err:
    out["error"] = _line(err)
  except Exception as err:  # pylint: disable=broad-except
    if "RESOURCE_EXHAUSTED" not in str(err)[:2000]:
      raise
    out["error"] = _line(err)
  out["runs_s"] = runs
  out["fit_s"] = statistics.median(runs) if runs else None
  out["peak_rss_mib"] = _peak_mib()
  return out


def _spawn(kind: str, matrix_path: str) -> dict:
  """Runs `_child(kind)` in a fresh process; a failure becomes {"error": one line}."""
  command = [sys.executable, "-m", "benchmarks.item_item_fit", f"--child={kind}",
             f"--matrix={matrix_path}", f"--repeats={_REPEATS.value}",
             f"--configs_dir={_CONFIGS.value}"]
  if _EASE_LIMIT.value is not None:
    command.append(f"--ease_memory_limit_gib={_EASE_LIMIT.value}")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])))
  start = time.perf_counter()
  try:
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env,
                          cwd=_REPO, timeout=_TIMEOUT.value)
  except subprocess.TimeoutExpired:
    return {"child": kind, "error": f"timed out after {_TIMEOUT.value} s (--child_timeout_s)"}
  wall = time.perf_counter() - start
  if proc.returncode != 0:
    tail = proc.stderr.strip().splitlines()
    why = (f"killed by signal {-proc.returncode} (out of memory?)" if proc.returncode < 0
           else f"exit code {proc.returncode}")
    return {"child": kind, "error": f"child {why}: {tail[-1] if tail else ''}",
            "child_wall_s": wall}
  return {**json.loads(proc.stdout.strip().splitlines()[-1]), "child_wall_s": wall}


def _shape(train: sp.csr_matrix) -> dict:
  item_counts = np.bincount(train.indices, minlength=train.shape[1])
  user_counts = np.diff(train.indptr)
  return {"users": train.shape[0], "items": train.shape[1], "positives": int(train.nnz),
          "item_count_max": int(item_counts.max()), "item_count_median":
          float(np.median(item_counts)), "items_without_users": int((item_counts == 0).sum()),
          "user_count_median": float(np.median(user_counts)),
          "user_count_max": int(user_counts.max())}


def command() -> str:
  """The command line of this run: the module and the flags given."""
  given = [f"--{holder.name}={','.join(value) if isinstance(value, list) else value}"
           for holder in _RUN_FLAGS if flags.FLAGS[holder.name].present
           for value in [holder.value]]
  return " ".join(["python -m benchmarks.item_item_fit", *given])


def run() -> dict:
  """Makes the matrix, runs the baseline and each model's child, returns the JSON payload."""
  from tripjax.models import ease  # pylint: disable=g-import-not-at-top
  if not _MODELS.value:
    raise app.UsageError(f"--models is empty; choose from {', '.join(MODELS)}.")
  if not pathlib.Path(_CONFIGS.value).is_dir():
    raise app.UsageError(f"--configs_dir={_CONFIGS.value} is not a folder; name the folder "
                         "holding the ml100k_<model>.cfg flagfiles.")
  unknown = sorted(set(_MODELS.value) - set(MODELS))
  if unknown:
    raise app.UsageError(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}.")
  load_before = os.getloadavg()
  start = time.perf_counter()
  train = random_matrix(_USERS.value, _ITEMS.value, _POSITIVES.value, _SEED.value)
  generate_s = time.perf_counter() - start
  with tempfile.TemporaryDirectory(prefix="item_item_fit-") as folder:
    matrix_path = str(pathlib.Path(folder) / "train.npz")
    sp.save_npz(matrix_path, train, compressed=False)
    shape = _shape(train)
    del train
    baseline = _spawn("baseline", matrix_path)
    results = []
    for name in _MODELS.value:
      result = _spawn(name, matrix_path)
      if "peak_rss_mib" in result and "peak_rss_mib" in baseline:
        result["fit_rss_mib"] = result["peak_rss_mib"] - baseline["peak_rss_mib"]
      if name == "ease":
        result.setdefault("ease_needs_bytes", ease.fit_bytes(shape["items"]))
      results.append({"model": name, **result})
      print(f"{name}: fit {result.get('fit_s')} s, peak RSS {result.get('peak_rss_mib')} MiB"
            + (f", error: {result['error']}" if "error" in result else ""))
  return {
      "command": command(),
      "shape": shape,
      "generate_s": generate_s,
      "repeats": _REPEATS.value,
      "baseline": baseline,
      "models": results,
      "environment": {
          "python": platform.python_version(), "numpy": np.__version__,
          "scipy": scipy.__version__, "cpus": os.cpu_count(),
          "jax": baseline.get("jax"), "device_kind": baseline.get("device_kind"),
          "load_average_before": load_before, "load_average_after": os.getloadavg(),
      },
  }


def _merge_files(new_path: str, out_path: str) -> pathlib.Path:
  """Rewrites `out_path` merged with `new_path` (`merge`); bad files are a UsageError."""
  try:
    base, new = (json.loads(pathlib.Path(p).read_text()) for p in (out_path, new_path))
    payload = item_item_merge.merge(base, new)
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
    raise app.UsageError(f"--merge={new_path} into --out_json={out_path}: {_line(err)}") from err
  return files.write_json_atomic(out_path, payload)


def main(argv):
  del argv
  if _CHILD.value:
    if not _MATRIX.value:
      raise app.UsageError("--child is internal (this benchmark runs its own children) and needs "
                           "--matrix; run without --child.")
    print(json.dumps(_child(_CHILD.value, _MATRIX.value, _REPEATS.value)))
    return
  if _MERGE.value:
    print(f"wrote {_merge_files(_MERGE.value, _OUT_JSON.value)}")
    return
  payload = run()
  out = files.write_json_atomic(_OUT_JSON.value, payload)
  print(f"wrote {out}")


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
