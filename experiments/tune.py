r"""Tunes the triplet model on a validation split carved out of train; writes the best flagfile.

  python -m experiments.tune --dataset=ml-100k --out_flagfile=/tmp/ml100k.cfg \
      --ablate_against=experiments/configs/ml1m_lab.cfg

(the data flags are every script's, `--dataset=ml-100k` to tune on ML-100K; they override
the base flagfile's where given; 40 trials over the grid of the `--search_*` flags, or when
none is given over the model's default grid, `tripjax.tuning.DEFAULT_SPACES[--model]`; any
registered model: `--model=ease` in the base flagfile or on the command line;
`--select_metric=ndcg@20` selects by NDCG@20 instead of AUC).

The test positives of the lab split (`--split_seed`, `--test_per_user`) are never looked at:
`--validation_per_user` more positives of every user are moved out of TRAIN, models are fitted
on the rest, and each trial is scored by the mean AUC of those validation positives against all
items not in the fitted matrix (averaged over the splits of `--validation_seeds` when several
are given: less noise, one fit per split). The search draws `--initial_trials` distinct points
of the grid at random (seeded), then walks one grid step at a time along each axis from the
best point while it improves, until `--num_trials` trials have run. The result JSON is
rewritten after every trial; the flagfile holds the best point (the fields that differ from
`TrainConfig`'s defaults, plus every searched field) and trains the final model on the full
train split with `python -m experiments.train --flagfile=...`. The search itself lives in
`tripjax.tuning`.
"""

from __future__ import annotations

import dataclasses
import pathlib

from absl import app
from absl import flags

from experiments import data_flags
from experiments import run_cli
from tripjax import files
from tripjax import models
from tripjax import tuning
from tripjax.config import DRIVER_FLAGS, SEED_LIMIT, TrainConfig

_BASE_FLAGFILE = flags.DEFINE_string(
    "base_flagfile", None, "A TrainConfig flagfile the searched fields are applied to "
    "(default: TrainConfig's defaults).")
_STEPS_PER_DISPATCH = flags.DEFINE_integer("steps_per_dispatch", None,
                                           "Override the base's batches per jitted call.",
                                           lower_bound=1)
_VALIDATION_PER_USER = flags.DEFINE_integer(
    "validation_per_user", 5, "Train positives per user held out for validation.", lower_bound=1)
_VALIDATION_SEEDS = flags.DEFINE_list(
    "validation_seeds", ["1"], "Seeds of the validation splits; a trial's objective is the "
    "mean validation AUC over them (one fit per split).")
_NUM_TRIALS = flags.DEFINE_integer("num_trials", 40, "Total trials.", lower_bound=1)
_INITIAL_TRIALS = flags.DEFINE_integer("initial_trials", 12, "Random-stage trials.",
                                       lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 1, "Seed of the random stage.", lower_bound=0,
                             upper_bound=SEED_LIMIT - 1)
_OUT_JSON = flags.DEFINE_string("out_json", None, "Where the trials go (JSON; default "
                                "runs/tune-<dataset>/trials.json).")
_OUT_FLAGFILE = flags.DEFINE_string("out_flagfile", None, "Where the best flagfile goes "
                                    "(default runs/tune-<dataset>/best.cfg).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an earlier search at --out_json "
                                "(without --resume or this, it is refused).")
_RESUME = flags.DEFINE_bool("resume", False, "Reuse the trials of an existing --out_json "
                            "written with the same base, space and split.")
_ABLATE_AGAINST = flags.DEFINE_string(
    "ablate_against", None, "A flagfile (e.g. the lab's); after the search, each searched "
    "field of the best config is put back to its value there, one at a time, on validation.")
_POPULARITY_PENALTIES = flags.DEFINE_list(
    "popularity_penalties", [], "After the search, score the best config with "
    "`scores - p * z(log(1 + item count))` for each p (post hoc, same fits) on the validation "
    "splits; the report holds the scan and the best p.")
_MODEL = flags.DEFINE_enum("model", None, list(models.NAMES),
                           "The model to tune (overrides the base flagfile's).")
_SELECT_METRIC = flags.DEFINE_string(
    "select_metric", "auc", "The validation metric the search maximises (auc, ndcg@20, "
    "recall@20, ...).")
_SPACE = {name: flags.DEFINE_list(
    f"search_{name}", None,
    f"Values of --{name} to search: {TrainConfig.__dataclass_fields__[name].metadata['help']}")
          for name in tuning.SEARCHABLE}


def main(argv):
  del argv
  try:
    base = (TrainConfig.from_flagfile(_BASE_FLAGFILE.value, ignore=DRIVER_FLAGS)
            if _BASE_FLAGFILE.value else TrainConfig())
    # The data flags given on the command line override the base's.
    overrides = {name: holder.value for name, holder in data_flags.DATA.items()
                 if holder.present}
    if _MODEL.value:
      overrides["model"] = _MODEL.value
    if _STEPS_PER_DISPATCH.value is not None:
      overrides["steps_per_dispatch"] = _STEPS_PER_DISPATCH.value
    base = dataclasses.replace(base, **overrides)
    out_dir = f"runs/tune-{base.dataset}"
    out_json = _OUT_JSON.value or f"{out_dir}/trials.json"
    out_flagfile = _OUT_FLAGFILE.value or f"{out_dir}/best.cfg"
    files.check_outputs({"out_json": out_json, "out_flagfile": out_flagfile},
                        {"the --base_flagfile": _BASE_FLAGFILE.value,
                         "the --ablate_against flagfile": _ABLATE_AGAINST.value})
    if _RESUME.value and _OVERWRITE.value:
      raise ValueError("--resume continues the search at --out_json and --overwrite replaces "
                       "it: pass one of them.")
    if pathlib.Path(out_json).exists() and not (_RESUME.value or _OVERWRITE.value):
      raise ValueError(f"--out_json={out_json} holds an earlier search; pass --resume to "
                       "continue it, --overwrite to replace it, or name another --out_json.")
    try:
      validation_seeds = tuning.check_seeds(int(s) for s in _VALIDATION_SEEDS.value)
    except ValueError as e:
      raise ValueError(f"--validation_seeds={','.join(_VALIDATION_SEEDS.value)}: {e}") from e
    given = {name: flag.value for name, flag in _SPACE.items() if flag.value is not None}
    if not given and base.model not in tuning.DEFAULT_SPACES:
      raise ValueError(f"--model={base.model} has no default grid; give --search_<field> flags.")
    space = tuning.parse_space(given or tuning.DEFAULT_SPACES[base.model])
    try:
      penalties = tuning.check_penalties(_POPULARITY_PENALTIES.value)
    except ValueError as e:
      raise ValueError(f"--popularity_penalties={','.join(_POPULARITY_PENALTIES.value)}: "
                       f"{e}") from e
    reference = (TrainConfig.from_flagfile(_ABLATE_AGAINST.value, ignore=DRIVER_FLAGS)
                 if _ABLATE_AGAINST.value else None)
    previous = (tuning.previous_trials(out_json, base, space, _VALIDATION_PER_USER.value,
                                       validation_seeds)
                if _RESUME.value else [])
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  report = tuning.tune(base, space, _NUM_TRIALS.value, _INITIAL_TRIALS.value, _SEED.value,
                       _VALIDATION_PER_USER.value, validation_seeds, out_json, out_flagfile,
                       previous, reference, penalties, _SELECT_METRIC.value)
  print(f"trials in {out_json}; best flagfile {out_flagfile}")
  print(tuning.summary(report))


if __name__ == "__main__":
  run_cli.run(main)
