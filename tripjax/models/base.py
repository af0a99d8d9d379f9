"""The model protocol: what every model supplies, and what is shared by all of them.

A model is a frozen `Model`: a name, `fit`, a jit-able batched `score`, the abstract shape of
its parameters (to restore a checkpoint) and optional capabilities (`item_vectors`, `init`,
`fold_in`). Evaluation, top-k, the report and the scripts only use this interface; none of
them branches on a model's name.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tripjax import errors
from tripjax import retrieval

Params = Any  # a plain pytree of arrays, as the model's `fit` returns it


def _no_vectors(params: Params) -> None:
  del params
  return None


@functools.partial(jax.jit, static_argnums=0)
def _offset_scores(score, params, item_offset, users):
  """`score(params, users)` plus an optional float32[I] offset on every row: float32[B, I]."""
  scores = score(params, users)
  return scores if item_offset is None else scores + item_offset[None, :]


@dataclasses.dataclass(frozen=True)
class Model:
  """One recommender behind the shared interface.

  Attributes:
    name: the registry name (`--model`).
    fit: `(config: TrainConfig, train: bool CSR [U, I], *, key) -> params`.
    score: `(params, users: int32[B]) -> float32[B, I]`, jit-able.
    params_like: `(config, train: bool CSR [U, I]) -> ` the params as `jax.ShapeDtypeStruct`s
      (the restore target of a checkpoint; models that keep the training rows need its nnz).
    item_vectors: `params -> float32[I, D]` compared by cosine (`similar_items`, fold-in), or
      None when the model has none.
    iterative: trained epoch by epoch by `tripjax.loop.fit` (the driver evaluates and
      checkpoints each epoch); otherwise `fit` runs once and its params are saved as the
      checkpoint of epoch `config.epochs`.
    init: optional `(config, num_users, num_items) -> params`, the untrained model (the report
      scores it).
    fold_in: optional `(params, liked: int[P], key, *, steps, margin) -> float32[D]`, a new
      user's vector in the space of `item_vectors`.
    describe: `config -> str`, the settings that matter to this model, for titles.
    make_score_fn: optional `(params, item_offset) -> ScoreFn` replacing the generic
      `score_fn` (a model whose own scorer precomputes something, e.g. unit item vectors).
    similar: optional `(params, item) -> float32[I]`, the model's own item-item scores of
      `item` (item-item models, walks), used for similar items when it has no item vectors.
  """
  name: str
  fit: Callable[..., Params]
  score: Callable[[Params, jax.Array], jax.Array]
  params_like: Callable[[Any, Any], Params]
  item_vectors: Callable[[Params], jax.Array | None] = _no_vectors
  iterative: bool = False
  init: Callable[[Any, int, int], Params] | None = None
  fold_in: Callable[..., jax.Array] | None = None
  describe: Callable[[Any], str] = lambda config: ""
  make_score_fn: Callable[[Params, Any], Callable[[jax.Array], jax.Array]] | None = None
  similar: Callable[[Params, int], jax.Array] | None = None

  def score_fn(self, params: Params, item_offset: np.ndarray | None = None):
    """The model as a `tripjax.metrics.ScoreFn`, plus an optional per-item offset.

    Args:
      params: the model's parameters.
      item_offset: optional float32[I] added to every user's scores
        (`model.popularity_offset`, the run's `--popularity_penalty`).

    Returns:
      `users: int32[B] -> float32[B, I]`.
    """
    if self.make_score_fn is not None:
      return self.make_score_fn(params, item_offset)
    offset = None if item_offset is None else jnp.asarray(item_offset, jnp.float32)
    params = jax.tree.map(jnp.asarray, params)
    return lambda users: _offset_scores(self.score, params, offset,
                                        jnp.asarray(users, jnp.int32))

  def item_table(self, params: Params, flag: str) -> jax.Array:
    """`item_vectors(params)`, or InvalidInput naming `flag` when the model has none."""
    vectors = self.item_vectors(params)
    if vectors is None:
      raise errors.InvalidInput(f"{flag}: the {self.name} model has no item vectors "
                                "(train a model that has, e.g. --model=triplet).")
    return vectors

  def similar_items(self, params: Params, item: int, k: int = 10,
                    flag: str = "--similar_to") -> tuple[np.ndarray, np.ndarray]:
    """The k items most like `item`: by cosine of the item vectors, else by the model's own
    item-item scores (`similar`); refused in one line naming `flag` for a model with neither.

    Returns:
      (int32[k] items, float32[k] scores), most similar first.
    """
    if self.item_vectors(params) is None and self.similar is not None:
      return retrieval.top_k_of_row(self.similar(params, item), item, k)
    return retrieval.similar_items({"item": self.item_table(params, flag)}, item, k)

  def fold_in_user(self, params: Params, liked: Sequence[int], key: jax.Array, *,
                   steps: int, margin: float, flag: str = "--liked") -> jax.Array:
    """A new user's vector from liked items (`fold_in`), or InvalidInput naming `flag`.

    Returns:
      float32[D], to score with `retrieval.top_k_for_vectors({"item": item_table(...)}, ...)`.
    """
    if self.fold_in is None:
      raise errors.InvalidInput(f"{flag}: the {self.name} model cannot fold in a new user "
                                "(train a model that can, e.g. --model=triplet).")
    return self.fold_in(params, liked, key, steps=steps, margin=margin)


def describe_ratings(config, kind: str, measure: str) -> str:
  """What a model's `describe` says of the ratings it weighs: "" when none, else e.g.
  ", liked ratings >= 5 as observations of value 1.5, ratings in [3, 4) as observations of
  value 0.5" (`kind` "observations", `measure` "value")."""
  text = ""
  if np.float32(getattr(config, "high_rating_weight", 1.0)) != np.float32(1.0):
    text += (f", liked ratings >= {max(config.high_rating_floor, config.threshold):g} as {kind} "
             f"of {measure} {config.high_rating_weight:g}")
  if getattr(config, "low_rating_weight", 0.0):
    text += (f", ratings in [{config.low_rating_floor:g}, {config.threshold:g}) as {kind} of "
             f"{measure} {config.low_rating_weight:g}")
  return text
