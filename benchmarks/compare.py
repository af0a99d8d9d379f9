r"""Every model on one page: each flagfile's model on the same splits, paired against a reference.

  python -m benchmarks.compare --data_dir=/work/shared/data

Reads each flagfile of `--configs` (by default `experiments/configs/ml100k.cfg` and every
`experiments/configs/ml100k_<model>.cfg` that exists, `<model>` a `tripjax.models` name), and
for each split seed loads the split once (every flagfile must name the same data), fits every
model on its train with `tripjax.tuning.fit` and evaluates it on its test with
`tripjax.metrics.evaluate`, scored as `train_and_evaluate` scores (the model's `score_fn` plus
`model.popularity_offset(train, popularity_penalty)`). Besides the means, every model's per-user
AUC and NDCG@20 are compared with those of the reference model (`--reference`, by default the
triplet model) on the same split: the mean and standard error over users of the per-user
difference, per seed and pooled over the seeds (users without an AUC skipped). Writes a markdown
table and the results as JSON, both naming the command that wrote them, to
runs/benchmarks/compare_ml100k.{md,json} unless `--compare_md` and `--compare_json` name other files.
The committed results (benchmarks/results/compare_ml100k.json, shown in benchmarks/RESULTS.md)
are made, and updated, with `TRIPJAX_DATA_DIR` set, by

  python -m benchmarks.compare --compare_json=benchmarks/results/compare_ml100k.json \
      --compare_md=benchmarks/results/compare_ml100k.md
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from benchmarks import ml100k_flags
from benchmarks import outputs
from experiments import run_cli
from tripjax import files
from tripjax import metrics
from tripjax import model
from tripjax import models
from tripjax import tuning
from tripjax.config import DRIVER_FLAGS, TrainConfig
from tripjax.data import registry

_REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = "experiments/configs"
COLUMNS = ("auc", "precision@20", "recall@20", "ndcg@20")
PAIRED = ("auc", "ndcg@20")  # the per-user metrics compared with the reference's
# The fields that make the split: every compared config must agree on them.
DATA_FIELDS = ("dataset", "threshold", "min_user_positives", "test_per_user", "data_seed")


def default_configs(config_dir: str | pathlib.Path = _REPO / CONFIG_DIR) -> list[str]:
  """`ml100k.cfg` and every `ml100k_<model>.cfg` and `ml100k_<model>_<variant>.cfg` in
  `config_dir`, `<model>` in `models.NAMES` (a variant: the same model with other settings,
  e.g. `ml100k_ials_low.cfg`).

  Returns:
    The paths, as named from the repository root when inside it, `ml100k.cfg` first, then the
    others by name.
  """
  config_dir = pathlib.Path(config_dir)
  found = [config_dir / "ml100k.cfg"]
  found += sorted(p for p in config_dir.glob("ml100k_*.cfg")
                  if p.stem.removeprefix("ml100k_").split("_")[0] in models.NAMES)
  return [_shown(p) for p in found]


def _canonical(path, model_name: str) -> bool:
  """Whether `path` is the model's own ML-100K flagfile (`ml100k.cfg` for the triplet model)."""
  name = pathlib.Path(path).name
  return name == (f"ml100k_{model_name}.cfg" if model_name != "triplet" else "ml100k.cfg")


def _shown(path) -> str:
  path = pathlib.Path(path).resolve()
  try:
    return str(path.relative_to(_REPO))
  except ValueError:
    return str(path)


def read_configs(paths: Sequence[str]) -> dict[str, tuple[str, TrainConfig]]:
  """Row name -> (flagfile, its TrainConfig): rows are named by model, by model and file when
  two flagfiles name the same model (the model's own file, `_canonical`, keeps the bare name)."""
  configs = [(str(p), TrainConfig.from_flagfile(p, ignore=DRIVER_FLAGS)) for p in paths]
  counts = {}
  for _, config in configs:
    counts[config.model] = counts.get(config.model, 0) + 1
  named = {}
  for path, config in configs:
    name = config.model
    if counts[config.model] > 1 and not _canonical(path, config.model):
      name = f"{config.model} ({pathlib.Path(path).name})"
    if name in named:
      raise ValueError(f"flagfile {path} is given twice.")
    named[name] = (path, config)
  return named


def paired_difference(values: np.ndarray, reference: np.ndarray,
                      auc: np.ndarray, reference_auc: np.ndarray) -> dict[str, Any]:
  """The per-user difference `values - reference` over the users with an AUC in both.

  Args:
    values, reference: float[U], one per-user metric of the model and of the reference.
    auc, reference_auc: float[U], their per-user AUCs (NaN: user not evaluated, skipped).

  Returns:
    {"mean": mean difference, "se": its standard error (sample std / sqrt(n); None for n < 2),
     "users": n, "diffs": float64[n] the differences (for pooling; not JSON)}.
  """
  keep = ~np.isnan(np.asarray(auc)) & ~np.isnan(np.asarray(reference_auc))
  diffs = np.asarray(values, np.float64)[keep] - np.asarray(reference, np.float64)[keep]
  return _summary(diffs) | {"diffs": diffs}


def _summary(diffs: np.ndarray) -> dict[str, Any]:
  n = int(diffs.size)
  mean = float(diffs.mean()) if n else None
  se = float(diffs.std(ddof=1) / math.sqrt(n)) if n > 1 else None
  return {"mean": mean, "se": se, "users": n}


def run_compare(configs: dict[str, TrainConfig], split_seeds: Sequence[int],
                data_dir: str | None = None, reference: str = "triplet",
                flagfiles: dict[str, str] | None = None) -> dict[str, Any]:
  """Fits and evaluates every config on every split; pairs each with the reference per user.

  Args:
    configs: row name -> settings; all with the same data fields (`DATA_FIELDS`).
    split_seeds: the lab split seeds.
    data_dir: folder holding the MovieLens release, set in every config (None: the loader's
      search); nothing is downloaded.
    reference: the row the paired differences are taken against.
    flagfiles: row name -> the flagfile it was read from (recorded).

  Returns:
    {"split_seeds", "reference", "data": the data fields, "rows": {name: {"model", "flagfile",
     "config", "seeds": {seed: means + train_seconds + users_evaluated}, "mean": COLUMNS averaged
     over the seeds, "median_train_seconds", "paired": {metric: {"seeds": {seed: {"mean", "se",
     "users"}}, "pooled": {"mean", "se", "users"}}}}}}; the seeds' keys are ints.

  Raises:
    ValueError: no config, an unknown reference, or configs with different data.
  """
  if not configs:
    raise ValueError("no config to compare.")
  if reference not in configs:
    raise ValueError(f"reference {reference!r} is not among the compared rows: {list(configs)}")
  data = {f: getattr(configs[reference], f) for f in DATA_FIELDS}
  for name, config in configs.items():
    other = {f: getattr(config, f) for f in DATA_FIELDS}
    if other != data:
      raise ValueError(f"{name} reads other data than {reference} ({other} != {data}): its "
                       "per-user metrics could not be paired.")
  flagfiles = flagfiles or {}
  rows = {name: {"model": config.model, "flagfile": flagfiles.get(name),
                 "config": dataclasses.asdict(dataclasses.replace(config, data_dir=None)),
                 "seeds": {}} for name, config in configs.items()}
  diffs = {name: {m: [] for m in PAIRED} for name in configs}
  for name in rows:
    rows[name]["paired"] = {m: {"seeds": {}} for m in PAIRED}
  for seed in split_seeds:
    on_split = {name: dataclasses.replace(c, split_seed=seed, data_dir=data_dir, download=False)
                for name, c in configs.items()}
    _, train, test = registry.load_split(on_split[reference])
    per_user = {}
    for name, config in on_split.items():
      params, seconds = tuning.fit(config, train)
      offset = model.popularity_offset(train, config.popularity_penalty)
      result = metrics.evaluate(models.get(config.model).score_fn(params, offset), train, test,
                                ks=(10, 20))
      per_user[name] = result.per_user
      rows[name]["seeds"][seed] = dict({k: float(v) for k, v in result.means.items()},
                                       train_seconds=seconds,
                                       users_evaluated=int(result.users_evaluated))
      logging.info("split %d  %-12s AUC %.4f  NDCG@20 %.4f  (%.1fs)", seed, name,
                   result.means["auc"], result.means["ndcg@20"], seconds)
    ref = per_user[reference]
    for name in configs:
      for m in PAIRED:
        d = paired_difference(per_user[name][m], ref[m], per_user[name]["auc"], ref["auc"])
        diffs[name][m].append(d.pop("diffs"))
        rows[name]["paired"][m]["seeds"][seed] = d
  for name, row in rows.items():
    seeds = row["seeds"].values()
    row["mean"] = {k: statistics.fmean(s[k] for s in seeds) for k in COLUMNS}
    row["median_train_seconds"] = statistics.median(s["train_seconds"] for s in seeds)
    for m in PAIRED:
      row["paired"][m]["pooled"] = _summary(np.concatenate(diffs[name][m]))
  # Seeds after the first reuse its compiled step (`train_step.make_train_step` is cached);
  # tables made before that compiled per seed and keep saying so.
  return {"split_seeds": list(split_seeds), "reference": reference, "data": data, "rows": rows,
          "seeds_reuse_compiled_step": True}


def _pm(d: dict) -> str:
  if d["mean"] is None:
    return "-"
  return f"{d['mean']:+.4f} ± {d['se']:.4f}" if d["se"] is not None else f"{d['mean']:+.4f}"


def markdown(results: dict[str, Any]) -> str:
  """The table of `results` (`run_compare`'s dict, or its JSON with `command`, `device_kind`,
  `jax_version` added): one row per model."""
  seeds = results["split_seeds"]
  ref = results["reference"]
  head = (["model", "mean AUC"] + [f"AUC seed {s}" for s in seeds] +
          ["P@20", "R@20", "NDCG@20", "train s", f"ΔAUC vs {ref} (mean ± SE)",
           f"ΔNDCG@20 vs {ref} (mean ± SE)"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, row in results["rows"].items():
    by_seed = {str(k): v for k, v in row["seeds"].items()}  # JSON keys are strings
    cells = [name, f"{row['mean']['auc']:.4f}"]
    cells += [f"{by_seed[str(s)]['auc']:.4f}" for s in seeds]
    cells += [f"{row['mean'][k]:.4f}" for k in COLUMNS[1:]]
    cells.append(f"{row['median_train_seconds']:.1f}")
    cells += [_pm(row["paired"][m]["pooled"]) for m in PAIRED]
    lines.append("| " + " | ".join(cells) + " |")
  data = results["data"]
  name = "Real MovieLens 100K" if data["dataset"] == "ml-100k" else f"`{data['dataset']}`"
  where = ""
  if "device_kind" in results:
    where = f" ({results['device_kind']}, JAX {results['jax_version']})"
  sources = ", ".join(f"{n}: `{r['flagfile']}`" for n, r in results["rows"].items()
                      if r.get("flagfile"))
  compiled = ("the first seed's compiling included (the later seeds reuse its compiled step)"
              if results.get("seeds_reuse_compiled_step") else "compilation included")
  text = (f"{name}, lab pipeline (ratings >= {data['threshold']:g}, users with >= "
          f"{data['min_user_positives']} positives, {data['test_per_user']} test positives per "
          f"user), split seeds {', '.join(map(str, seeds))}: every model fitted on the split's "
          "train and evaluated on its test (AUC over all items not in train). Hyperparameters "
          "come from the flagfiles (chosen on validation splits carved out of train, never on "
          f"test){': ' + sources if sources else ''}. Mean AUC, P/R/NDCG@20: averaged over the "
          f"seeds; train s: median over the seeds of the fit, {compiled}"
          f"{where}. Δ: the per-user difference from {ref} on the same split (users without an "
          "AUC skipped), pooled over the seeds: its mean ± standard error over (user, seed) "
          "pairs (the same users recur across seeds, so the SE is somewhat optimistic; the JSON "
          "has each seed's).\n\n" + "\n".join(lines))
  if "command" in results:
    text += f"\n\nProduced by `{results['command']}`."
  return text + "\n"


_CONFIGS = flags.DEFINE_list(
    "configs", [], "Flagfiles to compare (empty: experiments/configs/ml100k.cfg and every "
    "experiments/configs/ml100k_<model>.cfg that exists).")
_SPLIT_SEEDS = ml100k_flags.SPLIT_SEEDS
_DATA_DIR = ml100k_flags.DATA_DIR
_REFERENCE = flags.DEFINE_string(
    "reference", "", "Row the paired differences are taken against (a model name, or "
    "'<model> (<flagfile name>)' when two flagfiles share a model; empty: triplet).")
_OUT_JSON = flags.DEFINE_string("compare_json", outputs.default_output("compare_ml100k.json"),
                                "Raw results.")
_OUT_MD = flags.DEFINE_string("compare_md", outputs.default_output("compare_ml100k.md"),
                              "The markdown table.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  files.check_outputs({"compare_json": _OUT_JSON.value, "compare_md": _OUT_MD.value})
  seeds = ml100k_flags.split_seeds()
  paths = _CONFIGS.value or default_configs()
  try:
    named = read_configs(paths)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  reference = _REFERENCE.value or "triplet"
  try:
    results = run_compare({n: c for n, (_, c) in named.items()}, seeds, _DATA_DIR.value or None,
                          reference, flagfiles={n: p for n, (p, _) in named.items()})
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  command = ("python -m benchmarks.compare" +
             "".join(f" --{f.name}={','.join(f.value) if isinstance(f.value, list) else f.value}"
                     for f in (_CONFIGS, _SPLIT_SEEDS, _REFERENCE, _OUT_JSON, _OUT_MD)
                     if f.value != f.default))
  results |= {"flagfiles": {n: {"path": p, "text": pathlib.Path(p).read_text()}
                            for n, (p, _) in named.items()},
              "jax_version": jax.__version__, "device_kind": jax.devices()[0].device_kind,
              "command": command}
  files.write_atomic(_OUT_JSON.value, json.dumps(results, indent=2) + "\n")
  table = markdown(results)
  files.write_atomic(_OUT_MD.value, table)
  print(table)


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
