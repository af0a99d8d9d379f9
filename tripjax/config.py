"""`TrainConfig`: every setting of a training run, validated, and its flagfile form.

Field names are the flag names of `experiments/train.py`, so `to_flagfile` writes a flagfile
that reproduces the run and `from_flagfile` reads it back (the workdir's `flags.txt`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Mapping, Sequence

import numpy as np

from tripjax import errors
from tripjax import models
from tripjax import sharding
from tripjax.data import features
from tripjax.data import registry

OPTIMIZERS = ("adam", "adagrad", "sgd", "sparse_adam", "sparse_adagrad",
              "sparse_rowwise_adagrad", "sparse_sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
# Flags of experiments/train.py that are not TrainConfig fields (config files may hold them).
DRIVER_FLAGS = ("workdir", "overwrite", "checkpoint_every", "stop_after_epoch")


# Where a run computes, not what: a run resumes under other values (a checkpoint of 4 devices
# goes on on 1 or 2; sharded equals unsharded within float32 rounding).
PLACEMENT_FIELDS = ("mesh",)

# The fields read by the data pipeline (`tripjax.data.registry.load_split`): one set of data
# flags for every script.
DATA_FIELDS = ("dataset", "data_dir", "download", "threshold", "min_user_positives",
               "test_per_user", "split_seed", "data_seed", "cold_item_fraction")


def dataset_names() -> tuple[str, ...]:
  """The dataset names `tripjax.data.registry.load_dataset` accepts."""
  return tuple(registry.DATASET_NAMES)


SEED_LIMIT = 2**32  # seeds are in [0, 2**32): numpy's and JAX's seeds alike


def _field(default, help_text: str, *, choices: Sequence[str] | None = None,
           positive: bool = False, minimum: float | None = None,
           below: float | None = None, maximum: float | None = None,
           model: str | tuple[str, ...] | None = None):
  """A config field with what its flag needs: help, allowed values, bounds (checked once).

  `below` is an exclusive upper bound, `maximum` an inclusive one; `model` names the model (or
  models) the field is a setting of (setting it for another model is refused).
  """
  return dataclasses.field(default=default, metadata={
      "help": help_text, "choices": tuple(choices) if choices else None,
      "positive": positive, "minimum": minimum, "below": below, "maximum": maximum,
      "model": (model,) if isinstance(model, str) else model})


def _number(bound: float) -> str:
  """A bound as a flag is written: 4294967296 rather than 4.29497e+09, 0.5 as 0.5."""
  return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def check_field(name: str, value) -> str | None:
  """What is wrong with `value` for field `name` ("must be positive, got 0"), or None."""
  meta = TrainConfig.__dataclass_fields__[name].metadata
  if isinstance(value, float) and not math.isfinite(value):
    return f"must be a finite number, got {value!r}"
  if meta["choices"] and value not in meta["choices"]:
    return f"must be one of {meta['choices']}, got {value!r}"
  if meta["positive"] and not value > 0:
    return f"must be positive, got {value!r}"
  if meta["minimum"] is not None and not value >= meta["minimum"]:
    return f"must be >= {_number(meta['minimum'])}, got {value!r}"
  if meta["maximum"] is not None and not value <= meta["maximum"]:
    return f"must be <= {_number(meta['maximum'])}, got {value!r}"
  if meta["below"] is not None and not value < meta["below"]:
    return f"must be < {_number(meta['below'])}, got {value!r}"
  return None


def check_together(values: Mapping[str, object]) -> str | None:
  """What is wrong with a combination of fields, or None."""
  if values["fused_cpu_step"] and values["optimizer"] != "sparse_sgd":
    return ("fused_cpu_step (--fused_cpu_step) applies row-sparse SGD, so it needs "
            f"--optimizer=sparse_sgd, got {values['optimizer']!r}")
  if values.get("mesh"):
    try:
      sizes = sharding.parse_mesh(values["mesh"])
    except errors.InvalidInput as e:
      return str(e).rstrip(".")
    if values["fused_cpu_step"] and sizes["data"] * sizes["model"] > 1:
      return (f"the fused CPU step (--fused_cpu_step) runs on one device; --mesh="
              f"{values['mesh']} has {sizes['data'] * sizes['model']}: drop one of them")
  if values["fused_cpu_step"] and values.get("adaptive_margin"):
    return ("--adaptive_margin gives each triplet its own margin; the fused CPU step "
            "(--fused_cpu_step) takes one: drop one of them")
  if values.get("warp") and values.get("negative_temperature"):
    return ("--warp trains on one candidate negative and --negative_temperature on all of "
            "them: drop one of them")
  if values["fused_cpu_step"] and values.get("negative_temperature"):
    return ("--negative_temperature trains on every candidate negative; the fused CPU step "
            "(--fused_cpu_step) on the hardest only: drop one of them")
  if values.get("low_rating_weight") and not np.float32(values["low_rating_weight"]) > 0:
    return (f"--low_rating_weight={values['low_rating_weight']!r} is 0 in float32, the weight "
            "every triplet is trained with: raise it, or 0 to train on liked ratings only")
  if values.get("low_rating_weight") and values.get("low_rating_floor", 0.0) >= values["threshold"]:
    return (f"--low_rating_floor={values['low_rating_floor']:g} leaves no rating below "
            f"--threshold={values['threshold']:g} to train on: lower it")
  if (values.get("low_rating_weight") and values.get("low_rating_item_grad", 1.0) < 1.0
      and values["fused_cpu_step"]):
    return ("--low_rating_item_grad scales part of a triplet's gradient; the fused CPU step "
            "(--fused_cpu_step) takes it whole: drop one of them")
  high = values.get("high_rating_weight", 1.0)
  if np.float32(high) != np.float32(1.0):
    if not np.float32(high) > 0:
      return (f"--high_rating_weight={high!r} is 0 in float32, the weight (or value) the "
              "high ratings are trained with: raise it (1: as every liked rating)")
    if values.get("high_rating_floor", 5.0) < values["threshold"]:
      return (f"--high_rating_floor={values['high_rating_floor']:g} is below --threshold="
              f"{values['threshold']:g}: the high ratings are liked ones; raise it")
  for flag, known in (("item_features", features.ITEM_FEATURES),
                      ("user_features", features.USER_FEATURES)):
    if values.get(flag):
      try:
        features.check_feature_names(f"--{flag}", values[flag], known)
      except errors.InvalidInput as e:
        return str(e).rstrip(".")
      if values["optimizer"].startswith("sparse_") or values["fused_cpu_step"]:
        return (f"--{flag} trains feature tables with a dense optimizer (adam, adagrad, sgd); "
                f"--optimizer={values['optimizer']} updates gathered table rows only")
  model = values.get("model", "triplet")
  for field in dataclasses.fields(TrainConfig):
    owners = field.metadata["model"]
    if (owners and model not in owners and field.name in values
        and values[field.name] != field.default):
      return (f"--{field.name} is a setting of --model={' or '.join(owners)}, not of "
              f"--model={model}; drop it or change --model")
  return None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """A training run. Defaults are the reference lab's settings.

  Attributes:
    dataset: a `tripjax.data.registry` name (`ml-100k`, `synthetic-ml-100k`, ...).
    data_dir: folder holding MovieLens releases; None for the loader's default search.
    download: whether a missing MovieLens release may be downloaded.
    threshold: ratings >= threshold count as positives.
    min_user_positives: users with fewer positives are dropped.
    test_per_user: positives held out per user for the test set.
    split_seed: seed of the leave-k-out split.
    data_seed: seed of the synthetic generator (ignored for MovieLens).
    cold_item_fraction: share of the items held out whole before the split
      (`tripjax.data.cold_items`): no positive of theirs is trained on, and they are evaluated
      apart, scored from their features alone.
    model: a `tripjax.models` name (`models.NAMES`); the fields below from `dim` to
      `fused_cpu_step` are the triplet model's (other models ignore them).
    dim: embedding size D.
    init_scale: standard deviation of the initial embeddings.
    margin: the triplet margin (cosine units).
    optimizer: one of `OPTIMIZERS`; `sparse_*` update only the rows a batch gathers.
    learning_rate: the (peak) learning rate.
    schedule: one of `SCHEDULES`: constant, cosine decay to 0 over the run, or linear warmup
      for `warmup_steps` then cosine decay.
    warmup_steps: warmup length for `warmup_cosine`.
    batch_size: triplets per optimizer step.
    epochs: passes over the training positives.
    num_negatives: negative candidates per triplet; the step trains on the hardest one.
    negative_exponent: negatives are drawn among the user's missing items with probability
      proportional to `(1 + n_i) ** negative_exponent`, n_i item i's training positives
      (`sampling.EpochSampler`); 0 draws them uniformly.
    negative_temperature: 0 trains a triplet on the hardest of its `num_negatives` candidates;
      T > 0 on all of them, their hinge losses weighted by softmax(loss / T) without gradient
      through the weights (T -> 0 is the hardest, large T their mean).
    warp: train a triplet on the first of its `num_negatives` candidates (in draw order) that
      violates the margin, its hinge weighted by log((I - 1) / draws), WARP's rank estimate
      (`sampling.warp_negatives`), instead of the hardest.
    adaptive_margin: each triplet's margin is `margin * (1 - cos(p, n)) / 2`: a negative much
      like the positive needs less separating from it.
    l2: weight of the L2 penalty on the gathered embeddings (mean over the batch).
    low_rating_weight: w > 0 also trains the triplet model on the user's ratings below
      `threshold` (items watched and not liked, which the lab's pipeline drops) as positives of
      weight w in each batch's weighted mean (`registry.load_low_ratings`,
      `sampling.EpochSampler`'s weak positives); their negatives, like every other, are drawn
      among the items not liked. Evaluation is unchanged (the test positives are liked items;
      the low-rated items stay among the candidates). 0: the liked positives alone. iALS
      (`--model=ials`) and EASE take them as observations of value w (iALS: confidence
      1 + alpha w; EASE: entries of X, in its Gram matrix and in the users' rows it scores).
    low_rating_floor: only the ratings in [low_rating_floor, threshold) are low ratings (e.g.
      3: the lukewarm ones, not the dislikes); 0: every rating below the threshold. Unused
      while `low_rating_weight` is 0 (so that an ablation can turn the weight off alone).
    low_rating_item_grad: the share of a low rating's hinge gradient that reaches its item's
      row (1: all of it; 0: the low rating moves its user and its negatives, and its item stays
      where the liked ratings put it; the `l2` term's gradient reaches the row whole). With
      plain SGD the item moves that share as far; with Adam it sets the low ratings' share of
      the item's gradient against the liked ratings'. Unused while `low_rating_weight` is 0.
    high_rating_weight: the liked training ratings >= `high_rating_floor` weigh this in each
      batch's weighted mean instead of 1 (`registry.load_high_ratings`, the sampler's strong
      positives): a rating of 5 says more than a 4. 1: every liked rating alike. iALS and
      EASE: those ratings are observations of value h (confidence 1 + alpha h; X's entries),
      `registry.observed`.
    high_rating_floor: the lowest rating `high_rating_weight` applies to (>= `threshold`).
    user_weight_exponent: b: each of user u's triplets weighs `t_u ** -b` (scaled to a mean of
      1 over an epoch's triplets), t_u its triplets per epoch (liked and low ratings), times
      its kind's weight. The loss's plain mean weighs a user by t_u; the evaluation's mean over
      users weighs every user alike (b = 1 gives each user the same total before the kinds'
      weights); at most 2. `sampling.EpochSampler`'s user_weight_exponent.
    item_features, user_features: comma-separated side features of the triplet model
      (`tripjax.data.features`; LightFM-style: a row's vector is its own embedding plus the
      mean of its features' embeddings); they need a dense optimizer.
    popularity_penalty: scores are `cos(u, i) - popularity_penalty * z(log(1 + n_i))`, n_i the
      item's training positives, z standardised over the items (`model.popularity_offset`);
      0 scores by the cosine alone. Scoring only: training is unchanged.
    seed: seed of initialisation and sampling.
    eval_every: evaluate every this many epochs (and always after the last).
    steps_per_dispatch: batches per jitted call (the `lax.scan` chunk).
    fused_cpu_step: run each batch through `tripjax.kernels`' fused kernel (same loss and update,
      fused, on all cores; compiled on first use with the machine's C++ compiler). Needs
      `optimizer="sparse_sgd"` and the CPU backend.
    eval_block_size: users scored per block during evaluation.
    mesh: `tripjax.sharding` mesh (`data:N[,model:M]`): batches and evaluation blocks split
      over `data`, tables by rows over `model`; empty: one device, no mesh.
  """

  dataset: str = _field("synthetic-ml-100k", "Dataset name (MovieLens or synthetic-<preset>).",
                        choices=registry.DATASET_NAMES)
  data_dir: str | None = _field(None, "Folder holding the MovieLens release (or its parent); "
                                "used or refused, never replaced. Empty: $TRIPJAX_DATA_DIR, "
                                "then ~/.cache/tripjax, then a download.")
  download: bool = _field(True, "Download a missing MovieLens release.")
  threshold: float = _field(4.0, "Ratings >= threshold are positives.", minimum=0.0)
  min_user_positives: int = _field(20, "Drop users with fewer positives.", positive=True)
  test_per_user: int = _field(10, "Held-out positives per user.", positive=True)
  split_seed: int = _field(0, "Seed of the leave-k-out split.", minimum=0, below=SEED_LIMIT)
  data_seed: int = _field(0, "Seed of synthetic data.", minimum=0, below=SEED_LIMIT)
  cold_item_fraction: float = _field(
      0.0, "Share of items held out whole (cold items: none of their positives in train), "
      "evaluated apart; in [0, 1).", minimum=0.0, below=1.0)
  model: str = _field("triplet", "Model to train (tripjax.models).", choices=models.NAMES)
  dim: int = _field(64, "Embedding size.", positive=True)
  init_scale: float = _field(0.1, "Std of the initial embeddings.", positive=True)
  margin: float = _field(0.5, "Triplet margin (cosine).", minimum=0.0)
  optimizer: str = _field("adam", "Optimizer; sparse_* update only the gathered rows.",
                          choices=OPTIMIZERS)
  learning_rate: float = _field(1e-3, "(Peak) learning rate.", positive=True)
  schedule: str = _field("constant", "Learning-rate schedule.", choices=SCHEDULES)
  warmup_steps: int = _field(0, "Warmup steps of warmup_cosine.", minimum=0)
  batch_size: int = _field(64, "Triplets per step.", positive=True)
  epochs: int = _field(3, "Training epochs.", positive=True)
  num_negatives: int = _field(1, "Negative candidates per triplet (the hardest is trained on).",
                              positive=True)
  negative_exponent: float = _field(
      0.0, "Negatives drawn with probability ~ (1 + item's train positives) ** e among the "
      "user's missing items; 0: uniformly.", minimum=0.0)
  negative_temperature: float = _field(
      0.0, "0: train on the hardest of --num_negatives candidates; T > 0: on all, hinge losses "
      "weighted by softmax(loss / T) (large T: their mean).", minimum=0.0)
  warp: bool = _field(
      False, "Train on the first of --num_negatives candidates that violates the margin, "
      "weighted by log((items - 1) / draws) (WARP); false: the hardest.", model="triplet")
  adaptive_margin: bool = _field(
      False, "Scale each triplet's margin by (1 - cos(positive, negative)) / 2: a negative "
      "much like the positive needs less separating.", model="triplet")
  l2: float = _field(0.0, "L2 weight on gathered embeddings.", minimum=0.0)
  low_rating_weight: float = _field(
      0.0, "Ratings below --threshold (watched, not liked) also train as positives of this "
      "weight, never as test items (iALS, EASE: entries of this value); 0: positives only.",
      minimum=0.0, model=("triplet", "ials", "ease"))
  low_rating_floor: float = _field(
      0.0, "Only ratings >= this (and below --threshold) count for --low_rating_weight (unused "
      "without it); 0: all.",
      minimum=0.0, model=("triplet", "ials", "ease"))
  low_rating_item_grad: float = _field(
      1.0, "Share of a low rating's gradient that moves its item (1: all; 0: the rating moves "
      "its user and negatives only); unused without --low_rating_weight.",
      minimum=0.0, maximum=1.0, model="triplet")
  high_rating_weight: float = _field(
      1.0, "Liked ratings >= --high_rating_floor weigh this in each batch's weighted mean; 1: "
      "as every liked rating (iALS, EASE: observations of this value).", positive=True,
      model=("triplet", "ials", "ease"))
  high_rating_floor: float = _field(
      5.0, "The lowest rating --high_rating_weight applies to (at least --threshold).",
      minimum=0.0, model=("triplet", "ials", "ease"))
  user_weight_exponent: float = _field(
      0.0, "Each user's triplets weigh (its triplets per epoch) ** -b, scaled to a mean of 1: "
      "0 weighs users by their triplets, 1 alike (as the per-user mean of the evaluation); "
      "at most 2.", minimum=0.0, maximum=2.0, model="triplet")
  item_features: str = _field("", "Item features in the triplet model, comma-separated: "
                              "genres (an item's vector adds the mean of its features').",
                              model="triplet")
  user_features: str = _field("", "User features in the triplet model, comma-separated: age, "
                              "gender, occupation (ML-100K and ML-1M).", model="triplet")
  popularity_penalty: float = _field(
      0.0, "Scores are cos(u, i) - p * z(log(1 + item count)); 0: the cosine alone.",
      minimum=0.0)
  seed: int = _field(0, "Seed of init and sampling.", minimum=0, below=SEED_LIMIT)
  eval_every: int = _field(1, "Evaluate every N epochs.", positive=True)
  steps_per_dispatch: int = _field(64, "Batches per jitted call (lax.scan chunk).",
                                   positive=True)
  fused_cpu_step: bool = _field(
      False, "Run each batch through the fused C++ kernel (CPU, --optimizer=sparse_sgd; "
      "compiled on first use with $CXX, else c++).")
  eval_block_size: int = _field(1024, "Users per evaluation block.", positive=True)
  mesh: str = _field("", "Device mesh of the triplet model's training and of evaluation: "
                     "data:N or data:N,model:M (N * M devices; empty: one device).")
  # The settings of the other models (refused when given for another --model).
  ease_lambda: float = _field(500.0, "EASE: L2 weight of the item-item regression.",
                              positive=True, model="ease")
  ials_factors: int = _field(64, "iALS: embedding size.", positive=True, model="ials")
  ials_alpha: float = _field(1.0, "iALS: confidence 1 + alpha * r of an observed item.",
                             minimum=0.0, model="ials")
  ials_reg: float = _field(10.0, "iALS: L2 weight of the factors (plain lambda, so it grows "
                           "with the data: ~10-100 on ML-100K).", positive=True, model="ials")
  ials_iterations: int = _field(15, "iALS: alternating sweeps (users, then items).",
                                positive=True, model="ials")
  ials_solver: str = _field("cholesky", "iALS: exact per-row solves, or conjugate gradient "
                            "(implicit's default; faster, approximate per sweep).",
                            choices=("cholesky", "cg"), model="ials")
  ials_cg_steps: int = _field(3, "iALS: conjugate-gradient steps per row and sweep "
                              "(--ials_solver=cg).", positive=True, model="ials")
  rp3_alpha: float = _field(1.0, "RP3beta: exponent of the walk's transition probabilities.",
                            minimum=0.0, model="rp3beta")
  rp3_beta: float = _field(0.5, "RP3beta: popularity penalty, item degree ** -beta.",
                           minimum=0.0, model="rp3beta")
  rp3_top_k: int = _field(0, "RP3beta: neighbours kept per item (0: all).", minimum=0,
                          model="rp3beta")
  knn_k: int = _field(100, "Item-kNN: neighbours kept per item.", positive=True,
                      model="itemknn")
  knn_shrink: float = _field(10.0, "Item-kNN: shrinkage of the cosine similarity.",
                             minimum=0.0, model="itemknn")
  pagerank_restart: float = _field(0.15, "PageRank: restart probability of the walk, in (0, 1).",
                                   positive=True, below=1.0, model="pagerank")
  pagerank_tol: float = _field(1e-6, "PageRank: power iteration stops below this L1 change.",
                               positive=True, model="pagerank")
  pagerank_max_iterations: int = _field(100, "PageRank: most power iterations.", positive=True,
                                        model="pagerank")
  pagerank_popularity: float = _field(
      0.0, "PageRank: scores divided by global PageRank ** this (0: none).", minimum=0.0,
      model="pagerank")

  def __post_init__(self):
    if self.data_dir == "":
      object.__setattr__(self, "data_dir", None)
    for field in dataclasses.fields(self):
      problem = check_field(field.name, getattr(self, field.name))
      if problem:
        raise errors.InvalidInput(f"TrainConfig: {field.name} {problem}.")
    problem = check_together(dataclasses.asdict(self))
    if problem:
      raise errors.InvalidInput(f"TrainConfig: {problem}.")

  @classmethod
  def from_json(cls, path: str | os.PathLike) -> TrainConfig:
    """Reads `config.json` (written by `to_json`); unknown or invalid fields are an error."""
    path = pathlib.Path(path)
    try:
      values = json.loads(path.read_text())
    except (OSError, ValueError) as e:
      raise errors.InvalidInput(f"{path}: cannot read the run's config ({e}).") from e
    if not isinstance(values, dict):
      raise errors.InvalidInput(f"{path}: not a run's config (a JSON object of its fields).")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
      raise errors.InvalidInput(f"{path}: unknown TrainConfig fields {unknown}.")
    for name, value in values.items():
      default = fields[name].default
      kinds = (int, float) if type(default) is float else (type(default),)
      if default is not None and (not isinstance(value, kinds) or
                                  (isinstance(value, bool) and type(default) is not bool)):
        raise errors.InvalidInput(f"{path}: {name} must be of type {type(default).__name__}, "
                                  f"got {value!r}; restore the file or start the run over.")
    return cls(**values)

  def to_json(self) -> str:
    """The config as JSON (`config.json` of a run: what the code reads back)."""
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

  def to_flagfile(self) -> str:
    """The config as absl flagfile text, one `--name=value` per field."""
    lines = []
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if value is None:
        value = ""
      elif isinstance(value, bool):
        value = "true" if value else "false"
      elif isinstance(value, float):
        value = repr(value)
      lines.append(f"--{field.name}={value}")
    return "\n".join(lines) + "\n"

  @classmethod
  def from_flagfile(cls, path: str | os.PathLike, ignore: Sequence[str] = ()) -> TrainConfig:
    """Reads a flagfile written by `to_flagfile` (unknown flags are an error).

    Args:
      path: the flagfile: `--<field>=<value>` lines, blank lines and `#` comments.
      ignore: flag names to skip, e.g. `DRIVER_FLAGS` (the train driver's `--workdir` and
        `--overwrite`) to read a config file of `experiments/configs/`.

    Raises:
      ValueError: the file does not exist, or a line is not a field or has a bad value (naming
        the file and the line).
    """
    path = pathlib.Path(path)
    if not path.is_file():
      raise errors.InvalidInput(f"flagfile {path} " + ("is a folder, not a file." if path.is_dir()
                                                      else "does not exist."))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    try:
      text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
      raise errors.InvalidInput(f"flagfile {path} cannot be read as UTF-8 text ({e}).") from e
    for number, line in enumerate(text.splitlines(), 1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      name, sep, raw = line.lstrip("-").partition("=")
      if line.startswith("--") and name in ignore:
        continue
      if not line.startswith("--") or not sep or name not in fields:
        raise errors.InvalidInput(f"{path}:{number}: expected --<TrainConfig field>=<value>, "
                                  f"got {line!r}.")
      default = fields[name].default
      if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
          raise errors.InvalidInput(f"{path}:{number}: --{name} must be true or false, got "
                                    f"{raw!r}.")
        values[name] = raw.lower() in ("true", "1")
      elif isinstance(default, (int, float)):
        kind = type(default)
        try:
          values[name] = kind(raw)
        except ValueError:
          what = "an integer" if kind is int else "a number"
          raise errors.InvalidInput(f"{path}:{number}: --{name} must be {what}, got "
                                    f"{raw!r}.") from None
      else:
        values[name] = (raw or None) if name == "data_dir" else raw
    return cls(**values)
