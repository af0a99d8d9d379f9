"""Where the training step's time goes: per-op device time of `train_step.make_train_step`.

  python -m benchmarks.step_profile [--shape=ml-1m --optimizer=sparse_sgd --chunks=4]

Compiles the step on full chunks of a `benchmarks.step_inputs` matrix (batch 4096, dim 64, the
throughput target), runs it under `jax.profiler` and sums each XLA op's events over the timed
chunks. Writes runs/benchmarks/step_profile_<device>.json (`--out`: another file): per op its
microseconds per batch, its share of the ops' total, its kind (gather, scatter, reduction:
XLA:CPU's `ynn_fusion`, loop fusion) and the HLO metadata `op_name` it came from, and the command
that wrote it. The profiler adds overhead: read the shares, not the absolute times
(`benchmarks.throughput` has those). The committed profile shown in benchmarks/RESULTS.md was
made, and is updated, on CPU by

  python -m benchmarks.step_profile --out=benchmarks/results/step_profile_cpu.json
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile

from absl import flags
import jax

from benchmarks import outputs
from benchmarks.step_inputs import (OPTIMIZERS, SHAPES, TARGET_BATCH, TARGET_DIM,
                                    batches_per_chunk, make_optimizer, random_positives)
from experiments import run_cli
from tripjax import files
from tripjax import sampling
from tripjax import train_step

_SHAPE = flags.DEFINE_enum("shape", "ml-1m", list(SHAPES), "Table shape.")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "sparse_sgd", list(OPTIMIZERS),
                               "Optimizer of the step.")
_CHUNKS = flags.DEFINE_integer("chunks", 4, "Chunks profiled (after a warm-up chunk).",
                               lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "Output JSON (default: "
                           f"{outputs.default_output('step_profile_<device>.json')}).")


def op_kind(name: str, hlo_text: str) -> str:
  """A coarse kind for an op of the compiled step, from its name and HLO."""
  if "scatter" in name:
    return "scatter"
  if "gather" in name:
    return "gather"
  if name.startswith("ynn_fusion"):
    line = re.search(rf"%{re.escape(name)} = [^\n]*", hlo_text)
    return "reduction" if line and "reduce" in line.group(0) else "library fusion"
  if "fusion" in name:
    return "loop fusion"
  return "other"


def op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the `op_name` metadata (the JAX operation it came from)."""
  return {m.group(1): m.group(2) for m in re.finditer(
      r"%([\w.\-]+) = [^\n]*?metadata=\{op_name=\"([^\"]+)\"", hlo_text)}


def profile_events(fn, trace_dir: str) -> list[dict]:
  """Runs `fn` under the profiler and returns the complete ("X") events of its trace."""
  jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  try:
    fn()
  finally:
    jax.profiler.stop_trace()
  (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
  with gzip.open(path) as f:
    return [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]


def main(argv):
  del argv
  num_users, num_items, nnz = SHAPES[_SHAPE.value]
  matrix = random_positives(num_users, num_items, nnz)
  batch_size = TARGET_BATCH
  sampler = sampling.EpochSampler(matrix, batch_size, batches_per_chunk(matrix.nnz, batch_size))
  batches = sampler.epoch(0)
  full = max(1, batches.users.shape[0] - 1)  # the last chunk may be padded
  chunks = jax.block_until_ready([train_step.chunk_of(batches, c) for c in range(full)])
  timed_chunks = [chunks[(1 + i) % full] for i in range(_CHUNKS.value)]
  optimizer = make_optimizer(_OPTIMIZER.value)
  step = train_step.make_train_step(optimizer)
  state = train_step.init_state(jax.random.key(0), optimizer, num_users, num_items, TARGET_DIM)
  # Full chunks run without the empty-batch check, as in `train_step.run_epoch`. The compiled
  # program is the one profiled, so its HLO names are the trace's op names.
  compiled = step.lower(state, chunks[0], skip_empty=False).compile()
  hlo_text = compiled.as_text()
  state, _ = jax.block_until_ready(compiled(state, chunks[0]))  # warm-up

  def timed():
    nonlocal state
    for chunk in timed_chunks:
      state, _ = compiled(state, chunk)
    jax.block_until_ready(state)

  with tempfile.TemporaryDirectory() as trace_dir:
    events = profile_events(timed, trace_dir)
  known = op_names(hlo_text)
  total_us, calls = collections.Counter(), collections.Counter()
  for e in events:
    if e["name"] in known:
      total_us[e["name"]] += e["dur"]
      calls[e["name"]] += 1
  num_batches = len(timed_chunks) * sampler.batches_per_chunk
  ops_total = sum(total_us.values())
  if not ops_total:
    raise RuntimeError("the profile holds no event of the step's ops (no device trace?).")
  ops = [{"op": name, "kind": op_kind(name, hlo_text), "jax_op": known[name],
          "us_per_batch": us / num_batches, "share": us / ops_total, "calls": calls[name]}
         for name, us in total_us.most_common()]
  by_kind = collections.Counter()
  for op in ops:
    by_kind[op["kind"]] += op["share"]
  device = jax.devices()[0]
  out = _OUT.value or outputs.default_output(
      f"step_profile_{device.device_kind.replace(' ', '_').lower()}.json")
  files.write_json_atomic(out, {
      "command": "python -m benchmarks.step_profile" + "".join(
          f" --{f.name}={f.value}" for f in (_SHAPE, _OPTIMIZER, _CHUNKS, _OUT)
          if f.value != f.default),
      "device_kind": device.device_kind, "jax_version": jax.__version__,
      "shape": _SHAPE.value, "optimizer": _OPTIMIZER.value, "batch_size": batch_size,
      "dim": TARGET_DIM, "batches_profiled": num_batches,
      "ops_us_per_batch": ops_total / num_batches, "share_by_kind": dict(by_kind), "ops": ops})
  for kind, share in by_kind.most_common():
    print(f"{kind:15s} {share:6.1%}")
  for op in ops[:12]:
    print(f"{op['us_per_batch']:8.1f} us/batch {op['share']:6.1%}  {op['kind']:13s} {op['op']}"
          f"  ({op['jax_op']})")
  print(f"wrote {out}")


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
