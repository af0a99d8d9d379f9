"""The optimizer of a run: its learning-rate schedule and its optax or row-sparse optimizer.

`make_optimizer(config, total_steps)` returns either an `optax.GradientTransformation` (dense
`adam`, `adagrad`, `sgd`) or a `tripjax.sparse_optim.RowOptimizer` (`sparse_*`: updates only the
rows a batch gathers); `is_row_optimizer` tells them apart, once, where the step is built.
Equal settings give the same optimizer object, so that `train_step.make_train_step` (cached on
its arguments) hands every fit of one process with those settings the same compiled step.
"""

from __future__ import annotations

import functools

import optax

from tripjax import errors
from tripjax import sparse_optim
from tripjax.config import TrainConfig


def is_row_optimizer(optimizer) -> bool:
  """True for a `tripjax.sparse_optim.RowOptimizer`, False for an optax transformation."""
  return not isinstance(optimizer, optax.GradientTransformation)


def make_schedule(config: TrainConfig, total_steps: int) -> optax.Schedule | float:
  """The learning rate (a float, or an optax schedule over `total_steps` optimizer steps)."""
  return _schedule(config.learning_rate, config.schedule, config.warmup_steps, total_steps)


def _schedule(learning_rate: float, schedule: str, warmup_steps: int,
              total_steps: int | None) -> optax.Schedule | float:
  if schedule == "constant":
    return learning_rate
  total_steps = max(int(total_steps), warmup_steps + 1)
  if schedule == "cosine":
    return optax.cosine_decay_schedule(learning_rate, total_steps)
  return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, total_steps)


def make_optimizer(config: TrainConfig, total_steps: int):
  """The optimizer named by `config.optimizer` (one object per distinct setting, reused).

  Returns:
    an `optax.GradientTransformation` (adam, adagrad, sgd) or a
    `tripjax.sparse_optim.RowOptimizer` (sparse_adam, sparse_adagrad).
  """
  steps = None if config.schedule == "constant" else int(total_steps)
  return _optimizer(config.optimizer, config.learning_rate, config.schedule,
                    config.warmup_steps, steps)


@functools.lru_cache(maxsize=64)
def _optimizer(name: str, learning_rate: float, schedule: str, warmup_steps: int,
               total_steps: int | None):
  learning_rate = _schedule(learning_rate, schedule, warmup_steps, total_steps)
  if name.startswith("sparse_"):
    return sparse_optim.row_optimizer(name, learning_rate)
  factories = {"adam": optax.adam, "adagrad": optax.adagrad, "sgd": optax.sgd}
  if name not in factories:
    raise errors.InvalidInput(f"optimizer must be one of {sorted(factories)} or sparse_adam / "
                              f"sparse_adagrad, got {name!r}.")
  return factories[name](learning_rate)
