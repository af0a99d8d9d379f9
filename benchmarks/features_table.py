r"""The triplet model with and without side features, on warm users and on cold items.

  python -m benchmarks.features_table --data_dir=/work/shared/data

For each split seed and each feature setting (`--variant`, repeatable: `none`, or
`item_features` / `user_features` values joined by `;`) on top of `--features_base`:
- warm: the lab split, fitted with `tripjax.tuning.fit` and evaluated on its test (AUC,
  P/R/NDCG@20), as the comparison page (`benchmarks.compare`) evaluates every model;
- cold: the same with `--features_cold_fraction` of the items held out whole, scored on them
  (`tripjax.metrics.cold.cold_report`: AUC and recall@20 over the cold items) beside
  popularity by genre and random scores.
Writes markdown and JSON, to runs/benchmarks/features_ml100k.{md,json} unless
`--features_md` / `--features_json` name other files. The committed table was made by

  python -m benchmarks.features_table --data_dir=../shared/data \
      --features_json=benchmarks/results/features_ml100k.json \
      --features_md=benchmarks/results/features_ml100k.md
"""

from __future__ import annotations

import dataclasses
import statistics

from absl import app
from absl import flags
from absl import logging

from benchmarks import ml100k_flags
from benchmarks import outputs
from experiments import run_cli
from tripjax import files
from tripjax import model
from tripjax import models
from tripjax import train as train_lib
from tripjax import tuning
from tripjax.config import TrainConfig
from tripjax.data import registry
from tripjax.metrics import cold

WARM = ("auc", "precision@20", "recall@20", "ndcg@20")
COLD = ("auc", "recall@20")
DEFAULT_VARIANTS = ("none", "item_features=genres",
                    "item_features=genres;user_features=age,gender,occupation")

_BASE = flags.DEFINE_string("features_base", "experiments/configs/ml100k.cfg",
                            "The triplet settings the features are added to.")
_VARIANTS = flags.DEFINE_multi_string("variant", list(DEFAULT_VARIANTS),
                                      "none, or item_features=...;user_features=...")
_COLD_FRACTION = flags.DEFINE_float("features_cold_fraction", 0.2,
                                     "Items held out whole, in (0, 1).")
flags.register_validator("features_cold_fraction", lambda f: 0 < f < 1,
                         "must lie in (0, 1): the table ranks cold items")
_OUT_JSON = flags.DEFINE_string("features_json", outputs.default_output("features_ml100k.json"),
                                "Where the JSON goes.")
_OUT_MD = flags.DEFINE_string("features_md", outputs.default_output("features_ml100k.md"),
                              "Where the markdown table goes.")


def variant_changes(spec: str) -> dict:
  """`none` -> {}; `item_features=genres;user_features=age` -> those two fields."""
  if spec == "none":
    return {}
  out = {}
  for part in filter(None, spec.split(";")):
    name, sep, value = part.partition("=")
    if not sep or name not in ("item_features", "user_features"):
      raise app.UsageError(f"--variant={spec!r}: expected none or item_features=... / "
                           f"user_features=... joined by ';', got {part!r}.")
    out[name] = value
  return out


def _fit_and_score(config: TrainConfig):
  """The lab split of `config` (cold items held out if it says so), fitted: (dataset, train,
  test, score_fn, seconds)."""
  dataset, train, test = registry.load_split(config)
  params, seconds = tuning.fit(config, train)
  offset = model.popularity_offset(train, config.popularity_penalty)
  return dataset, train, test, models.get(config.model).score_fn(params, offset), seconds


def run(base: TrainConfig, variants: list[str], split_seeds: list[int],
        cold_fraction: float) -> dict:
  """Every variant on every split seed, warm and cold (see the module docstring)."""
  rows = []
  for spec in variants:
    changes = variant_changes(spec)
    for seed in split_seeds:
      config = dataclasses.replace(base, split_seed=seed, **changes)
      _, train, test, score_fn, seconds = _fit_and_score(config)
      warm = train_lib.evaluate(score_fn, train, test, config.eval_block_size)
      cold_config = dataclasses.replace(config, cold_item_fraction=cold_fraction)
      dataset, cold_train, _, cold_score_fn, _ = _fit_and_score(cold_config)
      cold_metrics = cold.cold_report(cold_score_fn, dataset, cold_train,
                                      config.eval_block_size, seed)
      rows.append({"variant": spec, "split_seed": seed, "train_seconds": seconds,
                   "warm": {k: warm[k] for k in WARM}, "cold": cold_metrics})
      logging.info("%s seed %d: AUC %.4f NDCG@20 %.4f, cold AUC %.4f", spec, seed, warm["auc"],
                   warm["ndcg@20"], cold_metrics["model"]["auc"])
  return {"base_config": dataclasses.asdict(base), "split_seeds": split_seeds,
          "cold_item_fraction": cold_fraction, "rows": rows}


def _mean(rows, get) -> float:
  return statistics.fmean(get(r) for r in rows)


def markdown(report: dict, command: str) -> str:
  """Warm metrics and cold-item metrics per variant (means over the split seeds)."""
  seeds = report["split_seeds"]
  lines = [
      "# The triplet model with side features", "",
      f"Real ML-100K, the lab's pipeline, split seeds {', '.join(map(str, seeds))} (means). "
      f"Cold items: {report['cold_item_fraction']:g} of the items held out whole (a split of "
      "its own), each user's cold positives ranked among the cold items only.", "",
      f"`{command}`", "",
      "| features | AUC | P@20 | R@20 | NDCG@20 | AUC per seed | cold AUC | cold R@20 | fit s |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  variants = list(dict.fromkeys(r["variant"] for r in report["rows"]))
  for spec in variants:
    rows = [r for r in report["rows"] if r["variant"] == spec]
    warm = [f"{_mean(rows, lambda r, k=k: r['warm'][k]):.4f}" for k in WARM]
    per_seed = " / ".join(f"{r['warm']['auc']:.4f}" for r in rows)
    cold_cells = [f"{_mean(rows, lambda r, k=k: r['cold']['model'][k]):.4f}" for k in COLD]
    seconds = statistics.median(r["train_seconds"] for r in rows)
    lines.append(f"| {spec} | {' | '.join(warm)} | {per_seed} | {' | '.join(cold_cells)} | "
                 f"{seconds:.1f} |")
  rows = report["rows"]
  lines += ["", "Cold items, the references (the same cold splits):", "",
            "| scorer | cold AUC | cold R@20 |", "| --- | --- | --- |"]
  for name, key in (("popularity by genre", "popularity_by_genre"), ("random", "random")):
    usable = [r for r in rows if r["cold"][key] is not None]
    if usable:
      cells = [f"{_mean(usable, lambda r, k=k: r['cold'][key][k]):.4f}" for k in COLD]
      lines.append(f"| {name} | {' | '.join(cells)} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  files.check_outputs({"features_json": _OUT_JSON.value, "features_md": _OUT_MD.value})
  base = outputs.base_config(_BASE.value)
  base = dataclasses.replace(base, eval_every=base.epochs)
  seeds = ml100k_flags.split_seeds()
  report = run(base, list(_VARIANTS.value), seeds, _COLD_FRACTION.value)
  outputs.write_report(report, markdown, "benchmarks.features_table", _OUT_JSON.value, _OUT_MD.value)


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
