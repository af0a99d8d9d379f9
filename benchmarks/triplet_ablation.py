r"""The triplet model's levers on validation: one change at a time against a base flagfile.

  python -m benchmarks.triplet_ablation --data_dir=/work/shared/data

Each lever is one or more TrainConfig fields set on top of `--ablation_base` (`--lever`,
repeatable: `field=value`, several joined by `;`). Every variant, the base included, is fitted
on the validation splits carved out of the lab split's training positives
(`tuning.tuning_split`, one per `--ablation_seeds`; the test positives play no part) and
scored like a run; the table gives the means over those splits of AUC, P/R/NDCG@20 and the
fitting seconds, and each lever's change against the base. Writes markdown and JSON, to
runs/benchmarks/triplet_ablation.{md,json} unless `--ablation_md` / `--ablation_json` name
other files.
The committed table (benchmarks/results/triplet_ablation_ml100k.md) was made by

  python -m benchmarks.triplet_ablation --data_dir=../shared/data \
      --ablation_json=benchmarks/results/triplet_ablation_ml100k.json \
      --ablation_md=benchmarks/results/triplet_ablation_ml100k.md
"""

from __future__ import annotations

import dataclasses

from absl import flags
from absl import logging

from benchmarks import ml100k_flags  # pylint: disable=unused-import (defines --data_dir)
from benchmarks import outputs
from experiments import run_cli
from tripjax import errors
from tripjax import files
from tripjax import tuning
from tripjax.config import TrainConfig
from tripjax.data import registry

COLUMNS = outputs.VALIDATION_COLUMNS
DEFAULT_LEVERS = (
    "num_negatives=1", "num_negatives=4", "num_negatives=4;negative_temperature=0.1",
    "num_negatives=8;negative_temperature=0.3", "margin=0.5", "margin=0.9",
    "negative_exponent=0.0", "epochs=320", "dim=256", "item_features=genres",
    "user_features=age,gender,occupation",
    "item_features=genres;user_features=age,gender,occupation")

_BASE = flags.DEFINE_string("ablation_base", "experiments/configs/ml100k.cfg",
                            "The settings every lever changes.")
_LEVERS = flags.DEFINE_multi_string("lever", list(DEFAULT_LEVERS),
                                    "field=value[;field=value...] set on top of the base.")
_SEEDS = flags.DEFINE_list("ablation_seeds", ["1", "2", "3"], "One validation split each.")
_PER_USER = flags.DEFINE_integer("ablation_per_user", 5, "Validation positives per user.",
                                 lower_bound=1)
_OUT_JSON = flags.DEFINE_string("ablation_json", outputs.default_output("triplet_ablation.json"),
                                "Where the JSON goes.")
_OUT_MD = flags.DEFINE_string("ablation_md", outputs.default_output("triplet_ablation.md"),
                              "Where the markdown table goes.")


def parse_lever(spec: str) -> dict:
  """`"a=1;b=x"` -> {"a": 1, "b": "x"}, values typed as the TrainConfig fields.

  Raises:
    errors.InvalidInput: an empty spec, a part without `=`, an unknown field or a bad value.
  """
  fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
  out = {}
  for part in filter(None, (p.strip() for p in spec.split(";"))):
    name, sep, raw = part.partition("=")
    if not sep or name not in fields:
      raise errors.InvalidInput(f"--lever={spec!r}: expected field=value with a TrainConfig "
                                f"field, got {part!r}.")
    kind = type(fields[name].default)
    try:
      out[name] = (raw.lower() in ("1", "true") if kind is bool else
                   kind(raw) if kind in (int, float) else raw)
    except ValueError:
      raise errors.InvalidInput(f"--lever={spec!r}: bad value for {name}: {raw!r}.") from None
  if not out:
    raise errors.InvalidInput(f"--lever={spec!r}: no field=value in it.")
  return out


def _seeds(values: list[str]) -> list[int]:
  try:
    return [int(s) for s in values]
  except ValueError:
    raise errors.InvalidInput(f"--ablation_seeds={','.join(values)}: expected integers, e.g. "
                              "--ablation_seeds=1,2,3.") from None


def ablate(base: TrainConfig, levers: list[str], validation_seeds: list[int],
           validation_per_user: int = 5) -> dict:
  """Validation metrics of the base and of each lever (see the module docstring)."""
  variants = [("base", {})] + [(spec, parse_lever(spec)) for spec in levers]
  configs = [(name, dataclasses.replace(base, **changes)) for name, changes in variants]
  _, train, _ = registry.load_split(base)
  splits = [tuning.tuning_split(train, validation_per_user, s) for s in validation_seeds]
  rows = []
  for name, config in configs:
    metrics = tuning.validate_mean(config, splits)
    rows.append({"lever": name, **{k: metrics[k] for k in COLUMNS},
                 "train_seconds": metrics["train_seconds"] / len(splits)})
    logging.info("%s: AUC %.4f NDCG@20 %.4f", name, metrics["auc"], metrics["ndcg@20"])
  return {"base_config": dataclasses.asdict(base), "validation_seeds": list(validation_seeds),
          "validation_per_user": validation_per_user, "rows": rows}


def markdown(report: dict, command: str) -> str:
  """The table: one row per variant, each lever's change against the base in brackets."""
  return outputs.validation_table(report, command, "Triplet model levers on validation",
                                  "lever", "lever")


def main(argv):
  del argv
  files.check_outputs({"ablation_json": _OUT_JSON.value, "ablation_md": _OUT_MD.value})
  base = outputs.base_config(_BASE.value)
  seeds = tuning.check_seeds(_seeds(_SEEDS.value))
  report = ablate(base, list(_LEVERS.value), list(seeds), _PER_USER.value)
  outputs.write_report(report, markdown, "benchmarks.triplet_ablation", _OUT_JSON.value, _OUT_MD.value)


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
