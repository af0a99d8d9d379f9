"""The whole tuning run behind `experiments/tune.py`: split, search, ablation and outputs.

`tune` loads the lab split, searches on validation splits (`tuning.validation`,
`tuning.grid_search`), and writes the JSON report and the best config as a flagfile
(`flagfile_text`); `previous_trials` reads an earlier report back so a run can resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Sequence

import jax

from tripjax import errors
from tripjax import files
from tripjax import metrics
from tripjax.config import SEED_LIMIT, TrainConfig
from tripjax.data import registry
from tripjax.tuning.grid_search import Space, ablation, best_trial, check_space, search
from tripjax.tuning.validation import check_penalties, penalty_scan, tuning_split, validate_mean

# Fields that describe where the data is, not the run: never written to the flagfile.
_MACHINE_FIELDS = ("data_dir", "download")


def flagfile_text(config: TrainConfig, searched: Sequence[str], header: str = "") -> str:
  """A flagfile of `config`: every searched field and every field that differs from the defaults.

  `data_dir`/`download` are left out (they depend on the machine, not on the result).
  """
  defaults = TrainConfig()
  lines = [f"# {line}" for line in header.splitlines()]
  full = dict(line[2:].split("=", 1) for line in config.to_flagfile().splitlines())
  for field in dataclasses.fields(config):
    name = field.name
    if name in _MACHINE_FIELDS:
      continue
    if name in searched or getattr(config, name) != getattr(defaults, name):
      lines.append(f"--{name}={full[name]}")
  return "\n".join(lines) + "\n"


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
  """Validation seeds as a tuple; raises ValueError when empty or repeated."""
  seeds = tuple(seeds)
  if not seeds:
    raise errors.InvalidInput("validation_seeds: give at least one seed.")
  if any(not 0 <= s < SEED_LIMIT for s in seeds):
    raise errors.InvalidInput(f"validation_seeds: {list(seeds)}: seeds lie in [0, 2**32).")
  if len(set(seeds)) != len(seeds):
    raise errors.InvalidInput(f"validation_seeds: {list(seeds)} repeats a seed (the splits would "
                              "be the same).")
  return seeds


def tune(base: TrainConfig, space: Space, num_trials: int, initial_trials: int, seed: int = 0,
         validation_per_user: int = 5, validation_seeds: Sequence[int] = (1,),
         out_json: str | os.PathLike | None = None,
         out_flagfile: str | os.PathLike | None = None, previous: Sequence[dict] = (),
         reference: TrainConfig | None = None,
         popularity_penalties: Sequence[float] = (), select_metric: str = "auc") -> dict:
  """Loads the base config's lab split, searches on validation splits, writes the outputs.

  Args:
    base, space, num_trials, initial_trials, seed, previous: as in `search`.
    validation_per_user: as in `tuning_split`.
    validation_seeds: one validation split per seed (`tuning_split`); a trial's objective is
      the mean over them (`validate_mean`).
    out_json, out_flagfile: where the report and the best flagfile go (None: not written).
    reference: when given, `ablation` of the best config against it (on validation).
    popularity_penalties: when given, `penalty_scan` of the best config over them on the
      same validation splits; the report's "popularity_penalty" holds the scan and the best
      (by AUC).
    select_metric: the validation metric the search maximises (`metrics.metric_names`:
      "auc", "ndcg@20", "recall@20", ...); any registered model's fields can be searched.

  Returns:
    the report written to `out_json`: {"base_config", "space", "budget", "split", "trials",
    "best"} (plus "flagfile", "ablation" and "popularity_penalty" when asked for).
  """
  space = check_space(space)
  check_select_metric(select_metric)
  validation_seeds = check_seeds(validation_seeds)
  popularity_penalties = check_penalties(popularity_penalties)
  dataset, train, test = registry.load_split(base)
  splits = [tuning_split(train, validation_per_user, s) for s in validation_seeds]
  fit_matrix, valid_matrix = splits[0]
  report = {
      "base_config": dataclasses.asdict(base),
      "space": {k: list(v) for k, v in space.items()},
      "budget": {"num_trials": num_trials, "initial_trials": initial_trials, "seed": seed},
      "select_metric": select_metric,
      "split": {"dataset": base.dataset, "split_seed": base.split_seed,
                "test_per_user": base.test_per_user, "validation_per_user": validation_per_user,
                "validation_seeds": list(validation_seeds), "users": int(train.shape[0]),
                "items": int(train.shape[1]), "fit_positives": int(fit_matrix.nnz),
                "validation_positives": int(valid_matrix.nnz),
                "test_positives_unused": int(test.nnz)},
      "jax_version": jax.__version__, "device_kind": jax.devices()[0].device_kind,
  }
  del dataset, test  # the test positives play no part in the search

  def save(trials):
    report["trials"] = trials
    if out_json is not None:
      files.write_json_atomic(out_json, report)

  def objective(config):
    return validate_mean(config, splits)

  trials = search(base, space, objective, num_trials, initial_trials, seed, on_trial=save,
                  previous=previous, metric=select_metric)
  best = best_trial(trials, select_metric)
  report["best"] = best
  if reference is not None:
    report["ablation"] = ablation(dataclasses.replace(base, **best["values"]), reference,
                                  list(space), objective, best["metrics"][select_metric],
                                  select_metric)
  penalty_note = ""
  if popularity_penalties:
    scan = penalty_scan(dataclasses.replace(base, **best["values"]), splits,
                        popularity_penalties)
    chosen = max(scan, key=lambda row: row["auc"])
    report["popularity_penalty"] = {"scan": scan, "best": chosen["penalty"],
                                    "best_auc": chosen["auc"]}
    penalty_note = (f"\nbest popularity penalty (scores - p * z(log(1 + item count))): "
                    f"{chosen['penalty']:g}, validation AUC {chosen['auc']:.4f}.")
  if out_flagfile is not None:
    config = dataclasses.replace(base, **best["values"])
    header = (f"Tuned by experiments.tune on {base.dataset} (validation: {validation_per_user} "
              f"train positives per user, seeds {','.join(map(str, validation_seeds))}; split seed "
              f"{base.split_seed}; selected by {select_metric}):\nvalidation AUC "
              f"{best['metrics']['auc']:.4f}, NDCG@20 "
              f"{best['metrics'].get('ndcg@20', math.nan):.4f}, trial "
              f"{best['trial']} of {len(trials)}." + penalty_note)
    files.write_atomic(out_flagfile, flagfile_text(config, list(space), header))
    report["flagfile"] = str(out_flagfile)
  save(trials)
  return report


def check_select_metric(name: str) -> str:
  """`name` if it is an evaluation metric; InvalidInput naming `--select_metric` otherwise."""
  names = metrics.metric_names((10, 20))
  if name not in names:
    raise errors.InvalidInput(f"--select_metric={name!r}: expected one of {', '.join(names)}.")
  return name


def summary(report: dict) -> str:
  """The lines `experiments.tune` prints: the best trial, the penalty scan, the ablation."""
  best, metric = report["best"], report.get("select_metric", "auc")
  lines = [f"best validation {metric} {best['metrics'][metric]:.4f}, AUC "
           f"{best['metrics']['auc']:.4f} (trial {best['trial']} of "
           f"{len(report['trials'])}): {best['values']}"]
  for row in report.get("popularity_penalty", {}).get("scan", []):
    lines.append(f"  popularity penalty {row['penalty']:g}: validation AUC {row['auc']:.4f}")
  for row in report.get("ablation", []):
    lines.append(f"  {row['field']}={row['reference']!r} instead of {row['tuned']!r}: "
                 f"validation {metric} {row[metric]:.4f} ({-row['delta']:+.4f})")
  return "\n".join(lines)


def previous_trials(path: str | os.PathLike, base: TrainConfig, space: Space,
                    validation_per_user: int, validation_seeds: Sequence[int]) -> list[dict]:
  """The trials of an earlier report at `path` ([] when absent) for `search(previous=...)`.

  Raises:
    ValueError: the report was written for another base config, space or validation split.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return []
  try:
    old = json.loads(path.read_text())
  except ValueError as e:
    raise errors.InvalidInput(f"--resume: {path} is not a trials report ({e}); name another "
                              "--out_json.") from e
  if not isinstance(old, dict):
    raise errors.InvalidInput(f"--resume: {path} is not a trials report; name another "
                              "--out_json.")
  old_split = old.get("split", {})
  # Reports written before validation_seeds existed hold one "validation_seed".
  old_seeds = old_split.get("validation_seeds", [old_split.get("validation_seed")])
  same = (old.get("base_config") == json.loads(json.dumps(dataclasses.asdict(base))) and
          old.get("space") == {k: list(v) for k, v in check_space(space).items()} and
          old_split.get("validation_per_user") == validation_per_user and
          old_seeds == list(validation_seeds))
  if not same:
    raise errors.InvalidInput(f"--resume: {path} holds a search with another base config, space "
                              "or validation split; use another --out_json.")
  return old.get("trials", [])
