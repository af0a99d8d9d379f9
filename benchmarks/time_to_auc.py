r"""Time to AUC: the test AUC each method has reached after so many seconds of training.

On a synthetic MovieLens-shaped dataset (`--tta_shape`, a `tripjax.data.synthetic_config`
preset) through the lab pipeline (ratings >= 4, users with >= 20 positives, 10 positives per
user left out: `registry.prepare`), each method trains epoch by epoch until its budget
(`--tta_seconds` of training) is spent:

- `fused`: the triplet model with the fused sparse-SGD CPU step (`--fused_cpu_step`), at the
  settings the throughput figures were made with (batch 4096, dim 64, one uniform negative);
- `sparse_adam`, `sparse_adagrad`: the triplet model with a row-sparse optimizer, at
  `experiments/configs/ml20m.cfg`'s settings (batch 4096, dim 64, hardest of 4 negatives);
- `implicit_bpr`, `implicit_als`: implicit's CPU BPR and ALS with 64 factors, on every core
  (`num_threads=0`; ALS with one BLAS thread, as implicit asks).

The learning rates (and ALS's confidence and regularization) were chosen by one small scan per
method on the ML-1M shape, judged by this benchmark's own AUC after 10-12 epochs (synthetic
data, the same treatment for every method; `TRIPJAX_SETTINGS`, `IMPLICIT_SETTINGS`): they are
peers' reasonable settings, not tuned flagfiles.

The tripjax models train with a constant learning rate (the budget, not an epoch count, ends a
run; implicit's rates are constant too). Each point is (seconds, epoch, AUC): the training
seconds after that epoch, counted as `tripjax.loop.fit` counts them (the epoch's triplet draw
and steps) or as implicit's per-iteration timer does (its sampling and updates); set-up and
compilation are reported apart. After each epoch the method's vectors of a fixed random sample
of `--tta_eval_users` test users and its item vectors are copied aside; they are scored once the
budget is spent, with `tripjax.metrics.evaluate` (the triplet model's cosine `score_fn`, the dot
product of implicit's factors, its BPR item bias included), so that no evaluation runs while a
method trains (tripjax draws the next epoch's shuffle on a thread during the previous one).
`auc_at` is the AUC of the last epoch finished by 10, 30, 60, 120 and 300 s (null where a run
had not yet finished an epoch, or stopped before).

  python -m benchmarks.time_to_auc --tta_shape=ml-1m --tta_seconds=60
  python -m benchmarks.time_to_auc --tta_shape=ml-20m --tta_seconds=120

Writes runs/benchmarks/time_to_auc_<shape>.{json,md} unless `--tta_out_json` / `--tta_out_md`
name other files. The machine may be shared: each method's `cores_used` (this process's CPU
seconds per training second, after the first epoch) says how much of it the method had, and the
JSON records the load average around each method.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import outputs
from experiments import run_cli
from tripjax import files
from tripjax import loop
from tripjax import metrics
from tripjax import model
from tripjax.config import TrainConfig
from tripjax.data import registry
from tripjax.data import synthetic_config

METHODS = ("fused", "sparse_adam", "sparse_adagrad", "implicit_bpr", "implicit_als")
MARKS = (10, 30, 60, 120, 300)  # seconds at which `auc_at` reads each curve
# The triplet model's settings per method (TrainConfig fields; the rest are its defaults). The
# loss is a mean over the batch, so SGD's and Adagrad's rates (Adagrad starts its accumulators
# at 0.1) are ~batch size times a per-triplet rate.
TRIPLET = dict(dim=64, margin=0.5, schedule="constant", batch_size=4096)
TRIPJAX_SETTINGS = {
    # The step of benchmarks/results/throughput_cpu_target_fused.json.
    "fused": dict(TRIPLET, optimizer="sparse_sgd", fused_cpu_step=True, learning_rate=300.0,
                  num_negatives=1),
    # experiments/configs/ml20m.cfg (its cosine schedule over 10 epochs made constant).
    "sparse_adam": dict(TRIPLET, optimizer="sparse_adam", learning_rate=0.01, num_negatives=4,
                        steps_per_dispatch=32),
    # ml20m.cfg with Adagrad.
    "sparse_adagrad": dict(TRIPLET, optimizer="sparse_adagrad", learning_rate=30.0,
                           num_negatives=4, steps_per_dispatch=32),
}
# implicit's constructor arguments (64 factors; BPR's regularization is implicit's default).
IMPLICIT_SETTINGS = {
    "implicit_bpr": dict(factors=64, learning_rate=0.05, regularization=0.01),
    "implicit_als": dict(factors=64, regularization=10.0, alpha=10.0),
}
# The rates (fused 300, Adagrad 30, BPR 0.05) and ALS's alpha and regularization were chosen on
# ml-1m from a few values each by the AUC after 10-12 epochs (fused 10..1000: 300 and 1000 tie;
# Adagrad 0.03..30: below 3 nothing moves; BPR 0.01 stalls near 0.73; ALS alpha 1 or 10 and
# regularization 0.01..10: each peaks by its second or third iteration).

_SHAPE = flags.DEFINE_enum("tta_shape", "ml-1m", sorted(synthetic_config.PRESETS),
                           "Synthetic preset (tripjax.data.synthetic_config.PRESETS).")
_METHODS = flags.DEFINE_list("tta_methods", list(METHODS), f"Methods among {METHODS}.")
_SECONDS = flags.DEFINE_float("tta_seconds", 60.0, "Training seconds per method.")
_EVAL_USERS = flags.DEFINE_integer("tta_eval_users", 2000, "Test users the AUC is taken on.")
_MAX_EPOCHS = flags.DEFINE_integer("tta_max_epochs", 1000, "Most epochs per method.")
_OUT_JSON = flags.DEFINE_string("tta_out_json", None, "Output JSON (default: "
                                f"{outputs.default_output('time_to_auc_<shape>.json')}).")
_OUT_MD = flags.DEFINE_string("tta_out_md", None, "Output markdown (default: "
                              f"{outputs.default_output('time_to_auc_<shape>.md')}).")


class _BudgetSpent(Exception):
  """Raised from a training callback to end a run."""


@dataclasses.dataclass
class Curve:
  """What one method's run leaves: its vectors after each epoch, and its timings.

  Attributes:
    seconds: training seconds after each epoch (cumulative).
    users: float32[n, D] per epoch, the evaluated users' vectors.
    items: float32[I, D] per epoch, the item vectors.
    setup_seconds: set-up and compilation before the first epoch (not in `seconds`).
    cpu_seconds: this process's CPU seconds (all threads) when each epoch was recorded.
  """
  seconds: list = dataclasses.field(default_factory=list)
  users: list = dataclasses.field(default_factory=list)
  items: list = dataclasses.field(default_factory=list)
  setup_seconds: float = 0.0
  cpu_seconds: list = dataclasses.field(default_factory=list)

  def add(self, seconds: float, users: np.ndarray, items: np.ndarray, seconds_budget: float,
          max_epochs: int) -> None:
    """Records one epoch; raises _BudgetSpent when the budget or the epochs are spent."""
    self.seconds.append(float(seconds))
    self.cpu_seconds.append(time.process_time())
    self.users.append(users)
    self.items.append(items)
    if seconds >= seconds_budget or len(self.seconds) >= max_epochs:
      raise _BudgetSpent


def load(shape: str, seed: int = 0):
  """The synthetic `shape` through the lab pipeline: (train, test), bool CSR [U, I]."""
  _, train, test = registry.prepare(registry.SYNTHETIC_PREFIX + shape, seed=seed)
  return train, test


def train_tripjax(method: str, train, users: np.ndarray, seconds: float, max_epochs: int,
                  overrides: dict | None = None, seed: int = 0) -> Curve:
  """Trains the triplet model with `method`'s settings (`TRIPJAX_SETTINGS`) until the budget.

  Args:
    method: a key of `TRIPJAX_SETTINGS`.
    train: bool CSR [U, I].
    users: int32[n], the evaluated users (their vectors are kept after each epoch).
    seconds: training seconds (`loop.fit`'s count; compilation excluded).
    max_epochs: most epochs.
    overrides: TrainConfig fields replacing the method's settings.
    seed: of the initial tables and the triplets.
  """
  config = TrainConfig(**{**TRIPJAX_SETTINGS[method], **(overrides or {}), "epochs": max_epochs,
                          "seed": seed})
  curve, picked = Curve(), jnp.asarray(users)
  started = time.perf_counter()

  def on_epoch(state, stats):
    if not curve.seconds:
      curve.setup_seconds = time.perf_counter() - started - stats["epoch_seconds"]
    curve.add(stats["train_seconds"], np.array(state.params["user"][picked]),
              np.array(state.params["item"]), seconds, max_epochs)

  try:
    loop.fit(config, train, compile_ahead=True, on_epoch=on_epoch)
  except _BudgetSpent:
    pass
  return curve


def train_implicit(method: str, train, users: np.ndarray, seconds: float, max_epochs: int,
                   overrides: dict | None = None, seed: int = 0) -> Curve:
  """Trains implicit's BPR or ALS (`IMPLICIT_SETTINGS`) one iteration at a time until the
  budget, counting its own per-iteration seconds."""
  # Imported here: implicit is optional (the tests skip its methods without it).
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  from implicit.cpu import als, bpr  # pylint: disable=g-import-not-at-top
  kind = {"implicit_bpr": bpr.BayesianPersonalizedRanking,
          "implicit_als": als.AlternatingLeastSquares}[method]
  curve = Curve()
  started = time.perf_counter()

  def callback(iteration, elapsed, *unused):
    del iteration, unused
    if not curve.seconds:
      curve.setup_seconds = time.perf_counter() - started - elapsed
    spent = (curve.seconds[-1] if curve.seconds else 0.0) + elapsed
    curve.add(spent, estimator.user_factors[users], estimator.item_factors.copy(), seconds,
              max_epochs)

  try:
    with threadpoolctl.threadpool_limits(1, "blas"):  # before ALS checks it
      estimator = kind(**{**IMPLICIT_SETTINGS[method], **(overrides or {})},
                       iterations=max_epochs, num_threads=0, random_state=seed)
      estimator.fit(train.astype(np.float32).tocsr(), show_progress=False, callback=callback)
  except _BudgetSpent:
    pass
  return curve


def _implicit_version() -> str:
  import implicit  # pylint: disable=g-import-not-at-top
  return implicit.__version__


@jax.jit
def _dot_scores(user_vectors, item_vectors, users):
  return jnp.matmul(user_vectors[users], item_vectors.T, precision=model.SCORE_PRECISION)


def score(curve: Curve, cosine: bool, train, test) -> list[dict]:
  """The curve's points: {seconds, epoch, auc} after each epoch.

  Args:
    curve: a run's vectors (its users are the rows of `train` and `test`).
    cosine: the triplet model's cosine scores (`model.score_fn`), else the dot product.
    train, test: bool CSR [n, I], the evaluated users' rows.
  """
  points = []
  for epoch, (seconds, users, items) in enumerate(
      zip(curve.seconds, curve.users, curve.items), 1):
    if cosine:
      score_fn = model.score_fn({"user": users, "item": items})
    else:
      score_fn = lambda u, users=users, items=items: _dot_scores(users, items, u)
    result = metrics.evaluate(score_fn, train, test, ks=(20,))
    points.append({"seconds": seconds, "epoch": epoch, "auc": result.means["auc"]})
  return points


def cores_used(curve: Curve) -> float | None:
  """CPU seconds per training second after the first epoch (the cores a method got: below the
  machine's count when it shares them); None with one epoch."""
  if len(curve.seconds) < 2:
    return None
  return ((curve.cpu_seconds[-1] - curve.cpu_seconds[0])
          / (curve.seconds[-1] - curve.seconds[0]))


def auc_at(points: list[dict], marks=MARKS) -> dict[str, float | None]:
  """The AUC of the last epoch finished by each mark; None where no epoch was finished by
  then or the run stopped before it."""
  out = {}
  for mark in marks:
    done = [p for p in points if p["seconds"] <= mark]
    reached = points and points[-1]["seconds"] >= mark
    out[str(mark)] = done[-1]["auc"] if done and reached else None
  return out


def run(shape: str, methods, seconds: float, eval_users: int, max_epochs: int = 1000,
        overrides: dict | None = None, seed: int = 0) -> dict:
  """Every method on the synthetic `shape` (see the module docstring); the report.

  Args:
    shape: a synthetic preset (`tiny`, `ml-1m`, `ml-20m`, ...).
    methods: names among `METHODS`.
    seconds: training seconds per method.
    eval_users: test users the AUC is taken on (all when fewer).
    max_epochs: most epochs per method.
    overrides: method -> settings replacing `TRIPJAX_SETTINGS` / `IMPLICIT_SETTINGS`' ones.
    seed: of the data, the evaluated users, the initial tables and the triplets.

  Returns:
    {"shape", "users", "items", "positives", "eval_users", "seconds", "methods": name ->
    {settings, epochs, train_seconds, setup_seconds, load_average}, "points": name ->
    [{seconds, epoch, auc}], "auc_at": name -> {"10": auc or None, ...}, ...}.
  """
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    raise app.UsageError(f"--tta_methods: unknown {unknown}; known: {', '.join(METHODS)}")
  train, test = load(shape, seed)
  rng = np.random.default_rng(seed)
  users = np.sort(rng.choice(train.shape[0], min(eval_users, train.shape[0]), replace=False))
  users = users.astype(np.int32)
  train_rows, test_rows = train[users], test[users]
  report = {"benchmark": "time_to_auc", "shape": shape, "users": train.shape[0],
            "items": train.shape[1], "positives": int(train.nnz), "eval_users": users.size,
            "seconds": seconds, "max_epochs": max_epochs, "marks": list(MARKS),
            "cpus": os.cpu_count(), "machine": platform.machine(), "jax": jax.__version__,
            "methods": {}, "points": {}, "auc_at": {}}
  for method in methods:
    load_before = os.getloadavg()
    changes = (overrides or {}).get(method)
    if method in TRIPJAX_SETTINGS:
      curve = train_tripjax(method, train, users, seconds, max_epochs, changes, seed)
      settings = {**TRIPJAX_SETTINGS[method], **(changes or {})}
    else:
      curve = train_implicit(method, train, users, seconds, max_epochs, changes, seed)
      settings = {**IMPLICIT_SETTINGS[method], **(changes or {})}
      report["implicit"] = _implicit_version()
    load_after = os.getloadavg()
    points = score(curve, method in TRIPJAX_SETTINGS, train_rows, test_rows)
    report["methods"][method] = {
        "settings": settings, "epochs": len(points), "train_seconds": curve.seconds[-1],
        "setup_seconds": curve.setup_seconds, "cores_used": cores_used(curve),
        "load_average": [load_before[0], load_after[0]]}
    report["points"][method] = points
    report["auc_at"][method] = auc_at(points)
    print(f"{method}: {len(points)} epochs in {curve.seconds[-1]:.1f} s, AUC "
          f"{points[-1]['auc']:.4f}", flush=True)
  return report


def markdown(report: dict, command: str) -> str:
  """The AUC reached by each mark, per method, and each run's epochs and seconds."""
  marks = [m for m in report["marks"] if m <= report["seconds"]]
  header = ["method"] + [f"AUC at {m} s" for m in marks] + [
      "final AUC", "best AUC (s)", "epochs", "s/epoch", "set-up s", "cores used"]
  lines = [
      f"# Time to AUC, synthetic-{report['shape']}", "",
      f"{report['users']} users x {report['items']} items, {report['positives']} training "
      f"positives; AUC on {report['eval_users']} test users; {report['seconds']:g} s of "
      f"training per method on {report['cpus']} cores.", "", f"`{command}`", "",
      "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  for method, info in report["methods"].items():
    reached = [report["auc_at"][method][str(m)] for m in marks]
    points = report["points"][method]
    best = max(points, key=lambda p: p["auc"])
    cells = [method] + ["—" if a is None else f"{a:.4f}" for a in reached] + [
        f"{points[-1]['auc']:.4f}", f"{best['auc']:.4f} ({best['seconds']:.0f})",
        str(info["epochs"]),
        f"{info['train_seconds'] / info['epochs']:.2f}", f"{info['setup_seconds']:.1f}",
        "—" if info.get("cores_used") is None else f"{info['cores_used']:.2f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if not _SECONDS.value > 0 or _EVAL_USERS.value < 1 or _MAX_EPOCHS.value < 1:
    raise app.UsageError("--tta_seconds, --tta_eval_users and --tta_max_epochs must be "
                         "positive.")
  if not _METHODS.value:
    raise app.UsageError("--tta_methods is empty; name at least one method.")
  shape = _SHAPE.value
  json_path = _OUT_JSON.value or outputs.default_output(f"time_to_auc_{shape}.json")
  md_path = _OUT_MD.value or outputs.default_output(f"time_to_auc_{shape}.md")
  files.check_outputs({"tta_out_json": json_path, "tta_out_md": md_path})
  report = run(shape, _METHODS.value, _SECONDS.value, _EVAL_USERS.value, _MAX_EPOCHS.value)
  outputs.write_report(report, markdown, "benchmarks.time_to_auc", json_path, md_path)


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
