"""The cosine-margin triplet model (`tripjax.model`, trained by `tripjax.loop.fit`)."""

from __future__ import annotations

import jax

from tripjax import foldin
from tripjax import model
from tripjax.data import registry
from tripjax.models import base


def fit(config, train, *, key=None) -> model.Params:
  """Trains `config.epochs` epochs in one go (no checkpoints; the driver checkpoints its own).

  Args:
    config: a `TrainConfig`; its seed draws the initial tables and the triplets.
    train: bool CSR [U, I].
    key: unused (the run's randomness comes from `config.seed`).

  Returns:
    {"user": float32[U, D], "item": float32[I, D]}.
  """
  del key
  # Imported here: tripjax.loop imports tripjax.config, which imports this package for the
  # names of `--model`.
  from tripjax import loop  # pylint: disable=g-import-not-at-top
  return loop.fit(config, train).state.params


def init(config, num_users: int, num_items: int) -> model.Params:
  """The untrained tables of a run (its seed, dim, init scale, features and cold items)."""
  return model.init_params(jax.random.key(config.seed), num_users, num_items, config.dim,
                           config.init_scale, **registry.load_features(config))


def params_like(config, train):
  """The tables as `jax.ShapeDtypeStruct`s (checkpoint restore target)."""
  side = registry.load_features(config)
  return jax.eval_shape(
      lambda: model.init_params(jax.random.key(0), *train.shape, config.dim, **side))


def fold_in(params: model.Params, liked, key, **settings):
  """`foldin.fold_in` against the item vectors (features included); a new user has none."""
  return foldin.fold_in({"item": model.table(params, "item")}, liked, key, **settings)


def describe(config) -> str:
  features = ", ".join(f for f in (config.item_features, config.user_features) if f)
  ratings = base.describe_ratings(config, "positives", "weight")
  if (getattr(config, "low_rating_weight", 0.0)
      and getattr(config, "low_rating_item_grad", 1.0) < 1.0):
    ratings += f" ({config.low_rating_item_grad:g} of their gradient to their items)"
  if getattr(config, "user_weight_exponent", 0.0):
    ratings += f", users weighted by their triplets ** -{config.user_weight_exponent:g}"
  return (f"dim {config.dim}, {config.epochs} epochs ({config.optimizer}, lr "
          f"{config.learning_rate:g}, batch {config.batch_size}, margin {config.margin:g})"
          + (f", features {features}" if features else "") + ratings)


MODEL = base.Model(
    name="triplet", fit=fit, score=model.cosine_scores, params_like=params_like,
    item_vectors=lambda params: model.table(params, "item"), iterative=True, init=init,
    fold_in=fold_in, describe=describe, make_score_fn=model.score_fn)
