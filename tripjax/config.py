"""`TrainConfig`: every setting of a training run, validated, and its flagfile form.

Field names are the flag names of `experiments/train.py`, so `to_flagfile` writes a flagfile
that reproduces the run and `from_flagfile` reads it back (the workdir's `flags.txt`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Sequence

from tripjax import errors

OPTIMIZERS = ("adam", "adagrad", "sgd", "sparse_adam", "sparse_adagrad",
              "sparse_rowwise_adagrad", "sparse_sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
# Flags of experiments/train.py that are not TrainConfig fields (config files may hold them).
DRIVER_FLAGS = ("workdir", "overwrite", "checkpoint_every")


def dataset_names() -> tuple[str, ...]:
  """The dataset names `tripjax.data.registry.load_dataset` accepts."""
  from tripjax.data import registry  # pylint: disable=g-import-not-at-top
  return tuple(registry.DATASET_NAMES)


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
    l2: weight of the L2 penalty on the gathered embeddings (mean over the batch).
    popularity_penalty: scores are `cos(u, i) - popularity_penalty * z(log(1 + n_i))`, n_i the
      item's training positives, z standardised over the items (`model.popularity_offset`);
      0 scores by the cosine alone. Scoring only: training is unchanged.
    seed: seed of initialisation and sampling.
    eval_every: evaluate every this many epochs (and always after the last).
    steps_per_dispatch: batches per jitted call (the `lax.scan` chunk).
    fused_cpu_step: run each batch through `tripjax.fused_cpu`'s kernel (same loss and update,
      fused, on all cores; compiled on first use with the machine's C++ compiler). Needs
      `optimizer="sparse_sgd"` and the CPU backend.
    eval_block_size: users scored per block during evaluation.
  """

  dataset: str = "synthetic-ml-100k"
  data_dir: str | None = None
  download: bool = True
  threshold: float = 4.0
  min_user_positives: int = 20
  test_per_user: int = 10
  split_seed: int = 0
  data_seed: int = 0
  dim: int = 64
  init_scale: float = 0.1
  margin: float = 0.5
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  schedule: str = "constant"
  warmup_steps: int = 0
  batch_size: int = 64
  epochs: int = 3
  num_negatives: int = 1
  negative_exponent: float = 0.0
  l2: float = 0.0
  popularity_penalty: float = 0.0
  seed: int = 0
  eval_every: int = 1
  steps_per_dispatch: int = 64
  fused_cpu_step: bool = False
  eval_block_size: int = 1024

  def __post_init__(self):
    if self.data_dir == "":
      object.__setattr__(self, "data_dir", None)
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if isinstance(value, float) and not math.isfinite(value):
        raise errors.InvalidInput(f"TrainConfig: {field.name} must be a finite number, got "
                                  f"{value!r}.")
    positive = ("dim", "batch_size", "epochs", "num_negatives", "eval_every",
                "steps_per_dispatch", "eval_block_size", "test_per_user", "learning_rate",
                "init_scale", "min_user_positives")
    for name in positive:
      if not getattr(self, name) > 0:
        raise errors.InvalidInput(f"TrainConfig: {name} must be positive, got "
                                  f"{getattr(self, name)!r}.")
    for name in ("margin", "l2", "popularity_penalty", "warmup_steps", "threshold",
                 "negative_exponent"):
      if not getattr(self, name) >= 0:
        raise errors.InvalidInput(f"TrainConfig: {name} must be >= 0, got "
                                  f"{getattr(self, name)!r}.")
    if self.optimizer not in OPTIMIZERS:
      raise errors.InvalidInput(f"TrainConfig: optimizer must be one of {OPTIMIZERS}, got "
                                f"{self.optimizer!r}.")
    if self.schedule not in SCHEDULES:
      raise errors.InvalidInput(f"TrainConfig: schedule must be one of {SCHEDULES}, got "
                                f"{self.schedule!r}.")
    if self.fused_cpu_step and self.optimizer != "sparse_sgd":
      raise errors.InvalidInput("TrainConfig: fused_cpu_step applies row-sparse SGD, so it needs "
                                f"optimizer='sparse_sgd', got {self.optimizer!r}.")
    names = dataset_names()
    if self.dataset not in names:
      raise errors.InvalidInput(f"TrainConfig: unknown dataset {self.dataset!r}; known: {names}.")

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
      raise errors.InvalidInput(f"flagfile {path} does not exist.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
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
