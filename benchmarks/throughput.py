"""Training throughput: triplets/s of tripjax's jitted step vs implicit's BPR samples/s.

  python -m benchmarks.throughput [--quick] [--target_only] [--out=PATH]

For each table shape (ML-100K 943x1682, ML-1M 6040x3706, ML-20M 138,000x27,000) a random
positive matrix with the real datasets' number of positives (ratings >= 4) and Zipf-like item
popularity / log-normal user activity is drawn; `tripjax.sampling.EpochSampler` makes the epoch's
triplets and `tripjax.train_step.make_train_step` (one jit, `lax.scan` over a chunk of batches, state
donated) is timed over batch sizes, dims and optimizers (dense optax adam, sparse_adam,
sparse_adagrad, ...), and on CPU the same step with `fused_cpu=True` (`tripjax.kernels`' C++
kernel, sparse_sgd). Each figure is the median over `--reps` timed runs of whole chunks, after a
warm-up call whose extra time is reported as compile seconds. Beside it, implicit's
`BayesianPersonalizedRanking(factors=64)` (all cores) on the same matrix: samples/s =
nnz / seconds per iteration (median over iterations, from implicit's own per-iteration timer)
and nnz * iterations / fit seconds (the whole fit). Ratios are taken within the same run.

The machine may be shared: the JSON records the load average before and after.

Writes runs/benchmarks/throughput_<device>.json unless `--out` names another file; the JSON
records the command that wrote it. The committed sweeps shown in benchmarks/RESULTS.md were made,
and are updated, by naming their files, e.g. the CPU target figures:

  python -m benchmarks.throughput --shapes=ml-1m,ml-20m --target_only --reps=9 \
      --out=benchmarks/results/throughput_cpu_target_fused.json
"""

import os
import pathlib
import platform
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import outputs
from benchmarks.step_inputs import (OPTIMIZERS, SHAPES, TARGET_BATCH, TARGET_DIM,
                                    batches_per_chunk, make_optimizer, random_positives)
from experiments import run_cli
from tripjax import files
from tripjax import losses
from tripjax import sampling
from tripjax import train_step

_QUICK = flags.DEFINE_bool("quick", False, "A short sweep (target configs only).")
_TARGET_ONLY = flags.DEFINE_bool("target_only", False,
                                 "Only batch 4096, dim 64 (the target figures).")
_OUT = flags.DEFINE_string("out", None, "Output JSON (default: "
                           f"{outputs.default_output('throughput_<device>.json')}).")
_REPS = flags.DEFINE_integer("reps", 5, "Timed runs per configuration (median reported).")
_SHAPES = flags.DEFINE_list("shapes", ["ml-100k", "ml-1m", "ml-20m"], "Table shapes to run.")
_IMPLICIT = flags.DEFINE_bool("implicit", True, "Also time implicit's BPR (if installed).")
_BPR_ITERATIONS = flags.DEFINE_integer("bpr_iterations", 3, "BPR iterations timed.",
                                       lower_bound=1)
_MIN_TRIPLETS = flags.DEFINE_integer(
    "min_triplets", 262_144, "Triplets per timed run (whole chunks, at least one).",
    lower_bound=1)

def minimal_step(optimizer, margin: float = 0.5):
  """A reference row-sparse step: `make_train_step`'s math without its options.

  No padding weights (`lax.cond`), no hardest-of-n, no l2, and the forward pass's gathered
  rows are handed to the optimizer (`param_rows`), saving one gather per table. It shows
  what the options of `train_step.make_train_step` cost; the library's step is the one that counts.
  """
  def one_batch(state, batch):
    users, pos, neg = batch
    params = state.params
    user_rows, item_rows = params["user"][users], params["item"][jnp.concatenate([pos, neg])]

    def objective(user_rows, item_rows):
      pos_rows, neg_rows = jnp.split(item_rows, 2)
      return jnp.mean(losses.triplet_cosine_loss(user_rows, pos_rows, neg_rows, margin))

    loss, (g_user, g_item) = jax.value_and_grad(objective, (0, 1))(user_rows, item_rows)
    new_params, opt_state = optimizer.update(
        {"user": g_user, "item": g_item}, {"user": users, "item": jnp.concatenate([pos, neg])},
        state.opt_state, params, param_rows={"user": user_rows, "item": item_rows})
    return train_step.TrainState(new_params, opt_state, state.step + 1), loss

  def step(state, batches: sampling.Batches):
    state, loss = jax.lax.scan(one_batch, state,
                               (batches.users, batches.pos, batches.neg[..., 0]))
    return state, {"loss": jnp.mean(loss)}

  return jax.jit(step, donate_argnums=0)


def time_steps(train_matrix, sampler: sampling.EpochSampler, variants, dim: int, reps: int,
               min_triplets: int, before_round=None) -> list[dict]:
  """Times several steps on the same full chunks of one epoch, interleaved run by run.

  Args:
    train_matrix: bool CSR [U, I].
    sampler: makes the chunks ([S, B] batches each).
    variants: (step_name, optimizer_name) pairs; step_name "make_train_step",
      "make_train_step+empty_check" (the step with its all-padding-batch check, as run on an
      epoch's last chunk), "make_train_step+fused_cpu" (`fused_cpu=True`, sparse_sgd only) or
      "minimal".
    dim: embedding size.
    reps: timed runs per variant; run r of every variant happens before run r + 1 of any.
    min_triplets: triplets per timed run (whole chunks).
    before_round: optional `f(r)` called before round r's runs (e.g. a peer timed in turn, so
      that a ratio can be taken within each round on a machine whose speed drifts).

  Returns:
    one dict per variant: triplets_per_s (median), runs, compile_s, triplets_per_run.
  """
  num_users, num_items = train_matrix.shape
  batches = sampler.epoch(0)
  full_chunks = max(1, batches.users.shape[0] - 1)  # the last chunk may be padded
  per_chunk = sampler.batch_size * sampler.batches_per_chunk
  chunks = jax.block_until_ready([train_step.chunk_of(batches, c) for c in range(full_chunks)])
  runs = max(1, -(-min_triplets // per_chunk))
  steps, states, results, kwargs = [], [], [], []
  for step_name, optimizer_name in variants:
    # Full chunks run without the empty-batch check, as in `train_step.run_epoch`; the
    # "make_train_step+empty_check" variant keeps it, to show what it costs.
    kwargs.append({"skip_empty": step_name.endswith("+empty_check")}
                  if step_name.startswith("make_train_step") else {})
    optimizer = make_optimizer(optimizer_name)
    step = (train_step.make_train_step(optimizer, fused_cpu=step_name.endswith("+fused_cpu"))
            if step_name.startswith("make_train_step") else minimal_step(optimizer))
    state = train_step.init_state(jax.random.key(0), optimizer, num_users, num_items, dim)
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(step(state, chunks[0], **kwargs[-1]))
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(step(state, chunks[1 % full_chunks], **kwargs[-1]))
    second_call = time.perf_counter() - start
    steps.append(step)
    states.append(state)
    results.append({"step": step_name, "optimizer": optimizer_name, "runs_triplets_per_s": [],
                    "compile_s": max(first_call - second_call, 0.0),
                    "triplets_per_run": runs * per_chunk})
  for r in range(reps):
    if before_round is not None:
      before_round(r)
    for v, step in enumerate(steps):
      start = time.perf_counter()
      for i in range(runs):
        states[v], metrics = step(states[v], chunks[(r * runs + i) % full_chunks],
                                  **kwargs[v])
      jax.block_until_ready((states[v], metrics))
      results[v]["runs_triplets_per_s"].append(runs * per_chunk / (time.perf_counter() - start))
  for result, state, step in zip(results, states, steps):
    result["triplets_per_s"] = float(np.median(result["runs_triplets_per_s"]))
    if not all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params)):
      raise FloatingPointError(f"{result}: the parameters went non-finite.")
  return results


def time_epoch(train_matrix, batch_size: int, optimizer_name: str, dim: int,
               reps: int, negative_exponent: float = 0.0, fused_cpu: bool = False) -> dict:
  """Splits a whole epoch's time into sampling (negatives, shuffle, batching) and steps."""
  sampler = sampling.EpochSampler(train_matrix, batch_size,
                                  batches_per_chunk(train_matrix.nnz, batch_size),
                                  negative_exponent=negative_exponent)
  optimizer = make_optimizer(optimizer_name)
  step = train_step.make_train_step(optimizer, fused_cpu=fused_cpu)
  state = train_step.init_state(jax.random.key(0), optimizer, *train_matrix.shape, dim)
  state, _ = train_step.run_epoch(step, state,  # compile (and draw epoch 1's shuffle ahead)
                            jax.block_until_ready(sampler.epoch(0, prefetch_next=True)))
  sample_s, step_s = [], []
  for epoch in range(1, reps + 1):
    start = time.perf_counter()
    batches = jax.block_until_ready(sampler.epoch(epoch, prefetch_next=epoch < reps))
    sample_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    state, _ = train_step.run_epoch(step, state, batches)
    jax.block_until_ready(state)
    step_s.append(time.perf_counter() - start)
  sample, steps = float(np.median(sample_s)), float(np.median(step_s))
  return {"batch_size": batch_size, "optimizer": optimizer_name, "dim": dim,
          "fused_cpu": fused_cpu,
          "negative_exponent": negative_exponent, "sampling_s": sample, "steps_s": steps,
          "sampling_share": sample / (sample + steps),
          "epoch_triplets_per_s": sampler.num_positives / (sample + steps)}


def time_bpr(train_matrix, iterations: int, factors: int = 64) -> dict | None:
  """implicit's CPU BPR on the same matrix; None when implicit is not installed."""
  try:
    import implicit  # pylint: disable=g-import-not-at-top
    from implicit.cpu.bpr import BayesianPersonalizedRanking  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  matrix = train_matrix.astype(np.float32).tocsr()
  per_iteration = []
  model = BayesianPersonalizedRanking(factors=factors, iterations=iterations, num_threads=0,
                                      random_state=0)
  start = time.perf_counter()
  model.fit(matrix, show_progress=False,
            callback=lambda iteration, elapsed, *unused: per_iteration.append(elapsed))
  fit_s = time.perf_counter() - start
  nnz = matrix.nnz
  return {"implicit_version": implicit.__version__, "factors": factors,
          "iterations": iterations, "fit_s": fit_s, "iteration_s": per_iteration,
          "samples_per_s": nnz / float(np.median(per_iteration)),
          "samples_per_s_whole_fit": nnz * iterations / fit_s}


def sweep(quick: bool, target_only: bool = False) -> list[tuple[int, int]]:
  """(batch_size, dim) pairs to time."""
  if target_only:
    return [(TARGET_BATCH, TARGET_DIM)]
  if quick:
    return [(1024, TARGET_DIM), (TARGET_BATCH, TARGET_DIM)]
  batches = [64, 256, 1024, 4096, 16384, 65536]
  dims = [32, 64, 128, 256]
  pairs = [(b, TARGET_DIM) for b in batches] + [(TARGET_BATCH, d) for d in dims]
  return sorted(set(pairs))


def _versions() -> dict:
  out = {"python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__,
         "optax": optax.__version__}
  try:
    import jaxlib  # pylint: disable=g-import-not-at-top
    out["jaxlib"] = jaxlib.__version__
  except ImportError:
    pass
  return out


def main(argv):
  del argv
  if not _SHAPES.value:
    raise app.UsageError(f"--shapes is empty; name one or more of {sorted(SHAPES)}")
  for name in _SHAPES.value:
    if name not in SHAPES:
      raise app.UsageError(f"--shapes: unknown shape {name!r}; known: {sorted(SHAPES)}")
  if _REPS.value <= 0:
    raise app.UsageError(f"--reps must be positive, got {_REPS.value}")
  device = jax.devices()[0]
  device_name = device.platform if device.platform != "gpu" else device.device_kind
  out = pathlib.Path(_OUT.value or outputs.default_output(
      f"throughput_{device_name.replace(' ', '_').lower()}.json"))
  # A long sweep's finished shapes are kept as it goes, beside the output, which only the
  # finished sweep replaces.
  partial = out.with_name(out.stem + ".partial.json")
  files.check_writable(out)
  payload = {
      "command": " ".join(["python -m benchmarks.throughput"] + sys.argv[1:]),
      "device_kind": device.device_kind, "platform": device.platform,
      "num_devices": jax.device_count(), "cpu_count": os.cpu_count(),
      "versions": _versions(), "load_average_start": os.getloadavg(),
      "step": "tripjax.train_step.make_train_step", "reps": _REPS.value,
      "shapes": {}, "steps": [], "epochs": [], "bpr": {}, "target": [],
  }
  reps = _REPS.value
  cpu = device.platform == "cpu"  # the fused kernel's rows (tripjax.kernels)
  for shape in _SHAPES.value:
    num_users, num_items, nnz = SHAPES[shape]
    matrix = random_positives(num_users, num_items, nnz)
    payload["shapes"][shape] = {"users": num_users, "items": num_items, "positives": matrix.nnz}
    print(f"[{shape}] {num_users} x {num_items}, {matrix.nnz} positives", flush=True)
    bpr_runs = []
    if _IMPLICIT.value:  # timed before and after the steps, as the load drifts
      bpr_runs.append(time_bpr(matrix, _BPR_ITERATIONS.value))
      if bpr_runs[0]:
        print(f"  implicit BPR: {bpr_runs[0]['samples_per_s'] / 1e6:.2f}M samples/s",
              flush=True)
    first_result = len(payload["steps"])
    for batch_size, dim in sweep(_QUICK.value, _TARGET_ONLY.value):
      if batch_size * 3 > matrix.nnz:
        continue
      sampler = sampling.EpochSampler(matrix, batch_size, batches_per_chunk(matrix.nnz,
                                                                             batch_size))
      variants = [("make_train_step", name) for name in OPTIMIZERS]
      if cpu:
        variants += [("make_train_step+fused_cpu", "sparse_sgd")]
      bpr_rounds, before_round = [], None
      if (batch_size, dim) == (TARGET_BATCH, TARGET_DIM):
        variants += [("make_train_step+empty_check", "sparse_sgd")]
        variants += [("minimal", name) for name in OPTIMIZERS[1:]]
        if _IMPLICIT.value and bpr_runs and bpr_runs[0]:
          # BPR before every round (two iterations, the second timed: the first of a fresh
          # fit runs cold): the target ratio is taken round by round.
          before_round = lambda r: bpr_rounds.append(
              matrix.nnz / time_bpr(matrix, 2)["iteration_s"][-1])
      for result in time_steps(matrix, sampler, variants, dim, reps, _MIN_TRIPLETS.value,
                               before_round):
        if bpr_rounds:
          per_round = [t / b for t, b in zip(result["runs_triplets_per_s"], bpr_rounds)]
          result.update(bpr_rounds_samples_per_s=bpr_rounds, ratio_per_round=per_round,
                        ratio_vs_bpr_interleaved=float(np.median(per_round)))
        result.update(shape=shape, batch_size=batch_size, dim=dim)
        payload["steps"].append(result)
        print(f"  B={batch_size:6d} D={dim:3d} {result['step']:25s} {result['optimizer']:15s} "
              f"{result['triplets_per_s'] / 1e6:7.3f}M triplets/s  compile "
              f"{result['compile_s']:.1f}s", flush=True)
      files.write_json_atomic(partial, payload)
    epochs = [("sparse_adagrad", 0.0, False), ("sparse_rowwise_adagrad", 0.0, False),
              ("sparse_rowwise_adagrad", 0.2, False)]
    if cpu:
      epochs += [("sparse_sgd", 0.0, True), ("sparse_sgd", 0.2, True)]
    for optimizer_name, exponent, fused in epochs:
      epoch = time_epoch(matrix, TARGET_BATCH, optimizer_name, TARGET_DIM,
                         max(2, reps // 2), exponent, fused)
      epoch["shape"] = shape
      payload["epochs"].append(epoch)
      print(f"  epoch {optimizer_name}{' fused_cpu' if fused else ''}, negative_exponent "
            f"{exponent:g}: sampling "
            f"{epoch['sampling_s']:.3f}s, steps "
            f"{epoch['steps_s']:.3f}s, sampling share {epoch['sampling_share']:.1%}",
            flush=True)
    if bpr_runs and bpr_runs[0]:
      bpr_runs.append(time_bpr(matrix, _BPR_ITERATIONS.value))
      iteration_s = [t for run in bpr_runs for t in run["iteration_s"]]
      bpr = {"runs": bpr_runs, "samples_per_s": matrix.nnz / float(np.median(iteration_s)),
             "factors": bpr_runs[0]["factors"],
             "implicit_version": bpr_runs[0]["implicit_version"]}
      payload["bpr"][shape] = bpr
      print(f"  implicit BPR (before and after): {bpr['samples_per_s'] / 1e6:.2f}M samples/s",
            flush=True)
      for result in payload["steps"][first_result:]:
        result["ratio_vs_bpr"] = result["triplets_per_s"] / bpr["samples_per_s"]
    files.write_json_atomic(partial, payload)

  for result in payload["steps"]:
    if (result["dim"], result["batch_size"]) == (TARGET_DIM, TARGET_BATCH) and \
        "ratio_vs_bpr" in result and result["shape"] in ("ml-1m", "ml-20m"):
      ratio = result.get("ratio_vs_bpr_interleaved", result["ratio_vs_bpr"])
      payload["target"].append({k: result.get(k) for k in (
          "shape", "step", "optimizer", "triplets_per_s", "ratio_vs_bpr",
          "ratio_vs_bpr_interleaved", "ratio_per_round")} | {"reached": ratio >= 1.0})
  payload["load_average_end"] = os.getloadavg()
  files.write_json_atomic(out, payload)
  partial.unlink(missing_ok=True)
  print(f"wrote {out}")


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
