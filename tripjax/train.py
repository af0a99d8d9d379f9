"""A training run in a workdir: `train_and_evaluate(config, workdir)` and `restore_run(workdir)`.

The run: lock and claim the workdir (`tripjax.workdir`), load the data, then for an iterative
model (`tripjax.models`, `Model.iterative`: the triplet model) resume from the newest checkpoint
that restores and train with `loop.fit` (evaluating every `eval_every` epochs, saving on the
`checkpoint_every` schedule, at the end and on SIGTERM/SIGINT); any other model is fitted once
and saved as the checkpoint of epoch `config.epochs`. Then evaluate the model and the
popularity baseline and write `results.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import time
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import scipy.sparse as sp

from tripjax import baselines
from tripjax import checkpoint
from tripjax import distributed
from tripjax import errors
from tripjax import files
from tripjax import loop
from tripjax import metrics
from tripjax import model
from tripjax import models
from tripjax import sampling
from tripjax import sharding
from tripjax import stop_signals
from tripjax import workdir as workdir_lib
from tripjax.config import TrainConfig
from tripjax.data import registry
from tripjax.metrics import cold
from tripjax.train_step import TrainState

# How often a run saves by default (`--checkpoint_every`); it also saves at its end and when
# SIGTERM/SIGINT asks it to stop.
DEFAULT_CHECKPOINT_EVERY = "10m"


class RunNotFound(errors.WorkdirError, FileNotFoundError):
  """The folder holds no trained run (no flags.txt, or no finished checkpoint)."""


class Run(NamedTuple):
  """A finished (or checkpointed) run, as `restore_run` rebuilds it."""
  config: TrainConfig
  dataset: Any  # tripjax.data.ImplicitDataset
  train: sp.csr_matrix  # bool [U, I]
  test: sp.csr_matrix  # bool [U, I]
  params: Any  # the model's params (`models.get(config.model)`) of the latest checkpoint
  history: list  # metrics.jsonl entries up to the latest checkpoint, one dict per evaluation
  results: dict | None  # results.json, or None if the run did not finish


def evaluate(score_fn, train, test, block_size: int, mesh: str = "") -> dict[str, float]:
  """Mean metrics of a score function (`tripjax.metrics.evaluate`), as plain floats; users
  split over the `data` axis of `mesh` (`--mesh`) when given."""
  result = metrics.evaluate(score_fn, train, test, ks=(10, 20), block_size=block_size,
                            mesh=sharding.make_mesh(mesh) if mesh else None)
  return {k: float(v) for k, v in result.means.items()}


def _mesh_alone(config: TrainConfig) -> str:
  """The mesh of an evaluation process 0 runs by itself: none under jax.distributed (the run's
  mesh spans the other processes' devices too), else the run's."""
  return "" if jax.process_count() > 1 else config.mesh


def _dataset_summary(config, dataset, train, test) -> dict:
  num_users, num_items = train.shape
  summary = {"name": config.dataset, "users": int(num_users), "items": int(num_items),
             "positives": int(dataset.matrix.nnz), "train_positives": int(train.nnz),
             "test_positives": int(test.nnz),
             "density": float(dataset.matrix.nnz) / max(num_users * num_items, 1)}
  low = registry.load_low_ratings(config)
  if low is not None:  # trained on too, with weight --low_rating_weight
    summary["low_ratings"] = int(low.nnz)
  high = registry.training_high_ratings(config, train)
  if high is not None:  # they weigh --high_rating_weight
    summary["high_ratings"] = int(high.nnz)
  return summary


def _resume(ckpts: checkpoint.Checkpoints, config: TrainConfig, train: sp.csr_matrix,
            workdir: pathlib.Path) -> tuple[loop.Start, list[dict]]:
  """Where to continue: the newest checkpoint that restores, or a fresh start.

  A damaged checkpoint is moved to `workdir/damaged_checkpoints/` and the one before it used.
  A resumed run keeps the shuffle it started with (the default depends on the backend) and its
  sampler's draw (runs saved before `draw_order` existed drew "shuffled").

  Returns:
    (the start for `loop.fit`, the metrics history up to it).
  """
  sampler, optimizer, state = loop.prepare_training(config, train)

  def newest():
    found = ckpts.restore_newest(state.params, state.opt_state,
                                 quarantine=workdir / workdir_lib.DAMAGED_DIR)
    if found is None and (workdir / workdir_lib.METRICS_FILE).exists():
      workdir_lib.write_history(workdir, [])
    return found

  # Process 0 picks the checkpoint (moving damaged ones aside); the others read the same one.
  restored = distributed.on_writer(newest, f"restore a checkpoint of {ckpts.directory}")
  epoch = int(distributed.gather_ints([-1 if restored is None else restored.epoch])[0, 0])
  if restored is None and epoch >= 0:
    restored = checkpoint.Restored(epoch, *ckpts.restore(epoch, state.params, state.opt_state))
  if restored is None:
    return loop.Start(sampler, optimizer, state, 0, 0.0), []
  shuffle_on = restored.meta.get("shuffle_on", sampler.shuffle_on)
  draw_order = restored.meta.get("draw_order", "shuffled")
  if (shuffle_on, draw_order) != (sampler.shuffle_on, sampler.draw_order):
    sampler, optimizer, _ = loop.prepare_training(config, train, shuffle_on, draw_order)
  state = TrainState(jax.tree.map(jnp.asarray, restored.params),
                     jax.tree.map(jnp.asarray, restored.opt_state),
                     jnp.asarray(restored.step, jnp.int32))
  epoch = int(restored.meta["epoch"])
  history = [h for h in workdir_lib.read_history(workdir) if h["epoch"] <= epoch]
  if distributed.is_writer():
    workdir_lib.write_history(workdir, history)
  logging.info("Resumed from the checkpoint of epoch %d (step %d).", epoch, int(restored.step))
  start = loop.Start(sampler, optimizer, state, epoch, float(restored.meta["train_seconds"]))
  return start, history


def train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike, *,
                       overwrite: bool = False, stop_after_epoch: int | None = None,
                       checkpoint_every: str = DEFAULT_CHECKPOINT_EVERY) -> dict:
  """Trains (resuming from the workdir's newest checkpoint), evaluates, writes the results.

  The workdir is locked for the whole run. A run exists once its data has loaded: only then
  are its flags written (and, with `overwrite`, an older run with other flags deleted).
  Checkpoints are saved on the `checkpoint_every` schedule, after the last epoch, and when
  SIGTERM/SIGINT asks the run to stop (at the end of the epoch in progress).

  Args:
    config: the run's settings.
    workdir: output folder (`tripjax.workdir`: flags.txt, metrics.jsonl, results.json,
      checkpoints/).
    overwrite: replace a previous run with different settings instead of refusing (a run
      with the same settings is resumed either way).
    stop_after_epoch: return after this many epochs in total (checkpointed), as a pre-empted
      job would; rerunning resumes. A run already past it returns at once, where it stands.
      None trains to `config.epochs`. Models fitted in one go ignore it.
    checkpoint_every: `checkpoint.Every.parse` text: `5` (epochs) or `10m` (minutes).

  Returns:
    The results.json dict (or, when stopped early, {"finished": False, "epoch": ...}).

  Raises:
    workdir.WorkdirConflict: the workdir holds a different run and `overwrite` is False.
    workdir.WorkdirLocked: another process is training into the workdir.
    loop.TrainingDiverged: the loss became NaN/Inf (the last saved checkpoint is kept).
    errors.Stopped: SIGTERM/SIGINT stopped the run (its checkpoint is saved).
  """
  every = checkpoint.Every.parse(checkpoint_every)
  if config.mesh:
    sharding.make_mesh(config.mesh)  # refused now, before the workdir is touched
  workdir = pathlib.Path(workdir)
  writer = distributed.is_writer()
  with (workdir_lib.locked(workdir) if writer else contextlib.nullcontext(),
        stop_signals.StopRequests() as stop):
    replace = distributed.on_writer(lambda: workdir_lib.claim(config, workdir, overwrite),
                                    f"claim {workdir}")
    data_started = time.perf_counter()
    dataset, train, test = registry.load_split(config)
    registry.load_features(config)  # a feature the data lacks: refused before a run is replaced
    low = registry.load_low_ratings(config)
    if models.get(config.model).iterative:  # so are more negatives than memory holds
      sampling.check_epoch_memory(
          train.nnz + (0 if low is None else low.nnz), config.num_negatives,
          sampling.is_weighted(config.negative_exponent, config.cold_item_fraction > 0))
    fingerprint, older = workdir_lib.run_fingerprints(
        train, test, low, registry.training_high_ratings(config, train))
    distributed.on_writer(  # resuming on changed data: refused
        lambda: None if replace else workdir_lib.check_data(workdir, fingerprint, older),
        f"check the data of the run in {workdir}")
    phases = {"data": time.perf_counter() - data_started}
    fresh = writer and (replace or not workdir_lib.holds_run_files(workdir))

    def start_run():
      if replace:
        workdir_lib.replace_run(workdir)
      workdir_lib.write_config(config, workdir)
      workdir_lib.write_data(workdir, fingerprint)

    with workdir_lib.taken_back_on_failure(workdir, fresh):
      distributed.on_writer(start_run, f"write the run's flags in {workdir}")
      ckpts = checkpoint.Checkpoints(workdir / workdir_lib.CHECKPOINT_DIR,
                                     read_only=not writer)
      try:
        if not models.get(config.model).iterative:
          return _fit_once(config, workdir, ckpts, dataset, train, test, phases)
        return _train(config, workdir, ckpts, dataset, train, test, every, stop,
                      stop_after_epoch, phases)
      finally:
        ckpts.close()


def _train(config, workdir, ckpts, dataset, train, test, every, stop, stop_after_epoch,
           phases):
  """`train_and_evaluate` of an iterative model once the workdir is claimed and the data
  loaded."""
  score_fn = models.get(config.model).score_fn
  offset = model.popularity_offset(train, config.popularity_penalty)
  start, history = _resume(ckpts, config, train, workdir)
  sampler = start.sampler
  logging.info("%s: %d users x %d items, %d train / %d test positives; %d epochs of %d "
               "batches of %d (%s shuffle).", config.dataset, train.shape[0], train.shape[1],
               train.nnz, test.nnz, config.epochs, sampler.num_batches, config.batch_size,
               sampler.shuffle_on)
  results_path = workdir / workdir_lib.RESULTS_FILE
  if start.epoch >= config.epochs and results_path.exists():
    logging.info("The run in %s is already finished.", workdir)
    return json.loads(results_path.read_text())
  # A run already past `stop_after_epoch` stays where it is.
  last_epoch = (config.epochs if stop_after_epoch is None
                else max(start.epoch, min(stop_after_epoch, config.epochs)))
  saved = {"epoch": start.epoch, "at": time.perf_counter()}
  run_started = time.perf_counter()
  writer, several = distributed.is_writer(), jax.process_count() > 1
  # Under jax.distributed with a mesh every process evaluates its share of the users (a
  # collective); without one, each process holds the whole model and process 0 evaluates.
  evaluates = writer or bool(config.mesh)

  def on_epoch(state, stats):
    epoch = stats["epoch"]
    entry = dict(stats)
    if writer:
      ckpts.seal_committed()  # the last epoch's save, if Orbax has committed it
    evaluate_now = epoch % config.eval_every == 0 or epoch == config.epochs
    params, opt_state = state.params, state.opt_state
    if evaluate_now and evaluates:
      eval_started = time.perf_counter()
      entry.update(evaluate(score_fn(params, offset), train, test, config.eval_block_size,
                            config.mesh))
      entry["eval_seconds"] = time.perf_counter() - eval_started
    if evaluate_now and writer:
      history.append(entry)
      workdir_lib.write_history(workdir, history)
    # Every process takes process 0's saving schedule and stops when any of them is asked to.
    asked = distributed.gather_ints(
        [every.due(epoch - saved["epoch"], time.perf_counter() - saved["at"]),
         stop.signum or 0])
    stop_signum = int(asked[:, 1].max())
    save_now = epoch == last_epoch or stop_signum or bool(asked[0, 0])
    if save_now and several:
      params, opt_state = sharding.host_copy((state.params, state.opt_state))
    # Saved only after the epoch's metrics.jsonl line is written: a committed checkpoint always
    # has its line, and lines ahead of the checkpoints (a kill in between) are dropped and
    # recomputed on resume.
    if save_now:
      if writer:
        ckpts.save(epoch, params, opt_state, state.step,
                   {"epoch": epoch, "seed": config.seed,
                    "train_seconds": stats["train_seconds"], "shuffle_on": sampler.shuffle_on,
                    "draw_order": sampler.draw_order})
      saved.update(epoch=epoch, at=time.perf_counter())
    eta = (time.perf_counter() - run_started) / (epoch - start.epoch) * (config.epochs - epoch)
    logging.info("epoch %d/%d  loss %.4f  active %.3f  %s%.3g triplets/s (sampling %.0f%%)"
                 "  ETA %.0fs", epoch, config.epochs, stats["loss"], stats["active_fraction"],
                 f"AUC {entry['auc']:.4f}  " if "auc" in entry else "",
                 stats["triplets_per_sec"],
                 100 * stats["sample_seconds"] / stats["epoch_seconds"], eta)
    if stop_signum:
      ckpts.wait()
      name = stop.name or f"signal {stop_signum} to another process"
      raise errors.Stopped(f"stopped by {name} after epoch {epoch} of {config.epochs}; "
                           f"its checkpoint is saved in {ckpts.directory}: rerun the same "
                           "command to resume.", stop_signum)

  def diverged_note():
    return (f"The checkpoint of epoch {saved['epoch']} is kept; " if saved["epoch"]
            else "No checkpoint was saved yet; ")

  fitted = loop.fit(config, train, start=start, stop_epoch=last_epoch, compile_ahead=True,
                    on_epoch=on_epoch, diverged_note=diverged_note)
  ckpts.wait()
  if last_epoch < config.epochs:
    return {"finished": False, "epoch": last_epoch}
  params = sharding.host_copy(fitted.state.params) if several else fitted.state.params
  if not writer:
    return {"finished": True, "epoch": config.epochs, "writer": False}
  final = history[-1] if history and history[-1]["epoch"] == config.epochs else None
  final_score_fn = score_fn(params, offset)
  eval_started = time.perf_counter()
  # (A run resumed after its last epoch but before its results: process 0 alone evaluates.)
  model_metrics = ({k: v for k, v in final.items() if k not in _TRAIN_KEYS} if final else
                   evaluate(final_score_fn, train, test, config.eval_block_size,
                            _mesh_alone(config)))
  phases["evaluate"] = final["eval_seconds"] if final else time.perf_counter() - eval_started
  train_seconds = fitted.train_seconds
  return _write_results(config, workdir, dataset, train, test, model_metrics, final_score_fn, {
      "steps": int(fitted.state.step), "train_seconds": train_seconds,
      "compile_seconds": fitted.compile_seconds,
      "sampler": {"shuffle_on": sampler.shuffle_on, "draw_order": sampler.draw_order},
      "triplets_per_sec": (config.epochs * sampler.num_positives / train_seconds
                           if train_seconds else None),
      "phases": phases})


def _fit_once(config, workdir, ckpts, dataset, train, test, phases) -> dict:
  """`train_and_evaluate` of a model fitted in one go (`Model.iterative` False).

  Its params are saved as the checkpoint of epoch `config.epochs` (no optimizer state), so
  `restore_run` and the scripts read the workdir like any other.
  """
  results_path = workdir / workdir_lib.RESULTS_FILE
  if ckpts.latest_epoch() == config.epochs and results_path.exists():
    logging.info("The run in %s is already finished.", workdir)
    return json.loads(results_path.read_text())
  the_model = models.get(config.model)
  started = time.perf_counter()
  params = jax.block_until_ready(the_model.fit(config, train, key=jax.random.key(config.seed)))
  train_seconds = time.perf_counter() - started
  if not distributed.is_writer():  # every process fits the same model; process 0 writes it
    return {"finished": True, "epoch": config.epochs, "writer": False}
  ckpts.save_params(config.epochs, params, {"epoch": config.epochs, "seed": config.seed,
                                            "train_seconds": train_seconds})
  ckpts.wait()
  offset = model.popularity_offset(train, config.popularity_penalty)
  score_fn = the_model.score_fn(params, offset)
  eval_started = time.perf_counter()
  model_metrics = evaluate(score_fn, train, test, config.eval_block_size, _mesh_alone(config))
  phases["evaluate"] = time.perf_counter() - eval_started
  return _write_results(config, workdir, dataset, train, test, model_metrics, score_fn, {
      "steps": 0, "train_seconds": train_seconds, "compile_seconds": 0.0, "sampler": None,
      "triplets_per_sec": None, "phases": phases})


def _write_results(config, workdir, dataset, train, test, model_metrics: dict, score_fn,
                   facts: dict) -> dict:
  """results.json of a finished run: the model's and popularity's metrics, the run's facts.

  With cold items (`--cold_item_fraction`) also `cold_items`: the model's, popularity by
  genre's and random scores' metrics over them (`tripjax.metrics.cold.cold_report`).

  Args:
    model_metrics: the model's final means (`evaluate`).
    score_fn: the model's final ScoreFn.
    facts: `steps`, `train_seconds`, `compile_seconds`, `sampler` ({"shuffle_on",
      "draw_order"} or None), `triplets_per_sec` (or None) and `phases` ({"data": the
      seconds loading, filtering and splitting, "evaluate": the final evaluation's}).
  """
  train_seconds = facts["train_seconds"]
  popularity_started = time.perf_counter()
  popularity = evaluate(baselines.popularity_scores(train), train, test, config.eval_block_size)
  popularity_seconds = time.perf_counter() - popularity_started
  device = jax.devices()[0]
  results = {
      "config": dataclasses.asdict(config),
      "dataset": _dataset_summary(config, dataset, train, test),
      "model": model_metrics,
      "popularity": popularity,
      "epochs": config.epochs,
      "steps": facts["steps"],
      "train_seconds": train_seconds,
      "compile_seconds": facts["compile_seconds"],
      # Wall seconds of each phase: loading, filtering and splitting the data; compiling the
      # step; training (sampling included); the model's final evaluation; popularity's.
      "phase_seconds": {"data": facts["phases"]["data"], "compile": facts["compile_seconds"],
                        "train": train_seconds, "evaluate": facts["phases"]["evaluate"],
                        "popularity": popularity_seconds},
      "sampler": facts["sampler"],
      "triplets_per_sec": facts["triplets_per_sec"],
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
  }
  if dataset.cold_items is not None:
    results["cold_items"] = cold.cold_report(score_fn, dataset, train, config.eval_block_size,
                                             config.seed)
    logging.info("Cold items (%d): AUC %.4f, recall@20 %.4f (popularity by genre %s, random "
                 "%.4f).", results["cold_items"]["items"], results["cold_items"]["model"]["auc"],
                 results["cold_items"]["model"]["recall@20"],
                 f"{results['cold_items']['popularity_by_genre']['auc']:.4f}"
                 if results["cold_items"]["popularity_by_genre"] else "n/a",
                 results["cold_items"]["random"]["auc"])
  files.write_json_atomic(workdir / workdir_lib.RESULTS_FILE, results)
  logging.info("Final AUC %.4f (popularity %.4f); %.1fs of training, %.3g triplets/s.",
               model_metrics.get("auc", math.nan), popularity.get("auc", math.nan),
               train_seconds, facts["triplets_per_sec"] or 0.0)
  return results


_TRAIN_KEYS = ("epoch", "step", "loss", "active_fraction", "triplets_per_sec", "epoch_seconds",
               "sample_seconds", "train_seconds", "eval_seconds")


def restore_run(workdir: str | os.PathLike) -> Run:
  """Rebuilds a run from its workdir: config, data split, newest parameters, history, results.

  A damaged newest checkpoint is skipped (with a warning) for the newest one that restores.

  Raises:
    FileNotFoundError: the folder has no flags.txt or no finished checkpoint.
  """
  workdir = pathlib.Path(workdir)
  try:
    config = workdir_lib.read_config(workdir)
  except FileNotFoundError:
    raise RunNotFound(f"{workdir} is not a tripjax training folder (no "
                      f"{workdir_lib.FLAGS_FILE}); train one with python -m experiments.train "
                      "--workdir=...") from None
  ckpt_dir = workdir / workdir_lib.CHECKPOINT_DIR
  restored = None
  if workdir_lib.holds_checkpoints(workdir):
    dataset, train, test = registry.load_split(config)
    workdir_lib.check_data(workdir, *workdir_lib.run_fingerprints(
        train, test, registry.load_low_ratings(config),
        registry.training_high_ratings(config, train)))
    like = models.get(config.model).params_like(config, train)
    ckpts = checkpoint.Checkpoints(ckpt_dir, read_only=True)  # training may be saving
    try:
      restored = ckpts.restore_newest(like)
    finally:
      ckpts.close()
  if restored is None:
    raise RunNotFound(f"{workdir} has no finished checkpoint in {ckpt_dir}; the run did not "
                      "complete an epoch. Rerun its training command to resume.")
  results_path = workdir / workdir_lib.RESULTS_FILE
  results = json.loads(results_path.read_text()) if results_path.exists() else None
  history = [h for h in workdir_lib.read_history(workdir) if h["epoch"] <= restored.epoch]
  return Run(config, dataset, train, test, jax.tree.map(jnp.asarray, restored.params), history,
             results)
