"""The hyperparameter search: a grid of TrainConfig fields, walked coarse to fine.

`search` draws distinct points of a grid at random (seeded), then walks one grid step at a time
along each axis from the best point while it improves. `ablation` puts the best point's fields
back to a reference (e.g. the lab's settings) one at a time. The objective is any
config -> metrics function (`tuning.validation.validate_mean` in `tune`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import numpy as np

from tripjax import config as config_lib
from tripjax import errors
from tripjax import loop
from tripjax.config import TrainConfig

# Searchable TrainConfig fields and how a command-line value of each is parsed.
SEARCHABLE = {
    "learning_rate": float, "margin": float, "epochs": int, "batch_size": int, "dim": int,
    "l2": float, "num_negatives": int, "optimizer": str, "schedule": str, "init_scale": float,
    "negative_exponent": float, "negative_temperature": float,
    "ease_lambda": float, "ials_factors": int, "ials_alpha": float, "ials_reg": float,
    "ials_iterations": int, "rp3_alpha": float, "rp3_beta": float, "rp3_top_k": int,
    "knn_k": int, "knn_shrink": float, "pagerank_restart": float, "pagerank_popularity": float,
    "low_rating_weight": float, "low_rating_floor": float,
    "low_rating_item_grad": float, "high_rating_weight": float, "high_rating_floor": float,
    "user_weight_exponent": float,
}

Space = Mapping[str, Sequence[Any]]  # field name -> candidate values (a grid axis)

# The grid `experiments.tune` searches for each model when no `--search_<field>` flag is given.
# The triplet model's was narrowed by a first, coarser search on ML-100K: batch size only
# changes speed at a fixed epoch count, margins below 0.5 and dims below 64 lose
# (benchmarks/results/tune_ml100k*.json).
DEFAULT_SPACES = {
    "triplet": {
        "learning_rate": ("0.01", "0.03", "0.1", "0.3"), "margin": ("0.5", "0.6", "0.7"),
        "epochs": ("40", "80", "160"), "batch_size": ("1024",), "dim": ("64", "128"),
        "l2": ("0.0", "0.0001"), "num_negatives": ("1", "2", "3"), "optimizer": ("adam",),
        "schedule": ("cosine",), "init_scale": ("0.1",), "negative_exponent": ("0.0",)},
    "ease": {"ease_lambda": ("50", "100", "200", "500", "1000", "2000")},
    "ials": {"ials_factors": ("64", "128"), "ials_alpha": ("1", "3", "10", "30", "100"),
             "ials_reg": ("1", "3", "10", "30", "100", "300")},
    "rp3beta": {"rp3_alpha": ("0.5", "0.75", "1.0", "1.25"),
                "rp3_beta": ("0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"),
                "rp3_top_k": ("0", "50", "100", "200")},
    "itemknn": {"knn_k": ("25", "50", "100", "200", "400"),
                "knn_shrink": ("0", "10", "50", "100")},
    "pagerank": {"pagerank_restart": ("0.1", "0.2", "0.3", "0.5", "0.7", "0.9"),
                 "pagerank_popularity": ("0.0", "0.25", "0.5", "0.75", "1.0", "1.25", "1.5",
                                         "2.0")},
}
DEFAULT_SPACE = DEFAULT_SPACES["triplet"]


def check_space(space: Space) -> dict[str, tuple]:
  """Validates a search space: known fields, non-empty, distinct values, each a valid config.

  Returns:
    field -> tuple of values, in the given order (the order is the grid axis).

  Raises:
    ValueError: naming the field and the bad value.
  """
  out = {}
  for name, values in space.items():
    if name not in SEARCHABLE:
      raise errors.InvalidInput(f"search space: unknown field {name!r}; searchable: "
                                f"{sorted(SEARCHABLE)}")
    values = tuple(values)
    if not values:
      raise errors.InvalidInput(f"search space: {name} has no values.")
    if len(set(values)) != len(values):
      raise errors.InvalidInput(f"search space: {name} repeats a value: {list(values)}.")
    for value in values:
      try:
        problem = config_lib.check_field(name, value)
      except TypeError as e:
        problem = str(e)
      if problem:
        raise errors.InvalidInput(f"search space: {name}={value!r} is not a valid setting: "
                                  f"{name} {problem}.")
    out[name] = values
  return out


def initial_points(space: Space, num_points: int, seed: int) -> list[tuple[int, ...]]:
  """`num_points` distinct grid points (index tuples) drawn uniformly, reproducibly from seed."""
  shape = tuple(len(v) for v in space.values())
  total = math.prod(shape)
  chosen = np.random.default_rng(seed).choice(total, size=min(num_points, total), replace=False)
  return [tuple(int(i) for i in np.unravel_index(c, shape)) for c in chosen]


def neighbours(point: tuple[int, ...], space: Space) -> list[tuple[int, ...]]:
  """The grid points one step away from `point` along a single axis, axis by axis."""
  sizes = [len(v) for v in space.values()]
  out = []
  for axis, size in enumerate(sizes):
    for delta in (-1, 1):
      j = point[axis] + delta
      if 0 <= j < size:
        out.append(point[:axis] + (j,) + point[axis + 1:])
  return out


def point_values(point: tuple[int, ...], space: Space) -> dict[str, Any]:
  return {name: values[i] for (name, values), i in zip(space.items(), point)}

def parse_space(raw: Mapping[str, Sequence[str]]) -> dict[str, tuple]:
  """Parses `--search_<field>` lists ("a,b,c") into typed values; raises ValueError on junk."""
  space = {}
  for name, values in raw.items():
    if name not in SEARCHABLE:
      check_space({name: values})  # raises, naming the searchable fields
    try:
      space[name] = tuple(SEARCHABLE[name](v) for v in values)
    except ValueError as e:
      raise errors.InvalidInput(f"--search_{name}={','.join(values)}: {e}") from e
  return check_space(space)


def search(base: TrainConfig, space: Space, objective: Callable[[TrainConfig], dict],
           num_trials: int, initial_trials: int, seed: int = 0,
           on_trial: Callable[[list[dict]], None] | None = None,
           previous: Sequence[dict] = (), metric: str = "auc") -> list[dict]:
  """Coarse-to-fine grid search: random distinct points, then one-step coordinate moves.

  Args:
    base: the settings the searched fields are applied to.
    space: field -> candidate values (see `check_space`).
    objective: config -> metrics dict holding `metric` (higher is better).
    num_trials: total trials (stops earlier when the walk finds no better neighbour).
    initial_trials: trials of the random stage (at most num_trials).
    seed: seed of the random stage.
    on_trial: called with the trial list after each trial (e.g. to save progress).
    previous: trials of an earlier run of the same search; a point found there reuses its
      metrics instead of training again (the search being deterministic, an interrupted run
      resumes where it stopped).
    metric: the validation metric the search maximises ("auc", "ndcg@20", ...).

  Returns:
    the trials, in order: {"trial", "stage", "values", "metrics"}.
  """
  space = check_space(space)
  if num_trials < 1 or initial_trials < 1:
    raise errors.InvalidInput(f"num_trials and initial_trials must be >= 1, got {num_trials} and "
                              f"{initial_trials}.")
  trials, seen = [], {}
  cache = {_key(t["values"]): t["metrics"] for t in previous}

  def run(point, stage):
    values = point_values(point, space)
    try:
      config = dataclasses.replace(base, **values)
    except errors.InvalidInput as e:  # a combination of values the config refuses
      logging.warning("trial %d refused: %s", len(trials), e)
      metrics = {"auc": float("nan"), metric: float("nan"), "refused": str(e)}
    else:
      try:
        metrics = cache[_key(values)] if _key(values) in cache else objective(config)
      except loop.TrainingDiverged as e:
        logging.warning("trial %d diverged: %s", len(trials), e)
        metrics = {"auc": float("nan"), metric: float("nan"), "diverged": str(e)}
    seen[point] = metrics[metric]
    trials.append({"trial": len(trials), "stage": stage, "values": values, "metrics": metrics})
    logging.info("trial %d (%s) %s %.4f  %s", len(trials) - 1, stage, metric, metrics[metric],
                 values)
    if on_trial is not None:
      on_trial(trials)

  for point in initial_points(space, min(initial_trials, num_trials), seed):
    run(point, "random")

  def score(p):
    return -math.inf if math.isnan(seen[p]) else seen[p]

  best = max(seen, key=score)
  while len(trials) < num_trials:
    fresh = [p for p in neighbours(best, space) if p not in seen]
    if not fresh:
      break
    for point in fresh[:num_trials - len(trials)]:
      run(point, "refine")
    new_best = max(seen, key=score)
    if new_best == best:
      break
    best = new_best
  return trials


def _key(values: Mapping[str, Any]) -> str:
  return json.dumps(dict(values), sort_keys=True)


def ablation(best: TrainConfig, reference: TrainConfig, fields: Sequence[str],
             objective: Callable[[TrainConfig], dict], best_value: float,
             metric: str = "auc") -> list[dict]:
  """What each setting contributes: the best config with one field put back to `reference`.

  Args:
    best: the tuned settings.
    reference: the settings to compare with (e.g. the lab's).
    fields: the fields to revert, one at a time (fields equal in both are skipped).
    objective: config -> metrics with `metric` (the validation objective of the search).
    best_value: the objective of `best`.
    metric: the metric compared.

  Returns:
    [{"field", "tuned", "reference", <metric>, "delta"}], delta = best_value - value (what
    keeping the tuned value is worth).
  """
  rows = []
  for name in fields:
    tuned, ref = getattr(best, name), getattr(reference, name)
    if tuned == ref:
      continue
    try:
      value = objective(dataclasses.replace(best, **{name: ref}))[metric]
    except (loop.TrainingDiverged, errors.InvalidInput):  # diverged, or a refused combination
      value = float("nan")
    rows.append({"field": name, "tuned": tuned, "reference": ref, metric: value,
                 "delta": best_value - value})
    logging.info("ablation: %s=%r instead of %r: %s %.4f (%+.4f)", name, ref, tuned, metric,
                 value, value - best_value)
  return rows


def best_trial(trials: Sequence[dict], metric: str = "auc") -> dict:
  """The trial with the highest validation `metric` (the earliest on ties; diverged or refused
  ones never)."""
  finite = [t for t in trials if not math.isnan(t["metrics"][metric])]
  if not finite:
    refused = [t["metrics"]["refused"] for t in trials if "refused" in t["metrics"]]
    if len(refused) == len(trials):
      raise errors.InvalidInput(f"every trial was refused; the first: {refused[0]}")
    if refused:
      raise errors.InvalidInput(f"every trial diverged or was refused ({len(refused)} of "
                                f"{len(trials)}; the first: {refused[0]})")
    raise errors.InvalidInput("every trial diverged; lower the learning rates of the search space.")
  return max(finite, key=lambda t: (t["metrics"][metric], -t["trial"]))
