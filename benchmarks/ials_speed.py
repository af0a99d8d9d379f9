"""iALS speed: seconds per iteration of tripjax's iALS beside implicit's ALS, in one run.

Both fit the same MovieLens-shaped random positives (`step_inputs.random_positives`) with the
same factors, regularisation and confidence (implicit's `alpha` is tripjax's `1 + alpha`: its
confidence is the matrix value, tripjax's `1 + alpha r`), on every core of this machine
(implicit `num_threads=0`, XLA's default). Each solver is timed against its peer:
tripjax `--ials_solver=cg` (3 steps) against implicit `use_cg=True` (3 steps, its default),
and tripjax `cholesky` against implicit `use_cg=False`.

An iteration is a user sweep then an item sweep. tripjax's figure is the median over
`--iterations` timed iterations after one untimed one (compilation); the row bucketing
(host-side, once per fit) is reported apart. implicit's is the median of its own per-iteration
timer, also after one untimed iteration.

  python -m benchmarks.ials_speed --out_json=benchmarks/results/ials_speed.json
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import outputs
from benchmarks.step_inputs import SHAPES, random_positives
from experiments import run_cli
from tripjax import files
from tripjax.models import ials

_SHAPES = flags.DEFINE_list("shapes", ["ml-1m", "ml-20m"], "Table shapes to run.")
_FACTORS = flags.DEFINE_integer("factors", 64, "Factors of both libraries.", lower_bound=1)
_ITERATIONS = flags.DEFINE_integer("iterations", 5, "Timed iterations (after one untimed).",
                                   lower_bound=1)
_SOLVERS = flags.DEFINE_list("solvers", ["cg", "cholesky"], "tripjax solvers to time.")
_ALPHA = flags.DEFINE_float("alpha", 30.0, "tripjax's alpha (confidence 1 + alpha).",
                            lower_bound=0.0)
_REG = flags.DEFINE_float("reg", 100.0, "Regularisation lambda of both.", lower_bound=0.0)
_CG_STEPS = flags.DEFINE_integer("cg_steps", 3, "Conjugate-gradient steps of both.",
                                 lower_bound=1)
_IMPLICIT = flags.DEFINE_bool("implicit", True, "Also time implicit's ALS (if installed).")
_OUT_JSON = flags.DEFINE_string("out_json", outputs.default_output("ials_speed.json"),
                                "Where the JSON goes.")


def _block(tree):
  return jax.block_until_ready(tree)


def time_tripjax(train, factors: int, alpha: float, reg: float, cg_steps: int,
                 iterations: int) -> dict:
  """tripjax's iALS sweeps on `train` (bool CSR [U, I]): seconds per iteration.

  Args:
    train: bool CSR [U, I].
    factors: D.
    alpha, reg: confidence weight and lambda.
    cg_steps: 0 for exact solves, else CG steps.
    iterations: timed iterations (one more, untimed, compiles).

  Returns:
    {"bucket_s", "iteration_s": [iterations], "median_iteration_s", "loss"}.
  """
  start = time.perf_counter()
  user_blocks, item_blocks = ials.buckets(train), ials.buckets(train.T.tocsr())
  _block((user_blocks, item_blocks))
  bucket_s = time.perf_counter() - start
  config = type("Config", (), {"ials_factors": factors, "ials_alpha": alpha, "ials_reg": reg,
                               "seed": 0})
  params = ials.init(config, *train.shape)
  user, item = params["user"], params["item"]
  times = []
  for _ in range(iterations + 1):
    start = time.perf_counter()
    user = ials.sweep(item, user_blocks, user, params["alpha"], params["reg"], cg_steps)
    item = ials.sweep(user, item_blocks, item, params["alpha"], params["reg"], cg_steps)
    _block(item)
    times.append(time.perf_counter() - start)
  rows, cols = train.nonzero()
  loss = float(ials.loss({**params, "user": user, "item": item}, rows, cols))
  return {"bucket_s": bucket_s, "first_iteration_s": times[0], "iteration_s": times[1:],
          "median_iteration_s": float(np.median(times[1:])), "loss_per_positive": loss / train.nnz}


def time_implicit(train, factors: int, alpha: float, reg: float, use_cg: bool, cg_steps: int,
                  iterations: int) -> dict | None:
  """implicit's CPU ALS on the same positives; None when implicit is not installed."""
  try:
    import implicit  # pylint: disable=g-import-not-at-top
    from implicit.cpu.als import AlternatingLeastSquares  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  per_iteration = []
  model = AlternatingLeastSquares(
      factors=factors, regularization=reg, alpha=1.0 + alpha, iterations=iterations + 1,
      use_cg=use_cg, calculate_training_loss=False, num_threads=0, random_state=0)
  model.cg_steps = cg_steps  # an attribute, not a constructor argument, in implicit 0.7.
  model.fit(train.astype(np.float32).tocsr(), show_progress=False,
            callback=lambda iteration, elapsed, *unused: per_iteration.append(elapsed))
  return {"implicit_version": implicit.__version__, "first_iteration_s": per_iteration[0],
          "iteration_s": per_iteration[1:],
          "median_iteration_s": float(np.median(per_iteration[1:]))}


def _solver_steps(name: str) -> int:
  if name == "cg":
    return _CG_STEPS.value
  if name == "cholesky":
    return 0
  raise app.UsageError(f"--solvers: unknown solver {name!r}; known: cg, cholesky")


def main(argv):
  del argv
  for flag in (_SHAPES, _SOLVERS):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is empty; name at least one (default: "
                           f"{','.join(flag.default)}).")
  for name in _SHAPES.value:
    if name not in SHAPES:
      raise app.UsageError(f"--shapes: unknown shape {name!r}; known: {sorted(SHAPES)}")
  steps = {name: _solver_steps(name) for name in _SOLVERS.value}
  results = []
  for shape in _SHAPES.value:
    train = random_positives(*SHAPES[shape])
    for solver, cg_steps in steps.items():
      row = {"shape": shape, "users": train.shape[0], "items": train.shape[1],
             "positives": int(train.nnz), "factors": _FACTORS.value, "solver": solver,
             "cg_steps": cg_steps,
             "tripjax": time_tripjax(train, _FACTORS.value, _ALPHA.value, _REG.value, cg_steps,
                                     _ITERATIONS.value)}
      if _IMPLICIT.value:
        row["implicit"] = time_implicit(train, _FACTORS.value, _ALPHA.value, _REG.value,
                                        solver == "cg", max(cg_steps, 1), _ITERATIONS.value)
      if row.get("implicit"):
        row["speedup_vs_implicit"] = (row["implicit"]["median_iteration_s"]
                                      / row["tripjax"]["median_iteration_s"])
      print(f"{shape} {solver}: tripjax {row['tripjax']['median_iteration_s']:.3f} s/iteration"
            + (f", implicit {row['implicit']['median_iteration_s']:.3f} s "
               f"(tripjax {row['speedup_vs_implicit']:.2f}x)" if row.get("implicit") else ""),
            flush=True)
      results.append(row)
  command = "python -m benchmarks.ials_speed " + " ".join(map(shlex.quote, sys.argv[1:]))
  out = {"benchmark": "ials_speed", "command": command, "cpus": os.cpu_count(),
         "load_average_before": list(os.getloadavg()), "machine": platform.machine(),
         "jax": jax.__version__, "alpha": _ALPHA.value, "reg": _REG.value,
         "iterations": _ITERATIONS.value, "results": results}
  files.write_atomic(_OUT_JSON.value, json.dumps(out, indent=1) + "\n")
  print(f"wrote {_OUT_JSON.value}")


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
