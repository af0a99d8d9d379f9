"""The optimizer of a run: its learning-rate schedule and its optax or row-sparse optimizer.

`make_optimizer(config, total_steps)` returns either an `optax.GradientTransformation` (dense
`adam`, `adagrad`, `sgd`) or a `tripjax.sparse_optim.RowOptimizer` (`sparse_*`: updates only the
rows a batch gathers); `is_row_optimizer` tells them apart, once, where the step is built.
"""

from __future__ import annotations

import optax

from tripjax import errors
from tripjax import sparse_optim
from tripjax.config import TrainConfig


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
    return sparse_optim.row_optimizer(config.optimizer, learning_rate)
  factories = {"adam": optax.adam, "adagrad": optax.adagrad, "sgd": optax.sgd}
  if config.optimizer not in factories:
    raise errors.InvalidInput(f"optimizer must be one of {sorted(factories)} or sparse_adam / "
                              f"sparse_adagrad, got {config.optimizer!r}.")
  return factories[config.optimizer](learning_rate)
