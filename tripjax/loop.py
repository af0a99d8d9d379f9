"""The epoch loop: `fit(config, train)` trains a model epoch by epoch, the one copy of the loop.

The driver (`tripjax.train.train_and_evaluate`: checkpoints, evaluation, resume) and the tuner
(`tripjax.tuning`: validation fits) both call `fit`; what each does after an epoch is its
`on_epoch` callback.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax import sampling
from tripjax import sharding
from tripjax.config import TrainConfig
from tripjax.data import registry
from tripjax.optimizers import make_optimizer
from tripjax.train_step import (TrainState, compile_step, epoch_chunk_kinds, init_state,
                                make_train_step, run_epoch)


class TrainingDiverged(errors.TripjaxError, FloatingPointError):
  """The loss or the parameters became NaN/Inf."""


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
                     draw_order: str = "rows", side: dict | None = None
                     ) -> tuple[sampling.EpochSampler, Any, TrainState]:
  """The sampler, optimizer and fresh state of a run on `train` (its seed, sizes and schedule).

  The run's side features and cold items (`registry.load_features`) shape the params; cold
  items are never drawn as negatives. With `config.low_rating_weight` the run's ratings below
  its threshold (`registry.load_low_ratings`) are the sampler's weak positives; with
  `config.high_rating_weight` its liked training ratings >= `high_rating_floor`
  (`registry.training_high_ratings`) are its strong ones.

  Args:
    config: the run's settings.
    train: bool CSR [U, I], the positives to train on.
    shuffle_on: the sampler's shuffle ("host" or "device"); None: the backend's default.
    draw_order: the sampler's `draw_order` ("shuffled" for runs started before it existed).
    side: `model.init_params`' feature keywords (`item_features`, `user_features`,
      `zero_items`); None: `registry.load_features(config)`, the run's own.

  Returns:
    (sampler, optimizer, state): the optimizer's schedule spans `config.epochs` epochs.
  """
  side = registry.load_features(config) if side is None else side
  weak = registry.load_low_ratings(config)
  strong = registry.training_high_ratings(config, train)
  sampler = sampling.EpochSampler(train, config.batch_size, config.steps_per_dispatch,
                                  config.num_negatives, seed=config.seed, shuffle_on=shuffle_on,
                                  negative_exponent=config.negative_exponent,
                                  draw_order=draw_order, excluded_items=side.get("zero_items"),
                                  weak_positives=weak,
                                  weak_weight=config.low_rating_weight if weak is not None
                                  else 1.0, strong_positives=strong,
                                  strong_weight=config.high_rating_weight,
                                  user_weight_exponent=config.user_weight_exponent)
  optimizer = make_optimizer(config, config.epochs * sampler.num_batches)
  state = init_state(jax.random.key(config.seed), optimizer, train.shape[0], train.shape[1],
                     config.dim, config.init_scale, **side)
  return sampler, optimizer, state


class Start(NamedTuple):
  """Where `fit` starts: a fresh run (`prepare_training`) or a restored checkpoint."""
  sampler: sampling.EpochSampler
  optimizer: Any  # optax.GradientTransformation or sparse_optim.RowOptimizer
  state: TrainState
  epoch: int  # epochs already done
  train_seconds: float  # training seconds already spent


class Fitted(NamedTuple):
  """What `fit` returns."""
  state: TrainState
  train_seconds: float  # all epochs' seconds, those of `start` included
  compile_seconds: float  # compiling the step ahead of the first epoch (0 unless asked)


def fit(config: TrainConfig, train: sp.csr_matrix, *, start: Start | None = None,
        stop_epoch: int | None = None, compile_ahead: bool = False,
        on_epoch: Callable[[TrainState, dict], None] | None = None,
        diverged_note: Callable[[], str] = str, side: dict | None = None) -> Fitted:
  """Trains epoch by epoch: sample the epoch's triplets, run its chunks, check, report.

  Args:
    config: the run's settings (the data is `train`; its data fields choose only the side
      features and low ratings it also trains on, `registry.load_features` and
      `registry.load_low_ratings`).
    train: bool CSR [U, I], the positives to train on.
    start: where to start; None: `prepare_training(config, train)` at epoch 0.
    stop_epoch: stop after this many epochs in total; None: `config.epochs`.
    compile_ahead: compile the step before the first epoch (with a discarded draw), so that
      no epoch's seconds include compilation.
    on_epoch: called after each epoch with the state and the epoch's statistics (`epoch`,
      `step`, `loss`, `active_fraction`, `triplets_per_sec`, `epoch_seconds`,
      `sample_seconds`, `train_seconds`); it may evaluate, save, or raise to stop.
    diverged_note: what the caller keeps when training diverges, said in the error.
    side: as in `prepare_training` (used when `start` is None).

  Returns:
    The state after the last epoch and the seconds spent.

  Raises:
    TrainingDiverged: the loss or the parameters became NaN/Inf.
  """
  if start is None:
    start = Start(*prepare_training(config, train, side=side), epoch=0, train_seconds=0.0)
  sampler, state, train_seconds = start.sampler, start.state, start.train_seconds
  mesh = sharding.make_mesh(config.mesh) if config.mesh else None
  draw = sampler.epoch if mesh is None else functools.partial(sharding.place_epoch, sampler,
                                                              mesh=mesh)
  if mesh is not None:
    state = sharding.place(state, mesh)
  last = config.epochs if stop_epoch is None else min(stop_epoch, config.epochs)
  step_fn = make_train_step(start.optimizer, config.margin, config.l2, config.fused_cpu_step,
                            config.negative_temperature, config.warp, config.adaptive_margin,
                            config.low_rating_item_grad if sampler.num_weak else 1.0)
  compile_seconds = 0.0
  if compile_ahead and start.epoch < last:
    started = time.perf_counter()
    warm = draw(start.epoch)
    step_fn = compile_step(step_fn, state, jax.tree.map(lambda x: x[0], warm),
                           epoch_chunk_kinds(sampler))
    del warm
    compile_seconds = time.perf_counter() - started
  for epoch in range(start.epoch, last):
    started = time.perf_counter()
    first_step = int(state.step)
    batches = jax.block_until_ready(draw(epoch, prefetch_next=epoch + 1 < last))
    sample_seconds = time.perf_counter() - started
    state, chunks = run_epoch(step_fn, state, batches)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - started
    check_finite(chunks["loss"], state, first_step, config.steps_per_dispatch,
                 kept=diverged_note())
    train_seconds += seconds
    triplets, weight = chunks["triplets"].sum(), chunks["weight"].sum()
    stats = {"epoch": epoch + 1, "step": int(state.step),
             "loss": float(chunks["loss_sum"].sum() / weight),
             "active_fraction": float(chunks["active_sum"].sum() / weight),
             "triplets_per_sec": float(triplets / seconds), "epoch_seconds": seconds,
             "sample_seconds": sample_seconds, "train_seconds": train_seconds}
    if on_epoch is not None:
      on_epoch(state, stats)
  return Fitted(state, train_seconds, compile_seconds)
