"""Hyperparameter search for the triplet model on a validation split carved out of train.

The test positives of the lab split are never looked at: `tuning_split` moves
`validation_per_user` more positives of every user out of TRAIN, `fit` trains on the rest
exactly as `tripjax.train.train_and_evaluate` does (no workdir), and `validate` scores the fit by
the mean AUC of the held-out positives against all items not in the fitted matrix.

`search` draws distinct points of a grid at random (seeded), then walks one grid step at a time
along each axis from the best point while it improves. `ablation` puts the best point's fields
back to a reference (e.g. the lab's settings) one at a time. `tune` is the whole run behind
`experiments/tune.py`: split, search, ablation, the JSON report and the best flagfile.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax import files
from tripjax import loop
from tripjax import model
from tripjax import train as train_lib
from tripjax.config import TrainConfig
from tripjax.data import registry
from tripjax.data import split

# Searchable TrainConfig fields and how a command-line value of each is parsed.
SEARCHABLE = {
    "learning_rate": float, "margin": float, "epochs": int, "batch_size": int, "dim": int,
    "l2": float, "num_negatives": int, "optimizer": str, "schedule": str, "init_scale": float,
    "negative_exponent": float,
}
# Fields that describe where the data is, not the run: never written to the flagfile.
_MACHINE_FIELDS = ("data_dir", "download")

Space = Mapping[str, Sequence[Any]]  # field name -> candidate values (a grid axis)


# ------------------------------------------------------------------------------- data


def tuning_split(train: sp.csr_matrix, validation_per_user: int = 5,
                 seed: int = 1) -> tuple[sp.csr_matrix, sp.csr_matrix]:
  """Carves a validation split out of the training positives only.

  Args:
    train: bool CSR [U, I], the lab split's training positives (test already removed).
    validation_per_user: positives per user moved to validation.
    seed: seed of the hold-out (`tripjax.data.split.leave_k_out`).

  Returns:
    (fit, valid): disjoint bool CSR [U, I] with fit + valid == train.

  Raises:
    ValueError: a user has fewer than validation_per_user + 1 training positives.
  """
  try:
    return split.leave_k_out(train, k=validation_per_user, seed=seed)
  except ValueError as e:
    raise errors.InvalidInput(f"--validation_per_user={validation_per_user}: {e}") from e


# ------------------------------------------------------------------------------- one trial


def fit(config: TrainConfig, matrix: sp.csr_matrix) -> tuple[model.Params, float]:
  """Trains the triplet model on `matrix` exactly as `train_and_evaluate` does, without a workdir.

  The same loop (`loop.fit`): sampler, optimizer, initialisation and jitted step, epoch by
  epoch; no checkpoints and no evaluation.

  Args:
    config: the run's settings (its data fields are ignored: the data is `matrix`).
    matrix: bool CSR [U, I], the positives to train on.

  Returns:
    (params {"user": float32[U, D], "item": float32[I, D]}, training seconds).

  Raises:
    loop.TrainingDiverged: the loss or the parameters became NaN/Inf.
  """
  fitted = loop.fit(config, matrix)
  return fitted.state.params, fitted.train_seconds


def validate(config: TrainConfig, fit_matrix: sp.csr_matrix,
             valid_matrix: sp.csr_matrix) -> dict[str, float]:
  """Fits on `fit_matrix` and returns the validation means (auc, ndcg@20, ...) and seconds.

  Scored as `train_and_evaluate` scores: cosine plus `model.popularity_offset(fit_matrix,
  config.popularity_penalty)` (the popularity counted on the fitted positives).
  """
  params, seconds = fit(config, fit_matrix)
  offset = model.popularity_offset(fit_matrix, config.popularity_penalty)
  metrics = train_lib.evaluate(model.score_fn(params, offset), fit_matrix, valid_matrix,
                               config.eval_block_size)
  metrics["train_seconds"] = seconds
  return metrics


def validate_mean(config: TrainConfig,
                  splits: Sequence[tuple[sp.csr_matrix, sp.csr_matrix]]) -> dict[str, Any]:
  """`validate` on each (fit, valid) split; the mean of every metric over the splits.

  Averaging over validation splits drawn with different seeds lowers the noise of the
  objective (each split is fitted from scratch), at one fit per split.

  Args:
    config: the run's settings.
    splits: one or more (fit bool CSR [U, I], valid bool CSR [U, I]) pairs.

  Returns:
    the mean metrics (train_seconds: their sum) and `auc_per_split`, a list of the AUCs.
  """
  if not splits:
    raise errors.InvalidInput("validate_mean: no validation split given.")
  runs = [validate(config, fit_matrix, valid_matrix) for fit_matrix, valid_matrix in splits]
  metrics = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
  metrics["train_seconds"] = float(sum(r["train_seconds"] for r in runs))
  if len(runs) > 1:
    metrics["auc_per_split"] = [r["auc"] for r in runs]
  return metrics


# ------------------------------------------------------------------------------- score offset


def popularity_offset(matrix: sp.csr_matrix, penalty: float) -> np.ndarray:
  """`model.popularity_offset(matrix, penalty)` as an array: zeros where that gives None.

  The offset is `-penalty * z(log(1 + count))`, `count` each item's positives in `matrix`, z
  standardised over the items (mean 0, std 1).

  Args:
    matrix: bool CSR [U, I], the training positives the model saw.
    penalty: >= 0; 0 gives zeros.

  Returns:
    float32[I], to add to every user's scores.

  Raises:
    ValueError: penalty is negative or not finite.
  """
  check_penalties([penalty])
  offset = model.popularity_offset(matrix, penalty)
  return np.zeros(matrix.shape[1], np.float32) if offset is None else offset


def check_penalties(penalties: Sequence[float]) -> tuple[float, ...]:
  """Popularity penalties as floats; raises ValueError on a negative or non-finite one."""
  penalties = tuple(float(p) for p in penalties)
  for p in penalties:
    if not (math.isfinite(p) and p >= 0):
      raise errors.InvalidInput(f"popularity penalty must be a finite number >= 0, got {p!r}.")
  return penalties


def penalty_scan(config: TrainConfig, splits: Sequence[tuple[sp.csr_matrix, sp.csr_matrix]],
                 penalties: Sequence[float]) -> list[dict]:
  """Validation AUC of one fitted model per split under each popularity penalty.

  Fits `config` once per (fit, valid) split, then scores it with `popularity_offset(fit, p)`
  for every penalty p (post hoc: the training is the same for every p).

  Returns:
    [{"penalty", "auc" (mean over the splits), "auc_per_split"}], in the order of `penalties`.
  """
  penalties = check_penalties(penalties)
  if not penalties:
    raise errors.InvalidInput("penalty_scan: no penalty given.")
  aucs = np.zeros((len(penalties), len(splits)))
  for j, (fit_matrix, valid_matrix) in enumerate(splits):
    params, _ = fit(config, fit_matrix)
    for i, p in enumerate(penalties):
      score = model.score_fn(params, popularity_offset(fit_matrix, p))
      aucs[i, j] = train_lib.evaluate(score, fit_matrix, valid_matrix,
                                      config.eval_block_size)["auc"]
  return [{"penalty": p, "auc": float(aucs[i].mean()), "auc_per_split": aucs[i].tolist()}
          for i, p in enumerate(penalties)]


# ------------------------------------------------------------------------------- the search


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
        dataclasses.replace(TrainConfig(), **{name: value})
      except (ValueError, TypeError) as e:
        raise errors.InvalidInput(f"search space: {name}={value!r} is not a valid setting: "
                                  f"{e}") from e
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


def search(base: TrainConfig, space: Space, objective: Callable[[TrainConfig], dict],
           num_trials: int, initial_trials: int, seed: int = 0,
           on_trial: Callable[[list[dict]], None] | None = None,
           previous: Sequence[dict] = ()) -> list[dict]:
  """Coarse-to-fine grid search: random distinct points, then one-step coordinate moves.

  Args:
    base: the settings the searched fields are applied to.
    space: field -> candidate values (see `check_space`).
    objective: config -> metrics dict holding "auc" (higher is better).
    num_trials: total trials (stops earlier when the walk finds no better neighbour).
    initial_trials: trials of the random stage (at most num_trials).
    seed: seed of the random stage.
    on_trial: called with the trial list after each trial (e.g. to save progress).
    previous: trials of an earlier run of the same search; a point found there reuses its
      metrics instead of training again (the search being deterministic, an interrupted run
      resumes where it stopped).

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
    config = dataclasses.replace(base, **values)
    try:
      metrics = cache[_key(values)] if _key(values) in cache else objective(config)
    except loop.TrainingDiverged as e:
      logging.warning("trial %d diverged: %s", len(trials), e)
      metrics = {"auc": float("nan"), "diverged": str(e)}
    seen[point] = metrics["auc"]
    trials.append({"trial": len(trials), "stage": stage, "values": values, "metrics": metrics})
    logging.info("trial %d (%s) AUC %.4f  %s", len(trials) - 1, stage, metrics["auc"], values)
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
             objective: Callable[[TrainConfig], dict], best_auc: float) -> list[dict]:
  """What each setting contributes: the best config with one field put back to `reference`.

  Args:
    best: the tuned settings.
    reference: the settings to compare with (e.g. the lab's).
    fields: the fields to revert, one at a time (fields equal in both are skipped).
    objective: config -> metrics with "auc" (the validation objective of the search).
    best_auc: the objective of `best`.

  Returns:
    [{"field", "tuned", "reference", "auc", "delta"}], delta = best_auc - auc (what keeping the
    tuned value is worth).
  """
  rows = []
  for name in fields:
    tuned, ref = getattr(best, name), getattr(reference, name)
    if tuned == ref:
      continue
    try:
      auc = objective(dataclasses.replace(best, **{name: ref}))["auc"]
    except loop.TrainingDiverged:
      auc = float("nan")
    rows.append({"field": name, "tuned": tuned, "reference": ref, "auc": auc,
                 "delta": best_auc - auc})
    logging.info("ablation: %s=%r instead of %r: AUC %.4f (%+.4f)", name, ref, tuned, auc,
                 auc - best_auc)
  return rows


def best_trial(trials: Sequence[dict]) -> dict:
  """The trial with the highest validation AUC (the earliest on ties; diverged ones never)."""
  finite = [t for t in trials if not math.isnan(t["metrics"]["auc"])]
  if not finite:
    raise errors.InvalidInput("every trial diverged; lower the learning rates of the search space.")
  return max(finite, key=lambda t: (t["metrics"]["auc"], -t["trial"]))


# ------------------------------------------------------------------------------- outputs


def flagfile_text(config: TrainConfig, searched: Sequence[str], header: str = "") -> str:
  """A flagfile of `config`: every searched field and every field that differs from the defaults.

  `data_dir`/`download` are left out (they depend on the machine, not on the result).
  """
  defaults = TrainConfig()
  lines = [f"# {line}" for line in header.splitlines()]
  full = dict(line[2:].split("=", 1) for line in config.to_flagfile().splitlines())
  for field in dataclasses.fields(config):
    name = field.name
    if name in _MACHINE_FIELDS:
      continue
    if name in searched or getattr(config, name) != getattr(defaults, name):
      lines.append(f"--{name}={full[name]}")
  return "\n".join(lines) + "\n"


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
  """Validation seeds as a tuple; raises ValueError when empty or repeated."""
  seeds = tuple(seeds)
  if not seeds:
    raise errors.InvalidInput("validation_seeds: give at least one seed.")
  if len(set(seeds)) != len(seeds):
    raise errors.InvalidInput(f"validation_seeds: {list(seeds)} repeats a seed (the splits would "
                              "be the same).")
  return seeds


def tune(base: TrainConfig, space: Space, num_trials: int, initial_trials: int, seed: int = 0,
         validation_per_user: int = 5, validation_seeds: Sequence[int] = (1,),
         out_json: str | os.PathLike | None = None,
         out_flagfile: str | os.PathLike | None = None, previous: Sequence[dict] = (),
         reference: TrainConfig | None = None,
         popularity_penalties: Sequence[float] = ()) -> dict:
  """Loads the base config's lab split, searches on validation splits, writes the outputs.

  Args:
    base, space, num_trials, initial_trials, seed, previous: as in `search`.
    validation_per_user: as in `tuning_split`.
    validation_seeds: one validation split per seed (`tuning_split`); a trial's objective is
      the mean over them (`validate_mean`).
    out_json, out_flagfile: where the report and the best flagfile go (None: not written).
    reference: when given, `ablation` of the best config against it (on validation).
    popularity_penalties: when given, `penalty_scan` of the best config over them on the
      same validation splits; the report's "popularity_penalty" holds the scan and the best.

  Returns:
    the report written to `out_json`: {"base_config", "space", "budget", "split", "trials",
    "best"} (plus "flagfile", "ablation" and "popularity_penalty" when asked for).
  """
  space = check_space(space)
  validation_seeds = check_seeds(validation_seeds)
  popularity_penalties = check_penalties(popularity_penalties)
  dataset, train, test = registry.load_split(base)
  splits = [tuning_split(train, validation_per_user, s) for s in validation_seeds]
  fit_matrix, valid_matrix = splits[0]
  report = {
      "base_config": dataclasses.asdict(base),
      "space": {k: list(v) for k, v in space.items()},
      "budget": {"num_trials": num_trials, "initial_trials": initial_trials, "seed": seed},
      "split": {"dataset": base.dataset, "split_seed": base.split_seed,
                "test_per_user": base.test_per_user, "validation_per_user": validation_per_user,
                "validation_seeds": list(validation_seeds), "users": int(train.shape[0]),
                "items": int(train.shape[1]), "fit_positives": int(fit_matrix.nnz),
                "validation_positives": int(valid_matrix.nnz),
                "test_positives_unused": int(test.nnz)},
      "jax_version": jax.__version__, "device_kind": jax.devices()[0].device_kind,
  }
  del dataset, test  # the test positives play no part in the search

  def save(trials):
    report["trials"] = trials
    if out_json is not None:
      files.write_json_atomic(out_json, report)

  def objective(config):
    return validate_mean(config, splits)

  trials = search(base, space, objective, num_trials, initial_trials, seed, on_trial=save,
                  previous=previous)
  best = best_trial(trials)
  report["best"] = best
  if reference is not None:
    report["ablation"] = ablation(dataclasses.replace(base, **best["values"]), reference,
                                  list(space), objective, best["metrics"]["auc"])
  penalty_note = ""
  if popularity_penalties:
    scan = penalty_scan(dataclasses.replace(base, **best["values"]), splits,
                        popularity_penalties)
    chosen = max(scan, key=lambda row: row["auc"])
    report["popularity_penalty"] = {"scan": scan, "best": chosen["penalty"],
                                    "best_auc": chosen["auc"]}
    penalty_note = (f"\nbest popularity penalty (scores - p * z(log(1 + item count))): "
                    f"{chosen['penalty']:g}, validation AUC {chosen['auc']:.4f}.")
  if out_flagfile is not None:
    config = dataclasses.replace(base, **best["values"])
    header = (f"Tuned by experiments.tune on {base.dataset} (validation: {validation_per_user} "
              f"train positives per user, seeds {','.join(map(str, validation_seeds))}; split seed "
              f"{base.split_seed}):\nvalidation AUC {best['metrics']['auc']:.4f}, trial "
              f"{best['trial']} of {len(trials)}." + penalty_note)
    files.write_atomic(out_flagfile, flagfile_text(config, list(space), header))
    report["flagfile"] = str(out_flagfile)
  save(trials)
  return report


# ------------------------------------------------------------------------------- inputs


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


def previous_trials(path: str | os.PathLike, base: TrainConfig, space: Space,
                    validation_per_user: int, validation_seeds: Sequence[int]) -> list[dict]:
  """The trials of an earlier report at `path` ([] when absent) for `search(previous=...)`.

  Raises:
    ValueError: the report was written for another base config, space or validation split.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return []
  old = json.loads(path.read_text())
  old_split = old.get("split", {})
  # Reports written before validation_seeds existed hold one "validation_seed".
  old_seeds = old_split.get("validation_seeds", [old_split.get("validation_seed")])
  same = (old.get("base_config") == json.loads(json.dumps(dataclasses.asdict(base))) and
          old.get("space") == {k: list(v) for k, v in check_space(space).items()} and
          old_split.get("validation_per_user") == validation_per_user and
          old_seeds == list(validation_seeds))
  if not same:
    raise errors.InvalidInput(f"--resume: {path} holds a search with another base config, space "
                              "or validation split; use another --out_json.")
  return old.get("trials", [])
