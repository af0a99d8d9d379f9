"""The one-page summary of a `benchmarks/gpu.sh` run: steps, test counts and headline figures.

  python -m benchmarks.gpu_summary --gpu_dir=runs/benchmarks/gpu > gpu_summary.json

Reads what gpu.sh left in `--gpu_dir` (`steps.jsonl`, `devices.json`, the pytest JUnit XML and
log, and the benchmarks' JSON files, named in `FILES`) and prints one JSON object: the devices and
JAX version, each step's exit code and seconds, the test counts, and the headline figures with how
far each is from the H200's memory-bandwidth limit:
- training: the best triplets/s of the large-batch steps (dim 64); the issue's limit is about 1e9
  triplets/s (~4 KB moved per triplet at ~4.8 TB/s), so `fraction_of_bandwidth_limit` =
  triplets/s / 1e9 (target: 3e8 at the ML-20M shape);
- evaluation of every user (`tripjax.metrics.evaluate`, AUC and @20 metrics; target: under 10 s at
  the ML-20M shape) and top-k of every user (`tripjax.recommend.top_k`): the best warm seconds,
  beside the seconds in which HBM could write and read the [U, I] float32 score matrix once (a
  floor, not a model of the sort).
A file that is missing or unreadable gives an "error" entry, never an exception: the summary of a
run whose steps failed is still written. gpu.sh owns the output file (stdout is redirected), so
this module writes nothing itself. No JAX import: the summary runs in a second.
"""

import json
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

from absl import app
from absl import flags

from experiments import run_cli

_DIR = flags.DEFINE_string("gpu_dir", "runs/benchmarks/gpu", "The folder gpu.sh wrote (its $OUT).")
_TOTAL_S = flags.DEFINE_float("gpu_total_s", None, "gpu.sh's wall-clock seconds so far.",
                              lower_bound=0.0)
_QUICK = flags.DEFINE_bool("gpu_quick", False, "The run was a QUICK=1 dry run (small shapes).")

# What gpu.sh writes into its output folder.
FILES = {
    "steps": "steps.jsonl",
    "devices": "devices.json",
    "junit": "pytest_junit.xml",
    "pytest_log": "logs/tests.log",
    "throughput_large_batch": "throughput_large_batch.json",
    "throughput": "throughput.json",
    "eval_all_users": "eval_all_users.json",
    "eval_speed": "eval_speed.json",
    "topk": "topk_speed.json",
}
BANDWIDTH_LIMIT_TRIPLETS_PER_S = 1e9  # ~4 KB per triplet at the H200's ~4.8 TB/s (issue 15)
HBM_BYTES_PER_S = 4.8e12  # H200 HBM3e
TARGET_TRIPLETS_PER_S = 3e8  # at the ML-20M shape, dim 64
TARGET_EVAL_S = 10.0  # every ML-20M-shaped user
ML20M_USERS, ML20M_ITEMS = 138_000, 27_000
_MAX_FAILED_LISTED = 40


def _load_json(path: pathlib.Path):
  return json.loads(path.read_text())


def read_steps(path: pathlib.Path) -> dict:
  """`steps.jsonl` (one object per step gpu.sh ran or skipped) as {step: record}."""
  steps = {}
  for line in path.read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      steps[record.pop("step")] = record
  return steps


def pytest_counts(junit: pathlib.Path, log: pathlib.Path) -> dict:
  """passed/failed/errors/skipped/total from the JUnit XML, else from the log's last line.

  A run stopped by its time limit (SIGINT) still writes both, with the tests run so far.
  """
  if junit.exists():
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {k: sum(int(s.get(k, 0)) for s in suites)
              for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}"
              for case in root.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    out = {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
           "failed": counts["failures"], "errors": counts["errors"],
           "skipped": counts["skipped"], "total": counts["tests"],
           "seconds": round(sum(float(s.get("time", 0)) for s in suites), 1),
           "failed_tests": failed[:_MAX_FAILED_LISTED], "source": junit.name}
  else:
    text = log.read_text() if log.exists() else ""
    lines = [l for l in text.splitlines() if re.search(r"\bin [\d.]+s\b", l)]
    if not lines:
      raise ValueError(f"neither {junit.name} nor a pytest summary line in {log.name}")
    found = {word: int(n) for n, word in re.findall(
        r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", lines[-1])}
    out = {"passed": found.get("passed", 0), "failed": found.get("failed", 0),
           "errors": found.get("errors", found.get("error", 0)),
           "skipped": found.get("skipped", 0), "source": log.name}
    out["total"] = out["passed"] + out["failed"] + out["errors"] + out["skipped"]
    out["seconds"] = float(re.search(r"\bin ([\d.]+)s\b", lines[-1]).group(1))
  if log.exists():
    out["interrupted"] = "KeyboardInterrupt" in log.read_text()
  return out


def throughput_headline(large_batch: dict | None, sweep: dict | None) -> dict:
  """The fastest timed step of either throughput file (dim 64), against the bandwidth limit."""
  rows = []
  for name, payload in (("throughput_large_batch", large_batch), ("throughput", sweep)):
    for step in (payload or {}).get("steps", []):
      if step.get("dim", 64) == 64 and step.get("triplets_per_s"):
        rows.append((step["triplets_per_s"], name, step))
  if not rows:
    raise ValueError("no timed step in the throughput files")
  rate, source, best = max(rows, key=lambda row: row[0])
  shape = best.get("shape") or (large_batch or {}).get("shape")
  out = {"triplets_per_s": rate, "shape": shape, "batch_size": best.get("batch_size"),
         "dim": best.get("dim", 64), "optimizer": best.get("optimizer"), "step": best.get("step"),
         "source": FILES[source],
         "fraction_of_bandwidth_limit": rate / BANDWIDTH_LIMIT_TRIPLETS_PER_S,
         "target_triplets_per_s": TARGET_TRIPLETS_PER_S,
         "target_met": rate >= TARGET_TRIPLETS_PER_S if shape == "ml-20m" else None}
  epochs = [e for p in (large_batch, sweep) for e in (p or {}).get("epochs", [])
            if e.get("epoch_triplets_per_s")]
  if epochs:
    epoch = max(epochs, key=lambda e: e["epoch_triplets_per_s"])
    out["epoch_with_sampling"] = {k: epoch.get(k) for k in (
        "epoch_triplets_per_s", "shape", "batch_size", "optimizer", "sampling_share")}
  return out


def _floor_s(users: int, items: int) -> float:
  """Seconds to write and read a float32 [users, items] score matrix once at HBM bandwidth."""
  return 2 * 4 * users * items / HBM_BYTES_PER_S


def eval_headline(all_users: dict, eval_speed: dict | None) -> dict:
  """The best warm seconds to evaluate every user, with the first (compiling) call beside it."""
  best = min(all_users["runs"], key=lambda run: run["median_s"])
  users, items = all_users["users"], all_users["items"]
  ml20m = (users, items) == (ML20M_USERS, ML20M_ITEMS)
  floor = _floor_s(users, items)
  out = {"seconds_all_users": best["median_s"], "first_call_s": best["first_call_s"],
         "block_size": best["block_size"], "users": users, "items": items,
         "shape": all_users.get("shape"), "mean_auc": best.get("mean_auc"),
         "target_s": TARGET_EVAL_S,
         "target_met": best["median_s"] < TARGET_EVAL_S if ml20m else None,
         "seconds_at_bandwidth_limit": floor,
         "fraction_of_bandwidth_limit": floor / best["median_s"]}
  if eval_speed and "ml1m" in eval_speed:
    out["ml1m_speedup_vs_lab_loop"] = eval_speed["ml1m"].get("speedup_median_of_rounds")
  return out


def topk_headline(topk: dict) -> dict:
  """The best block size's median seconds for top-k of every user, seen items left out."""
  best = min(topk["runs"], key=lambda run: run["median_s_all_users"])
  shape = topk["shape"]
  floor = _floor_s(shape["users"], shape["items"])
  return {"seconds_all_users": best["median_s_all_users"],
          "seconds_per_1000_users": best["median_s_per_1000_users"],
          "batch_size": best["batch_size"], "users": shape["users"], "items": shape["items"],
          "k": shape["k"], "seconds_at_bandwidth_limit": floor,
          "fraction_of_bandwidth_limit": floor / best["median_s_all_users"]}


def summarize(folder, total_s: float | None = None, quick: bool = False) -> dict:
  """The summary of the gpu.sh run that wrote `folder` (see the module docstring)."""
  folder = pathlib.Path(folder)
  path = {name: folder / file for name, file in FILES.items()}
  out = {"script": "benchmarks/gpu.sh", "quick": quick, "total_s": total_s}

  def section(name, make):
    try:
      out[name] = make()
    except Exception as e:  # pylint: disable=broad-except
      out[name] = {"error": f"{type(e).__name__}: {e}"}

  def optional(name):
    file = path[name]
    if not file.exists():  # a sweep stopped at its limit keeps its finished shapes there
      file = file.with_name(file.stem + ".partial.json")
    return _load_json(file) if file.exists() else None

  section("devices", lambda: _load_json(path["devices"]))
  section("steps", lambda: read_steps(path["steps"]))
  section("tests", lambda: pytest_counts(path["junit"], path["pytest_log"]))
  section("throughput", lambda: throughput_headline(optional("throughput_large_batch"),
                                                    optional("throughput")))
  section("evaluation", lambda: eval_headline(_load_json(path["eval_all_users"]),
                                              optional("eval_speed")))
  section("topk", lambda: topk_headline(_load_json(path["topk"])))
  out["fraction_of_bandwidth_limit"] = out["throughput"].get("fraction_of_bandwidth_limit")
  steps = out["steps"] if "error" not in out["steps"] else {}
  out["failed_steps"] = sorted(name for name, s in steps.items() if s.get("rc") not in (0, None))
  out["skipped_steps"] = sorted(name for name, s in steps.items() if s.get("skipped"))
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not pathlib.Path(_DIR.value).is_dir():
    raise app.UsageError(f"--gpu_dir={_DIR.value} is not a folder; name the folder gpu.sh "
                         "wrote (its $OUT).")
  json.dump(summarize(_DIR.value, _TOTAL_S.value, _QUICK.value), sys.stdout, indent=1)
  print()


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
