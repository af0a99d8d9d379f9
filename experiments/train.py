r"""Trains the triplet model: `python -m experiments.train --flagfile=experiments/configs/X.cfg`.

Every field of `tripjax.config.TrainConfig` is a flag of the same name. Outputs go to --workdir
(flags.txt, metrics.jsonl, results.json, checkpoints/); rerunning the same command resumes from
the newest checkpoint, and a workdir holding other flags is refused unless --overwrite (which
replaces that run once the new run's data has loaded). Checkpoints are saved every
--checkpoint_every, after the last epoch, and on SIGTERM/SIGINT (then the run stops; rerun to
resume).
"""

from absl import flags
from absl import logging
import jax

from experiments import run_cli
from tripjax import checkpoint
from tripjax import config as config_lib
from tripjax import train

_DEFAULTS = config_lib.TrainConfig.__dataclass_fields__

_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Output folder; default runs/<dataset>.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a previous run in --workdir that has other flags (deleted "
    "once this run's data has loaded; a run with the same flags is resumed).")
_CHECKPOINT_EVERY = flags.DEFINE_string(
    "checkpoint_every", train.DEFAULT_CHECKPOINT_EVERY,
    "Save a checkpoint every N epochs (5) or minutes (10m); always after the last epoch and "
    "on SIGTERM/SIGINT.")


def _default(name):
  return _DEFAULTS[name].default


_FIELDS = {
    "dataset": flags.DEFINE_enum("dataset", _default("dataset"), config_lib.dataset_names(),
                                 "Dataset name (MovieLens or synthetic-<preset>)."),
    "data_dir": flags.DEFINE_string(
        "data_dir", "", "Folder holding the MovieLens release (or its parent); used or "
        "refused, never replaced. Empty: $TRIPJAX_DATA_DIR, then ~/.cache/tripjax, then a "
        "download."),
    "download": flags.DEFINE_bool("download", _default("download"),
                                  "Download a missing MovieLens release."),
    "threshold": flags.DEFINE_float("threshold", _default("threshold"),
                                    "Ratings >= threshold are positives.", lower_bound=0.0),
    "min_user_positives": flags.DEFINE_integer(
        "min_user_positives", _default("min_user_positives"),
        "Drop users with fewer positives.", lower_bound=1),
    "test_per_user": flags.DEFINE_integer("test_per_user", _default("test_per_user"),
                                          "Held-out positives per user.", lower_bound=1),
    "split_seed": flags.DEFINE_integer("split_seed", _default("split_seed"),
                                       "Seed of the leave-k-out split."),
    "data_seed": flags.DEFINE_integer("data_seed", _default("data_seed"),
                                      "Seed of synthetic data."),
    "dim": flags.DEFINE_integer("dim", _default("dim"), "Embedding size.", lower_bound=1),
    "init_scale": flags.DEFINE_float("init_scale", _default("init_scale"),
                                     "Std of the initial embeddings."),
    "margin": flags.DEFINE_float("margin", _default("margin"), "Triplet margin (cosine).",
                                 lower_bound=0.0),
    "optimizer": flags.DEFINE_enum("optimizer", _default("optimizer"), config_lib.OPTIMIZERS,
                                   "Optimizer; sparse_* update only the gathered rows."),
    "learning_rate": flags.DEFINE_float("learning_rate", _default("learning_rate"),
                                        "(Peak) learning rate."),
    "schedule": flags.DEFINE_enum("schedule", _default("schedule"), config_lib.SCHEDULES,
                                  "Learning-rate schedule."),
    "warmup_steps": flags.DEFINE_integer("warmup_steps", _default("warmup_steps"),
                                         "Warmup steps of warmup_cosine.", lower_bound=0),
    "batch_size": flags.DEFINE_integer("batch_size", _default("batch_size"),
                                       "Triplets per step.", lower_bound=1),
    "epochs": flags.DEFINE_integer("epochs", _default("epochs"), "Training epochs.",
                                   lower_bound=1),
    "num_negatives": flags.DEFINE_integer(
        "num_negatives", _default("num_negatives"),
        "Negative candidates per triplet (the hardest is trained on).", lower_bound=1),
    "negative_exponent": flags.DEFINE_float(
        "negative_exponent", _default("negative_exponent"),
        "Negatives drawn with probability ~ (1 + item's train positives) ** e among the "
        "user's missing items; 0: uniformly.", lower_bound=0.0),
    "l2": flags.DEFINE_float("l2", _default("l2"), "L2 weight on gathered embeddings.",
                             lower_bound=0.0),
    "popularity_penalty": flags.DEFINE_float(
        "popularity_penalty", _default("popularity_penalty"),
        "Scores are cos(u, i) - p * z(log(1 + item count)); 0: the cosine alone.",
        lower_bound=0.0),
    "seed": flags.DEFINE_integer("seed", _default("seed"), "Seed of init and sampling."),
    "eval_every": flags.DEFINE_integer("eval_every", _default("eval_every"),
                                       "Evaluate every N epochs.", lower_bound=1),
    "steps_per_dispatch": flags.DEFINE_integer(
        "steps_per_dispatch", _default("steps_per_dispatch"),
        "Batches per jitted call (lax.scan chunk).", lower_bound=1),
    "fused_cpu_step": flags.DEFINE_bool(
        "fused_cpu_step", _default("fused_cpu_step"),
        "Run each batch through the fused C++ kernel (CPU, --optimizer=sparse_sgd; compiled "
        "on first use with $CXX, else c++)."),
    "eval_block_size": flags.DEFINE_integer("eval_block_size", _default("eval_block_size"),
                                            "Users per evaluation block.", lower_bound=1),
}
assert set(_FIELDS) == set(_DEFAULTS), set(_DEFAULTS) ^ set(_FIELDS)

for _name in ("learning_rate", "init_scale"):
  flags.register_validator(_name, lambda value: value > 0, message="must be positive")
flags.register_validator("checkpoint_every", lambda text: bool(_every_or_none(text)),
                         message="expected a positive number of epochs (5) or minutes (10m)")
flags.register_multi_flags_validator(
    ["fused_cpu_step", "optimizer"],
    lambda values: not values["fused_cpu_step"] or values["optimizer"] == "sparse_sgd",
    message="--fused_cpu_step applies row-sparse SGD: it needs --optimizer=sparse_sgd")


def _every_or_none(text):
  try:
    return checkpoint.Every.parse(text)
  except ValueError:
    return None


def main(argv):
  del argv
  # Orbax logs every save step at INFO; keep the log to the training's own lines.
  logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)
  config = config_lib.TrainConfig(**{name: flag.value for name, flag in _FIELDS.items()})
  workdir = _WORKDIR.value or f"runs/{config.dataset}"
  logging.info("JAX %s on %s; workdir %s", jax.__version__, jax.devices(), workdir)
  results = train.train_and_evaluate(config, workdir, overwrite=_OVERWRITE.value,
                                     checkpoint_every=_CHECKPOINT_EVERY.value)
  model, popularity = results["model"], results["popularity"]
  print(f"{config.dataset}: AUC {model['auc']:.4f} (popularity {popularity['auc']:.4f}), "
        f"recall@20 {model['recall@20']:.4f} (popularity {popularity['recall@20']:.4f}); "
        f"{results['train_seconds']:.1f}s training; results in {workdir}/results.json")


if __name__ == "__main__":
  run_cli.run(main)
