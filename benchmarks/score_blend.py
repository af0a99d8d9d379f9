r"""What blending the triplet model's scores with another model's adds, on validation.

  python -m benchmarks.score_blend --data_dir=../shared/data

The base (`--blend_base`) and each other model (`--blend_with`, flagfiles) are fitted once per
validation split carved out of the lab split's training positives (`tuning.tuning_split`, one
per `--blend_seeds`; the test positives play no part), then scored alone and blended: each
model's scores of a user over all items standardised (mean 0, standard deviation 1), then
`(1 - w) * base + w * other` for each `--blend_weights` w. The table gives the means over the
splits of AUC and P/R/NDCG@20, and each row's change against the base alone. A blend that adds
little says the models rank nearly alike: the base sits near what both reach on this data.
The committed table (benchmarks/results/score_blend_ml100k.md) was made by

  python -m benchmarks.score_blend --data_dir=../shared/data \
      --blend_json=benchmarks/results/score_blend_ml100k.json \
      --blend_md=benchmarks/results/score_blend_ml100k.md
"""

from __future__ import annotations

import dataclasses

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import ml100k_flags  # pylint: disable=unused-import (defines --data_dir)
from benchmarks import outputs
from experiments import run_cli
from tripjax import errors
from tripjax import files
from tripjax import models
from tripjax import train as train_lib
from tripjax import tuning
from tripjax.config import TrainConfig
from tripjax.data import registry

COLUMNS = outputs.VALIDATION_COLUMNS

_BASE = flags.DEFINE_string("blend_base", "experiments/configs/ml100k.cfg",
                            "The model every blend starts from (a flagfile).")
_WITH = flags.DEFINE_list("blend_with", ["experiments/configs/ml100k_ials.cfg",
                                         "experiments/configs/ml100k_ease.cfg"],
                          "Flagfiles of the models blended with the base, one at a time.")
_WEIGHTS = flags.DEFINE_list("blend_weights", ["0.2", "0.35", "0.5"],
                             "The other model's weights w in (0, 1).")
_SEEDS = flags.DEFINE_list("blend_seeds", ["1", "2", "3"], "One validation split each.")
_PER_USER = flags.DEFINE_integer("blend_per_user", 5, "Validation positives per user.",
                                 lower_bound=1)
_OUT_JSON = flags.DEFINE_string("blend_json", outputs.default_output("score_blend.json"),
                                "Where the JSON goes.")
_OUT_MD = flags.DEFINE_string("blend_md", outputs.default_output("score_blend.md"),
                              "Where the markdown table goes.")


def standardized(score_fn):
  """`score_fn` with each user's row of scores shifted and scaled to mean 0, std 1 (float32)."""
  def scores(users: jax.Array) -> jax.Array:
    s = jnp.asarray(score_fn(users), jnp.float32)
    return (s - s.mean(axis=1, keepdims=True)) / jnp.maximum(s.std(axis=1, keepdims=True),
                                                             1e-12)
  return scores


def blended(base_fn, other_fn, weight: float):
  """The score function `(1 - weight) * z(base) + weight * z(other)` (`standardized`)."""
  base, other = standardized(base_fn), standardized(other_fn)
  return lambda users: (1.0 - weight) * base(users) + weight * other(users)


def check_weights(values: list[str]) -> list[float]:
  """`--blend_weights` as floats in (0, 1); a one-line error naming the flag otherwise."""
  try:
    weights = [float(w) for w in values]
  except ValueError:
    weights = []
  if not weights or not all(0.0 < w < 1.0 for w in weights):
    raise errors.InvalidInput(f"--blend_weights={','.join(values)}: expected numbers in (0, 1), "
                              "e.g. --blend_weights=0.2,0.5.")
  return weights


def blend(base: TrainConfig, others: list[TrainConfig], weights: list[float],
          validation_seeds: list[int], validation_per_user: int = 5) -> dict:
  """Validation metrics of each model alone and of each blend (see the module docstring).

  Args:
    base: the base model's settings (its data fields choose the data).
    others: the models blended with it, one at a time; their models must differ.
    weights: each other model's weights, in (0, 1).
    validation_seeds: one validation split of the lab split's train each.
    validation_per_user: validation positives per user.

  Returns:
    {"base_config", "models", "weights", "validation_seeds", "validation_per_user", "rows"}:
    one row per model and blend, the means over the splits of `COLUMNS` and `train_seconds`
    (fitting, per split; blends: none).
  """
  names = [config.model for config in others]
  if len(set(names)) != len(names) or base.model in names:
    raise errors.InvalidInput(f"--blend_with: every model must differ from the others and from "
                              f"the base ({base.model}); got {', '.join(names)}.")
  _, train, _ = registry.load_split(base)
  metrics = {}
  for seed in validation_seeds:
    fit_matrix, valid = tuning.tuning_split(train, validation_per_user, seed)
    score_fns, seconds = {}, {}
    for config in (base, *others):
      params, seconds[config.model] = tuning.fit(config, fit_matrix)
      score_fns[config.model] = models.get(config.model).score_fn(params)
    variants = [(name, fn, seconds[name]) for name, fn in score_fns.items()]
    variants += [(f"{base.model} + {w:g} {name}", blended(score_fns[base.model], score_fns[name],
                                                          w), 0.0)
                 for name in names for w in weights]
    for label, fn, fit_seconds in variants:
      result = train_lib.evaluate(fn, fit_matrix, valid, base.eval_block_size)
      metrics.setdefault(label, []).append({**{k: result[k] for k in COLUMNS},
                                            "train_seconds": fit_seconds})
      logging.info("split %d, %s: AUC %.4f NDCG@20 %.4f", seed, label, result["auc"],
                   result["ndcg@20"])
  rows = [{"variant": label, **{k: float(np.mean([m[k] for m in runs]))
                                for k in (*COLUMNS, "train_seconds")}}
          for label, runs in metrics.items()]
  return {"base_config": dataclasses.asdict(base),
          "models": [base.model, *names], "weights": list(weights),
          "validation_seeds": list(validation_seeds),
          "validation_per_user": validation_per_user, "rows": rows}


def markdown(report: dict, command: str) -> str:
  """The table: one row per model and blend, each row's change against the base in brackets."""
  return outputs.validation_table(
      report, command, "Blends with the triplet model on validation", "model or blend",
      "variant", "A blend `a + w b` scores `(1 - w) z(a) + w z(b)`, z: a user's scores over all "
      "items standardised.")


def main(argv):
  del argv
  files.check_outputs({"blend_json": _OUT_JSON.value, "blend_md": _OUT_MD.value})
  weights = check_weights(list(_WEIGHTS.value))
  try:
    seeds = tuning.check_seeds([int(s) for s in _SEEDS.value])
  except ValueError as e:
    raise errors.InvalidInput(f"--blend_seeds={','.join(_SEEDS.value)}: {e}") from None
  base = outputs.base_config(_BASE.value)
  others = [outputs.base_config(path) for path in _WITH.value]
  report = blend(base, others, weights, list(seeds), _PER_USER.value)
  outputs.write_report(report, markdown, "benchmarks.score_blend", _OUT_JSON.value, _OUT_MD.value)


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
