r"""Trains a model: `python -m experiments.train --flagfile=experiments/configs/X.cfg`.

`--model` picks one of `tripjax.models` (default triplet; popularity is fitted in one go). Every
field of `tripjax.config.TrainConfig` is a flag of the same name. Outputs go to --workdir
(flags.txt, metrics.jsonl, results.json, checkpoints/); rerunning the same command resumes from
the newest checkpoint, and a workdir holding other flags is refused unless --overwrite (which
replaces that run once the new run's data has loaded). Checkpoints are saved every
--checkpoint_every, after the last epoch, and on SIGTERM/SIGINT (then the run stops; rerun to
resume). `--stop_after_epoch=N` trains up to epoch N, saves and exits (rerun to go on): for job
slots shorter than the run.

A job of several processes (hosts, or one process per GPU) runs the same command on each with
`--coordinator_address`, `--num_processes`, `--process_id` (or under `srun`/`mpirun`, which
describe the job themselves) and a `--mesh` over all their devices; each process draws its
share of every batch and process 0 alone writes the workdir, which all of them read (a shared
file system).
"""

import dataclasses

from absl import flags
from absl import logging
import jax

from experiments import config_flags
from experiments import data_flags
from experiments import job_flags
from experiments import run_cli
from tripjax import checkpoint
from tripjax import config as config_lib
from tripjax import distributed
from tripjax import errors
from tripjax import train

_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Output folder; default runs/<dataset>.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a previous run in --workdir that has other flags (deleted "
    "once this run's data has loaded; a run with the same flags is resumed).")
_CHECKPOINT_EVERY = flags.DEFINE_string(
    "checkpoint_every", train.DEFAULT_CHECKPOINT_EVERY,
    "Save a checkpoint every N epochs (5) or minutes (10m); always after the last epoch and "
    "on SIGTERM/SIGINT.")
_STOP_AFTER_EPOCH = flags.DEFINE_integer(
    "stop_after_epoch", None, "Stop after this epoch of the run (checkpointed; rerun the same "
    "command, without this flag or with a later epoch, to go on). Default: train to --epochs. "
    "Models fitted in one go (not epoch by epoch) ignore it.",
    lower_bound=1)
_MODEL_FLAGS = config_flags.define([f.name for f in dataclasses.fields(config_lib.TrainConfig)
                                    if f.name not in config_lib.DATA_FIELDS])


@flags.validator("checkpoint_every")
def _check_every(text):
  try:
    checkpoint.Every.parse(text)
  except errors.InvalidInput as e:
    raise flags.ValidationError(str(e)) from None
  return True


def main(argv):
  del argv
  job_flags.initialize()
  # Orbax logs every save step at INFO; keep the log to the training's own lines.
  logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)
  config = config_lib.TrainConfig(**config_flags.values(data_flags.DATA),
                                  **config_flags.values(_MODEL_FLAGS))
  workdir = _WORKDIR.value or f"runs/{config.dataset}"
  logging.info("JAX %s on %s; workdir %s", jax.__version__, jax.devices(), workdir)
  results = train.train_and_evaluate(config, workdir, overwrite=_OVERWRITE.value,
                                     checkpoint_every=_CHECKPOINT_EVERY.value,
                                     stop_after_epoch=_STOP_AFTER_EPOCH.value)
  if not distributed.is_writer():
    return  # process 0 writes the results and prints them
  if results.get("finished") is False:
    print(f"{config.dataset}: stopped after epoch {results['epoch']} of {config.epochs} "
          f"(--stop_after_epoch); its checkpoint is in {workdir}: rerun without "
          "--stop_after_epoch to go on.")
    return
  model, popularity = results["model"], results["popularity"]
  print(f"{config.dataset}: AUC {model['auc']:.4f} (popularity {popularity['auc']:.4f}), "
        f"recall@20 {model['recall@20']:.4f} (popularity {popularity['recall@20']:.4f}); "
        f"{results['train_seconds']:.1f}s training; results in {workdir}/results.json")


if __name__ == "__main__":
  run_cli.run(main)
