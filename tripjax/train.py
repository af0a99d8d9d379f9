"""Training the triplet model: the jitted step, the epoch loop with checkpoints, and run restore.

`make_train_step` is the hot path: ONE `jax.jit` (state donated) that runs `lax.scan` over a
chunk of S batches; each batch picks its hardest negative, differentiates the triplet loss and
applies the optimizer. The loss is a function of the gathered rows (user, positive, negative),
so the same step serves two optimizer kinds:

- dense optax (`adam`, `adagrad`, `sgd`): gradient w.r.t. the full tables, `optax` update;
- row-sparse (`sparse_adam`, `sparse_adagrad`, `tripjax.sparse_optim`): gradient w.r.t. the
  gathered rows, then `RowOptimizer.update(row_grads, row_indices, ...)` touches only them.

With `fused_cpu=True` (sparse_sgd on CPU) the loss, gradient and update of a batch are one
custom call instead (`tripjax.fused_cpu`); the scan, hardest-of-n and padding are the same.

`train_and_evaluate(config, workdir)` is the whole run: data, sampler, step, per-epoch
checkpoints (resume from the latest), evaluation, the popularity baseline, `results.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import time
from typing import Any, Callable, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

from tripjax import checkpoint
from tripjax import errors
from tripjax import io as tio
from tripjax import losses
from tripjax import model
from tripjax import sampling
from tripjax import stop_signals
from tripjax import workdir as workdir_lib
from tripjax.config import TrainConfig

Params = dict  # {"user": float32[U, D], "item": float32[I, D]}
# How often a run saves by default (`--checkpoint_every`); it also saves at its end and when
# SIGTERM/SIGINT asks it to stop.
DEFAULT_CHECKPOINT_EVERY = "10m"


class TrainState(NamedTuple):
  """Everything the step updates (the optimizer's functions stay outside)."""
  params: Params  # {"user": float32[U, D], "item": float32[I, D]}
  opt_state: Any  # the optimizer's state pytree (optax, or a sparse_optim state)
  step: jax.Array  # int32[]: optimizer steps applied (empty padded batches not counted)


class TrainingDiverged(errors.TripjaxError, FloatingPointError):
  """The loss or the parameters became NaN/Inf."""


class RunNotFound(errors.WorkdirError, FileNotFoundError):
  """The folder holds no trained run (no flags.txt, or no finished checkpoint)."""


def is_row_optimizer(optimizer) -> bool:
  """True for a `tripjax.sparse_optim.RowOptimizer`, False for an optax transformation."""
  return not isinstance(optimizer, optax.GradientTransformation)


def make_schedule(config: TrainConfig, total_steps: int) -> optax.Schedule | float:
  """The learning rate (a float, or an optax schedule over `total_steps` optimizer steps)."""
  if config.schedule == "constant":
    return config.learning_rate
  total_steps = max(int(total_steps), config.warmup_steps + 1)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(config.learning_rate, total_steps)
  return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup_steps,
                                            total_steps)


def make_optimizer(config: TrainConfig, total_steps: int):
  """The optimizer named by `config.optimizer`.

  Returns:
    an `optax.GradientTransformation` (adam, adagrad, sgd) or a
    `tripjax.sparse_optim.RowOptimizer` (sparse_adam, sparse_adagrad).
  """
  learning_rate = make_schedule(config, total_steps)
  if config.optimizer.startswith("sparse_"):
    from tripjax import sparse_optim  # pylint: disable=g-import-not-at-top
    return sparse_optim.row_optimizer(config.optimizer, learning_rate)
  factories = {"adam": optax.adam, "adagrad": optax.adagrad, "sgd": optax.sgd}
  if config.optimizer not in factories:
    raise errors.InvalidInput(f"optimizer must be one of {sorted(factories)} or sparse_adam / "
                              f"sparse_adagrad, got {config.optimizer!r}.")
  return factories[config.optimizer](learning_rate)


def init_state(key: jax.Array, optimizer, num_users: int, num_items: int, dim: int,
               scale: float = 0.1) -> TrainState:
  """Fresh parameters and optimizer state."""
  params = model.init_params(key, num_users, num_items, dim, scale)
  return TrainState(params, optimizer.init(params), jnp.zeros([], jnp.int32))


def batch_denominator(weights: jax.Array) -> jax.Array:
  """What `batch_loss` divides the weighted sums by: float32[], max(sum(weights), 1)."""
  return jnp.maximum(jnp.sum(weights), 1.0)


def batch_loss(user_rows: jax.Array, pos_rows: jax.Array, neg_rows: jax.Array,
               weights: jax.Array, margin: float, l2: float):
  """The batch objective as a function of the gathered rows.

  Args:
    user_rows: float32[B, D].
    pos_rows: float32[B, D].
    neg_rows: float32[B, D].
    weights: float32[B], 1 for real triplets, 0 for padding.
    margin: the triplet margin.
    l2: weight of the mean squared norm of the gathered rows.

  Returns:
    (objective float32[], per-triplet hinge losses float32[B]).
  """
  per_triplet = losses.triplet_cosine_loss(user_rows, pos_rows, neg_rows, margin)
  denom = batch_denominator(weights)
  objective = jnp.sum(weights * per_triplet) / denom
  if l2:
    squares = sum(jnp.sum(jnp.square(r), axis=-1) for r in (user_rows, pos_rows, neg_rows))
    objective += l2 * jnp.sum(weights * squares) / denom
  return objective, per_triplet


def _check_fused_cpu(optimizer) -> None:
  """Raises ValueError (not sparse_sgd) or fused_cpu.Unavailable (not CPU, no kernel)."""
  if not is_row_optimizer(optimizer) or optimizer.sgd_learning_rate is None:
    raise errors.InvalidInput("the fused CPU step (--fused_cpu_step) applies plain row-sparse "
                              "SGD: it needs --optimizer=sparse_sgd.")
  from tripjax import fused_cpu  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != "cpu":
    raise fused_cpu.Unavailable(
        "the fused CPU step (--fused_cpu_step) runs on the CPU backend only; this process's "
        f"default backend is {jax.default_backend()!r} (set JAX_PLATFORMS=cpu, or drop "
        "--fused_cpu_step).")
  fused_cpu.register()  # build errors surface here, before any tracing


def make_train_step(optimizer, margin: float = 0.5, l2: float = 0.0, fused_cpu: bool = False
                    ) -> Callable[[TrainState, sampling.Batches], tuple[TrainState, dict]]:
  """Builds the jitted, state-donating training step over a chunk of batches.

  Args:
    optimizer: an `optax.GradientTransformation`, or a `sparse_optim.RowOptimizer` (then the
      gradient is taken w.r.t. the gathered rows and only those rows are updated).
    margin: the triplet margin.
    l2: L2 weight on the gathered embeddings.
    fused_cpu: apply each batch with `tripjax.fused_cpu`'s kernel (the same loss, gradient and
      update, in two passes over the batch and on all cores; compiled on first use). Needs
      `sparse_sgd` and the CPU backend.

  Returns:
    `step(state, batches, skip_empty=True) -> (state, metrics)`, where `batches` is a
    `sampling.Batches` with users/pos int32[S, B], neg int32[S, B, n], weights float32[S, B].
    With n > 1 each triplet trains on its hardest (highest-cosine) candidate. Batches whose
    weights are all 0 (an epoch's padding) leave the state untouched; `skip_empty=False`
    (static) drops that check, for chunks whose every batch holds a real triplet (a
    conditional around the update costs about 5% on CPU; `run_epoch` chooses). metrics:
    `loss` (weighted mean hinge loss), `active_fraction` (share of triplets with positive
    loss), and their sums `loss_sum`, `active_sum`, `triplets`. `state` is donated: do not
    reuse it after the call.
  """
  row_sparse = is_row_optimizer(optimizer)
  if fused_cpu:
    _check_fused_cpu(optimizer)

  def apply(state, users, pos, neg, weights):
    params = state.params
    if fused_cpu:
      from tripjax import fused_cpu as kernel  # pylint: disable=g-import-not-at-top
      from tripjax import sparse_optim  # pylint: disable=g-import-not-at-top
      count = state.opt_state.count
      user, item, per = kernel.triplet_sgd_update(
          params["user"], params["item"], users, pos, neg,
          weights / batch_denominator(weights),  # d batch_loss / d per-triplet loss
          sparse_optim.learning_rate_at(optimizer.sgd_learning_rate, count), margin, l2)
      new_params = {"user": user, "item": item}
      opt_state = state.opt_state._replace(count=sparse_optim.safe_increment(count))
    elif row_sparse:
      rows = (params["user"][users], params["item"][pos], params["item"][neg])
      (_, per), (g_user, g_pos, g_neg) = jax.value_and_grad(
          batch_loss, argnums=(0, 1, 2), has_aux=True)(*rows, weights, margin, l2)
      new_params, opt_state = optimizer.update(
          {"user": g_user, "item": jnp.concatenate([g_pos, g_neg])},
          {"user": users, "item": jnp.concatenate([pos, neg])}, state.opt_state, params,
          param_rows={"user": rows[0], "item": jnp.concatenate(rows[1:])})
    else:
      def objective(params):
        return batch_loss(params["user"][users], params["item"][pos], params["item"][neg],
                          weights, margin, l2)
      (_, per), grads = jax.value_and_grad(objective, has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, state.opt_state, params)
      new_params = optax.apply_updates(params, updates)
    sums = (jnp.sum(weights * per), jnp.sum(weights * (per > 0)))
    return TrainState(new_params, opt_state, state.step + 1), sums

  def skip(state, *unused):
    del unused
    return state, (jnp.zeros([], jnp.float32), jnp.zeros([], jnp.float32))

  def one_batch(state, batch, skip_empty):
    users, pos, neg, weights = batch
    if neg.shape[-1] > 1:
      item_table = state.params["item"]
      neg = sampling.hardest_negatives(state.params["user"][users], item_table[neg], neg)
    else:
      neg = neg[:, 0]
    if skip_empty:
      state, (loss_sum, active_sum) = jax.lax.cond(
          jnp.any(weights > 0), apply, skip, state, users, pos, neg, weights)
    else:
      state, (loss_sum, active_sum) = apply(state, users, pos, neg, weights)
    return state, (loss_sum, active_sum, jnp.sum(weights))

  def step(state: TrainState, batches: sampling.Batches, skip_empty: bool = True):
    batches = (batches.users, batches.pos, batches.neg, batches.weights)
    state, (loss_sums, active_sums, counts) = jax.lax.scan(
        functools.partial(one_batch, skip_empty=skip_empty), state, batches)
    loss_sum, active_sum, triplets = jnp.sum(loss_sums), jnp.sum(active_sums), jnp.sum(counts)
    denom = jnp.maximum(triplets, 1.0)
    return state, {"loss": loss_sum / denom, "active_fraction": active_sum / denom,
                   "loss_sum": loss_sum, "active_sum": active_sum, "triplets": triplets}

  return jax.jit(step, donate_argnums=0, static_argnames="skip_empty")


def epoch_chunk_kinds(sampler: sampling.EpochSampler) -> tuple[bool, ...]:
  """The `skip_empty` values `run_epoch` passes over the sampler's epochs.

  Chunks before the last are full; the last holds empty (all-padding) batches unless the
  batches fill it exactly.
  """
  kinds = {sampler.num_chunks * sampler.batches_per_chunk > sampler.num_batches}
  if sampler.num_chunks > 1:
    kinds.add(False)
  return tuple(sorted(kinds))


def compile_step(step_fn, state: TrainState, chunk: sampling.Batches,
                 kinds: tuple[bool, ...] = (False, True)):
  """`make_train_step`'s step compiled ahead of time, once per `skip_empty` value in `kinds`.

  Returns:
    `step(state, batches, skip_empty=True)` calling the compiled program (donation kept).
  """
  compiled = {kind: step_fn.lower(state, chunk, skip_empty=kind).compile() for kind in kinds}

  def step(state, batches, skip_empty=True):
    if skip_empty not in compiled:
      raise errors.InvalidInput(f"compile_step: skip_empty={skip_empty} was not compiled (kinds "
                                f"{tuple(compiled)}).")
    return compiled[skip_empty](state, batches)

  return step


def run_epoch(step_fn, state: TrainState, batches: sampling.Batches):
  """Runs every chunk of an epoch's `batches` ([C, S, B] leading axes) through `step_fn`.

  Chunks without an empty (all-padding) batch, all but the last of a sampler's epoch, run
  without the empty-batch check (`make_train_step`'s `skip_empty=False`).

  Returns:
    (state, per-chunk metrics as host numpy dict of float[C]).
  """
  has_empty = np.asarray(jnp.any(jnp.max(batches.weights, axis=-1) <= 0, axis=-1))
  chunk_metrics = []
  for c in range(batches.users.shape[0]):
    state, metrics = step_fn(state, jax.tree.map(lambda x, c=c: x[c], batches),
                             skip_empty=bool(has_empty[c]))
    chunk_metrics.append(metrics)
  fetched = jax.device_get(chunk_metrics)  # one host transfer per epoch
  return state, {k: np.array([m[k] for m in fetched], np.float64) for k in fetched[0]}


# --------------------------------------------------------------------------- the whole run


class Run(NamedTuple):
  """A finished (or checkpointed) run, as `restore_run` rebuilds it."""
  config: TrainConfig
  dataset: Any  # tripjax.data.ImplicitDataset
  train: sp.csr_matrix  # bool [U, I]
  test: sp.csr_matrix  # bool [U, I]
  params: Params  # {"user": float32[U, D], "item": float32[I, D]} of the latest checkpoint
  history: list  # metrics.jsonl entries up to the latest checkpoint, one dict per evaluation
  results: dict | None  # results.json, or None if the run did not finish


def load_split(config: TrainConfig):
  """The config's dataset through the lab pipeline and its leave-k-out split.

  Returns:
    (dataset: ImplicitDataset, train: bool CSR [U, I], test: bool CSR [U, I]).
  """
  from tripjax.data import registry  # pylint: disable=g-import-not-at-top
  return registry.prepare(config.dataset, data_dir=config.data_dir, download=config.download,
                          seed=config.data_seed, threshold=config.threshold,
                          min_user_positives=config.min_user_positives,
                          test_per_user=config.test_per_user, split_seed=config.split_seed)


def evaluate(score_fn, train, test, block_size: int) -> dict[str, float]:
  """Mean metrics of a score function (`tripjax.metrics.evaluate`), as plain floats."""
  from tripjax import metrics  # pylint: disable=g-import-not-at-top
  result = metrics.evaluate(score_fn, train, test, ks=(10, 20), block_size=block_size)
  return {k: float(v) for k, v in result.means.items()}


def _dataset_summary(config, dataset, train, test) -> dict:
  num_users, num_items = train.shape
  return {"name": config.dataset, "users": int(num_users), "items": int(num_items),
          "positives": int(dataset.matrix.nnz), "train_positives": int(train.nnz),
          "test_positives": int(test.nnz),
          "density": float(dataset.matrix.nnz) / max(num_users * num_items, 1)}


def check_finite(chunk_loss: np.ndarray, state: TrainState, first_step: int,
                 steps_per_chunk: int, kept: str = "") -> None:
  """Raises TrainingDiverged when a chunk's loss or the parameters are NaN/Inf.

  Args:
    chunk_loss: float[C], the mean loss of each chunk of an epoch.
    state: the state after the epoch.
    first_step: the step count before the epoch.
    steps_per_chunk: batches per chunk (to name the steps).
    kept: what the caller keeps (e.g. "The last good checkpoint is kept; "), said first in
      the advice.
  """
  bad = np.flatnonzero(~np.isfinite(chunk_loss))
  params_ok = all(bool(jnp.isfinite(jnp.sum(t))) for t in jax.tree.leaves(state.params))
  if bad.size or not params_ok:
    where = (f"between steps {first_step + bad[0] * steps_per_chunk} and "
             f"{first_step + (bad[0] + 1) * steps_per_chunk}" if bad.size
             else f"before step {int(state.step)} (parameters)")
    raise TrainingDiverged(
        f"the loss became NaN/Inf {where}. {kept}try a lower --learning_rate, a smaller --l2, "
        "--schedule=warmup_cosine, or --optimizer=adam.")


def prepare_training(config: TrainConfig, train: sp.csr_matrix, shuffle_on: str | None = None,
                     draw_order: str = "rows"
                     ) -> tuple[sampling.EpochSampler, Any, TrainState]:
  """The sampler, optimizer and fresh state of a run on `train` (its seed, sizes and schedule).

  Args:
    config: the run's settings.
    train: bool CSR [U, I], the positives to train on.
    shuffle_on: the sampler's shuffle ("host" or "device"); None: the backend's default.
    draw_order: the sampler's `draw_order` ("shuffled" for runs started before it existed).

  Returns:
    (sampler, optimizer, state): the optimizer's schedule spans `config.epochs` epochs.
  """
  sampler = sampling.EpochSampler(train, config.batch_size, config.steps_per_dispatch,
                                  config.num_negatives, seed=config.seed, shuffle_on=shuffle_on,
                                  negative_exponent=config.negative_exponent,
                                  draw_order=draw_order)
  optimizer = make_optimizer(config, config.epochs * sampler.num_batches)
  state = init_state(jax.random.key(config.seed), optimizer, train.shape[0], train.shape[1],
                     config.dim, config.init_scale)
  return sampler, optimizer, state


def _resume(ckpts: checkpoint.Checkpoints, config: TrainConfig, train: sp.csr_matrix,
            workdir: pathlib.Path):
  """The sampler, optimizer and state to continue from: the newest checkpoint that restores.

  A damaged checkpoint is moved to `workdir/damaged_checkpoints/` and the one before it used.
  A resumed run keeps the shuffle it started with (the default depends on the backend) and its
  sampler's draw (runs saved before `draw_order` existed drew "shuffled").

  Returns:
    (sampler, optimizer, state, epochs done, training seconds so far, metrics history).
  """
  sampler, optimizer, state = prepare_training(config, train)
  restored = ckpts.restore_newest(state.params, state.opt_state,
                                  quarantine=workdir / workdir_lib.DAMAGED_DIR)
  if restored is None:
    if (workdir / workdir_lib.METRICS_FILE).exists():
      workdir_lib.write_history(workdir, [])
    return sampler, optimizer, state, 0, 0.0, []
  shuffle_on = restored.meta.get("shuffle_on", sampler.shuffle_on)
  draw_order = restored.meta.get("draw_order", "shuffled")
  if (shuffle_on, draw_order) != (sampler.shuffle_on, sampler.draw_order):
    sampler, optimizer, _ = prepare_training(config, train, shuffle_on, draw_order)
  state = TrainState(jax.tree.map(jnp.asarray, restored.params),
                     jax.tree.map(jnp.asarray, restored.opt_state),
                     jnp.asarray(restored.step, jnp.int32))
  epoch = int(restored.meta["epoch"])
  history = [h for h in workdir_lib.read_history(workdir) if h["epoch"] <= epoch]
  workdir_lib.write_history(workdir, history)
  logging.info("Resumed from the checkpoint of epoch %d (step %d).", epoch, int(restored.step))
  return sampler, optimizer, state, epoch, float(restored.meta["train_seconds"]), history


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
      job would; rerunning resumes. None trains to `config.epochs`.
    checkpoint_every: `checkpoint.Every.parse` text: `5` (epochs) or `10m` (minutes).

  Returns:
    The results.json dict (or, when stopped early, {"finished": False, "epoch": ...}).

  Raises:
    workdir.WorkdirConflict: the workdir holds a different run and `overwrite` is False.
    workdir.WorkdirLocked: another process is training into the workdir.
    TrainingDiverged: the loss became NaN/Inf (the last saved checkpoint is kept).
    errors.Stopped: SIGTERM/SIGINT stopped the run (its checkpoint is saved).
  """
  every = checkpoint.Every.parse(checkpoint_every)
  workdir = pathlib.Path(workdir)
  with workdir_lib.locked(workdir), stop_signals.StopRequests() as stop:
    replace = workdir_lib.claim(config, workdir, overwrite)
    dataset, train, test = load_split(config)
    if replace:
      workdir_lib.replace_run(workdir)
    workdir_lib.write_flags(config, workdir)
    ckpts = checkpoint.Checkpoints(workdir / workdir_lib.CHECKPOINT_DIR)
    try:
      return _train(config, workdir, ckpts, dataset, train, test, every, stop,
                    stop_after_epoch)
    finally:
      ckpts.close()


def _train(config, workdir, ckpts, dataset, train, test, every, stop, stop_after_epoch):
  """`train_and_evaluate` once the workdir is claimed and the data loaded."""
  offset = model.popularity_offset(train, config.popularity_penalty)
  sampler, optimizer, state, start_epoch, train_seconds, history = _resume(
      ckpts, config, train, workdir)
  logging.info("%s: %d users x %d items, %d train / %d test positives; %d epochs of %d "
               "batches of %d (%s shuffle).", config.dataset, train.shape[0], train.shape[1],
               train.nnz, test.nnz, config.epochs, sampler.num_batches, config.batch_size,
               sampler.shuffle_on)
  results_path = workdir / workdir_lib.RESULTS_FILE
  if start_epoch >= config.epochs and results_path.exists():
    logging.info("The run in %s is already finished.", workdir)
    return json.loads(results_path.read_text())

  # Compile the sampler and the step before the clock starts (the warm-up draw is discarded;
  # the step is compiled ahead of time and keeps its donation).
  compile_started = time.perf_counter()
  warm = sampler.epoch(start_epoch)
  step_fn = compile_step(make_train_step(optimizer, config.margin, config.l2,
                                         config.fused_cpu_step), state,
                         jax.tree.map(lambda x: x[0], warm), epoch_chunk_kinds(sampler))
  del warm
  compile_seconds = time.perf_counter() - compile_started
  last_epoch = config.epochs if stop_after_epoch is None else min(stop_after_epoch,
                                                                   config.epochs)
  saved_epoch, saved_at = start_epoch, time.perf_counter()

  def save(epoch):
    nonlocal saved_epoch, saved_at
    ckpts.save(epoch, state.params, state.opt_state, state.step,
               {"epoch": epoch, "seed": config.seed, "train_seconds": train_seconds,
                "shuffle_on": sampler.shuffle_on, "draw_order": sampler.draw_order})
    saved_epoch, saved_at = epoch, time.perf_counter()

  run_started = time.perf_counter()
  for epoch in range(start_epoch, last_epoch):
    started = time.perf_counter()
    first_step = int(state.step)
    batches = jax.block_until_ready(sampler.epoch(epoch, prefetch_next=epoch + 1 < last_epoch))
    sample_seconds = time.perf_counter() - started
    state, chunks = run_epoch(step_fn, state, batches)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - started
    check_finite(chunks["loss"], state, first_step, config.steps_per_dispatch,
                 kept=(f"The checkpoint of epoch {saved_epoch} is kept; " if saved_epoch
                       else "No checkpoint was saved yet; "))
    train_seconds += seconds
    triplets = chunks["triplets"].sum()
    loss = chunks["loss_sum"].sum() / triplets
    active = chunks["active_sum"].sum() / triplets
    entry = {"epoch": epoch + 1, "step": int(state.step), "loss": float(loss),
             "active_fraction": float(active), "triplets_per_sec": float(triplets / seconds),
             "epoch_seconds": seconds, "sample_seconds": sample_seconds,
             "train_seconds": train_seconds}
    if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
      eval_started = time.perf_counter()
      entry.update(evaluate(model.score_fn(state.params, offset), train, test,
                            config.eval_block_size))
      entry["eval_seconds"] = time.perf_counter() - eval_started
      history.append(entry)
      workdir_lib.write_history(workdir, history)
    # Saved only after the epoch's metrics.jsonl line is written: a committed checkpoint always
    # has its line, and lines ahead of the checkpoints (a kill in between) are dropped and
    # recomputed on resume.
    if (epoch + 1 == last_epoch or stop.signum is not None
        or every.due(epoch + 1 - saved_epoch, time.perf_counter() - saved_at)):
      save(epoch + 1)
    done = epoch + 1 - start_epoch
    eta = (time.perf_counter() - run_started) / done * (config.epochs - epoch - 1)
    logging.info("epoch %d/%d  loss %.4f  active %.3f  %s%.3g triplets/s (sampling %.0f%%)"
                 "  ETA %.0fs", epoch + 1, config.epochs, loss, active,
                 f"AUC {entry['auc']:.4f}  " if "auc" in entry else "",
                 entry["triplets_per_sec"], 100 * sample_seconds / seconds, eta)
    if stop.signum is not None:
      ckpts.wait()
      raise errors.Stopped(f"stopped by {stop.name} after epoch {epoch + 1} of {config.epochs}; "
                           f"its checkpoint is saved in {ckpts.directory}: rerun the same "
                           "command to resume.", stop.signum)
  ckpts.wait()
  if last_epoch < config.epochs:
    return {"finished": False, "epoch": last_epoch}
  return _write_results(config, workdir, dataset, train, test, state, sampler, offset, history,
                        train_seconds, compile_seconds)


def _write_results(config, workdir, dataset, train, test, state, sampler, offset, history,
                   train_seconds, compile_seconds) -> dict:
  """results.json of a finished run: the model's and popularity's metrics, the run's facts."""
  final = history[-1] if history and history[-1]["epoch"] == config.epochs else None
  model_metrics = ({k: v for k, v in final.items() if k not in _TRAIN_KEYS} if final else
                   evaluate(model.score_fn(state.params, offset), train, test,
                            config.eval_block_size))
  from tripjax import baselines  # pylint: disable=g-import-not-at-top
  popularity = evaluate(baselines.popularity_scores(train), train, test, config.eval_block_size)
  device = jax.devices()[0]
  results = {
      "config": dataclasses.asdict(config),
      "dataset": _dataset_summary(config, dataset, train, test),
      "model": model_metrics,
      "popularity": popularity,
      "epochs": config.epochs,
      "steps": int(state.step),
      "train_seconds": train_seconds,
      "compile_seconds": compile_seconds,
      "sampler": {"shuffle_on": sampler.shuffle_on, "draw_order": sampler.draw_order},
      "triplets_per_sec": config.epochs * train.nnz / train_seconds if train_seconds else None,
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
  }
  tio.write_json_atomic(workdir / workdir_lib.RESULTS_FILE, results)
  logging.info("Final AUC %.4f (popularity %.4f); %.1fs of training, %.3g triplets/s.",
               model_metrics.get("auc", math.nan), popularity.get("auc", math.nan),
               train_seconds, results["triplets_per_sec"] or 0.0)
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
  flags_path = workdir / workdir_lib.FLAGS_FILE
  if not flags_path.exists():
    raise RunNotFound(f"{workdir} is not a tripjax training folder (no "
                      f"{workdir_lib.FLAGS_FILE}); train one with python -m experiments.train "
                      "--workdir=...")
  config = TrainConfig.from_flagfile(flags_path)
  ckpt_dir = workdir / workdir_lib.CHECKPOINT_DIR
  restored = None
  if ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
    dataset, train, test = load_split(config)
    like = jax.eval_shape(lambda: model.init_params(jax.random.key(0), train.shape[0],
                                                    train.shape[1], config.dim))
    ckpts = checkpoint.Checkpoints(ckpt_dir)
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
