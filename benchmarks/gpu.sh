#!/usr/bin/env bash
# The prepared accelerator run (issue 15, item 6): one short call on a lent NVIDIA GPU (JAX with
# CUDA, flax, optax, orbax installed; no internet) gives every figure, in under eight minutes.
#
#   bash benchmarks/gpu.sh                  # from anywhere; works in the repository root
#   TRIPJAX_GPU_SH_ALLOW_CPU=1 JAX_PLATFORMS=cpu OUT=/tmp/gpu_dry QUICK=1 bash benchmarks/gpu.sh
#
# Steps, each under its own time limit inside one budget (GPU_SH_BUDGET_S, default 450 s); a
# step that fails or times out is recorded (rc, seconds) and the next one runs:
#   install          pip install --no-deps -e . (offline; the repository is on PYTHONPATH anyway)
#   devices          jax.devices() and the backend -> devices.json; stops at once, in one line,
#                    unless the backend is gpu or TRIPJAX_GPU_SH_ALLOW_CPU=1
#   tests            pytest on the device (xdist workers when installed, else a serial subset),
#                    stopped by SIGINT at its limit so the counts so far are kept -> pytest_junit.xml
#   throughput_large_batch
#                    tripjax's step at batches 65536 and 262144, dim 64, the ML-20M shape, with the
#                    device sampler (benchmarks.throughput.time_steps; the benchmark's own sweep has
#                    no batch flag and stops at 65536) -> throughput_large_batch.json
#   eval_all_users   metrics.evaluate of every ML-20M-shaped user (eval_speed's split and scores),
#                    first call and warm runs per block size -> eval_all_users.json
#   topk             benchmarks.topk_speed at the ML-20M shape -> topk_speed.json
#   throughput       benchmarks.throughput --target_only --noimplicit at ML-20M -> throughput.json
#   eval_speed       benchmarks.eval_speed's ML-1M part against the lab's sklearn loop (skipped
#                    without sklearn; its ML-20M part is eval_all_users) -> eval_speed.json
#   summary          python -m benchmarks.gpu_summary -> gpu_summary.json (printed at the end)
# Every file goes under $OUT (default runs/benchmarks/gpu), logs under $OUT/logs/.
# Environment: OUT; DATA_DIR (a folder holding ml-100k/ for the tests that read it; default
# $TRIPJAX_DATA_DIR, else shared/data or ../shared/data; without one those tests skip); QUICK=1
# (the CPU dry run: small shapes, a few test files, one repeat); PYTHON (default python);
# PYTEST_WORKERS (default 8); TESTS (test paths instead of the default selection);
# GPU_SH_BUDGET_S. Exit status: 1 when a step other than install failed, timed out or was
# skipped for want of time (or at once when the backend is not gpu), else 0.
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
T0=$(date +%s%N)
PY="${PYTHON:-python}"
command -v "$PY" > /dev/null || PY=python3
QUICK="${QUICK:-0}"
OUT="${OUT:-runs/benchmarks/gpu}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || { echo "gpu.sh: cannot create OUT=$OUT" >&2; exit 1; }
rm -rf "$OUT/logs"
rm -f "$OUT"/{steps.jsonl,devices.json,pytest_junit.xml,throughput_large_batch.json} \
      "$OUT"/{throughput.json,throughput.partial.json,eval_all_users.json,eval_speed.json} \
      "$OUT"/{topk_speed.json,gpu_summary.json}
mkdir -p "$OUT/logs"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ "$QUICK" == 1 ]]; then  # the CPU dry run: every step, at small shapes
  BUDGET_S="${GPU_SH_BUDGET_S:-1200}"
  CAP_SHORT=300; CAP_TESTS=300; RESERVE_AFTER_TESTS=500
  SHAPE=ml-100k; BATCHES=4096,8192; REPS=1; MIN_TRIPLETS=32768
  EVAL_SHAPE=ml-1m; EVAL_BLOCKS=1024; EVAL_REPEATS=1
  TOPK_ARGS=(--users=6040 --items=3706 --seen_per_user=165 --batch_sizes=1024 --repeats=1)
  EVAL_SPEED_ARGS=(--repeats=1 --lab_users=50 --block_size=1024)
  WORKERS="${PYTEST_WORKERS:-0}"
  DEFAULT_TESTS=(tests/test_losses.py tests/test_files.py tests/test_model.py
                 tests/test_gpu_summary.py tests/test_gpu_script.py)
else
  BUDGET_S="${GPU_SH_BUDGET_S:-450}"
  CAP_SHORT=120; CAP_TESTS=200; RESERVE_AFTER_TESTS=230
  SHAPE=ml-20m; BATCHES=65536,262144; REPS=5; MIN_TRIPLETS=16777216
  EVAL_SHAPE=ml-20m; EVAL_BLOCKS=4096,16384; EVAL_REPEATS=2
  TOPK_ARGS=(--users=138000 --items=27000 --seen_per_user=72 --batch_sizes=4096,16384
             --repeats=3)
  EVAL_SPEED_ARGS=(--repeats=3 --lab_users=200 --block_size=1024 --block_size=4096)
  WORKERS="${PYTEST_WORKERS:-8}"
  # Without xdist: the modules whose arrays live on the device, serially.
  DEFAULT_TESTS=(tests/test_losses.py tests/test_metrics.py tests/test_model.py
                 tests/test_sampling.py tests/test_sparse_optim.py tests/test_recommend.py
                 tests/test_sharding.py tests/test_gpu_summary.py tests/test_gpu_script.py)
fi
OPTIMIZERS=sparse_sgd,sparse_rowwise_adagrad,sparse_adam

DATA_DIR="${DATA_DIR:-${TRIPJAX_DATA_DIR:-}}"
if [[ -z "$DATA_DIR" ]]; then
  for d in shared/data ../shared/data; do
    if [[ -f "$d/ml-100k/u.data" ]]; then DATA_DIR="$d"; break; fi
  done
fi
if [[ -n "$DATA_DIR" && -d "$DATA_DIR" ]]; then
  export TRIPJAX_DATA_DIR="$(cd "$DATA_DIR" && pwd)"
  echo "[gpu.sh] data: $TRIPJAX_DATA_DIR"
else
  unset TRIPJAX_DATA_DIR
  echo "[gpu.sh] data: none (set DATA_DIR to a folder holding ml-100k/; those tests skip)"
fi
echo "[gpu.sh] out: $OUT, quick: $QUICK, budget: ${BUDGET_S}s, python: $(command -v "$PY")"

STEPS="$OUT/steps.jsonl"
FAILED=0

elapsed_ms() { echo $(( ($(date +%s%N) - T0) / 1000000 )); }

record() {  # record NAME RC MS LIMIT [SKIPPED_REASON]
  local ms=$3
  if [[ $# -ge 5 ]]; then
    printf '{"step": "%s", "rc": null, "seconds": 0, "timeout_s": 0, "skipped": true, "reason": "%s"}\n' \
      "$1" "$5" >> "$STEPS"
  else
    printf '{"step": "%s", "rc": %d, "seconds": %d.%03d, "timeout_s": %d, "timed_out": %s}\n' \
      "$1" "$2" $((ms / 1000)) $((ms % 1000)) "$4" \
      "$( [[ $2 == 124 || $2 == 137 ]] && echo true || echo false)" >> "$STEPS"
  fi
}

skip_step() {  # skip_step NAME REASON
  echo "[gpu.sh] $1: skipped ($2)"
  record "$1" 0 0 0 "$2"
}

# run_step NAME CAP_S CMD...: CMD under min(CAP_S, what is left of the budget) seconds, output in
# $OUT/logs/NAME.log (stdin passed through, for the python heredocs). STEP_SIGNAL (default TERM)
# is the signal sent at the limit; KILL follows 15 s later. Returns CMD's exit status.
run_step() {
  local name=$1 cap=$2 left limit start rc ms
  shift 2
  left=$(( BUDGET_S - $(elapsed_ms) / 1000 - 5 ))
  limit=$(( cap < left ? cap : left ))
  if (( limit < 10 )); then
    skip_step "$name" "${left}s left of the ${BUDGET_S}s budget"
    FAILED=1
    return 124
  fi
  start=$(date +%s%N)
  timeout -s "${STEP_SIGNAL:-TERM}" -k 15 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  record "$name" "$rc" "$ms" "$limit"
  printf '[gpu.sh] %s: rc=%d in %d.%01ds (limit %ds)\n' "$name" "$rc" $((ms / 1000)) \
    $((ms % 1000 / 100)) "$limit"
  if (( rc != 0 )); then
    FAILED=1
    tail -n 15 "$OUT/logs/$name.log" | sed 's/^/    /'
  fi
  return "$rc"
}

# 1. Install (no dependencies, no index: the machine is offline) and check the device.
if ! run_step install 90 "$PY" -m pip install --no-deps --no-build-isolation --no-index -q -e .
then  # not fatal: every step runs from the repository root, which is on PYTHONPATH
  FAILED=0
  echo "    (continuing: tripjax is imported from the repository, on PYTHONPATH)"
fi

run_step devices 90 "$PY" - "$OUT/devices.json" <<'PY'
import importlib, json, platform, sys
import jax
devices = jax.devices()
info = {"backend": jax.default_backend(), "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind, "num_devices": len(devices),
        "jax": jax.__version__, "python": platform.python_version(), "versions": {}}
for name in ("jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "scipy"):
  try:
    info["versions"][name] = getattr(importlib.import_module(name), "__version__", "?")
  except Exception as e:  # pylint: disable=broad-except
    info["versions"][name] = f"not importable: {type(e).__name__}"
with open(sys.argv[1], "w") as f:
  json.dump(info, f, indent=1)
print("jax.devices():", devices)
print("backend:", info["backend"], "| jax", jax.__version__)
PY
tail -n 2 "$OUT/logs/devices.log" | sed 's/^/    /'
BACKEND=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["backend"])' \
          "$OUT/devices.json" 2> /dev/null) || BACKEND="none (JAX did not start)"
if [[ "$BACKEND" != gpu && "${TRIPJAX_GPU_SH_ALLOW_CPU:-0}" != 1 ]]; then
  echo "gpu.sh: JAX's default backend is $BACKEND, not gpu (see $OUT/logs/devices.log): run on a machine with JAX for CUDA, or set TRIPJAX_GPU_SH_ALLOW_CPU=1 for a CPU dry run" >&2
  exit 1
fi

# 2. The tests on the device. Several workers share one GPU: no preallocation.
if "$PY" -c "import xdist" 2> /dev/null; then HAS_XDIST=1; else HAS_XDIST=0; fi
if [[ -n "${TESTS:-}" ]]; then
  read -r -a TEST_ARGS <<< "$TESTS"
elif [[ "$HAS_XDIST" == 1 && "$QUICK" != 1 ]]; then
  TEST_ARGS=(tests)
else
  TEST_ARGS=("${DEFAULT_TESTS[@]}")
fi
XDIST_ARGS=()
if [[ "$HAS_XDIST" == 1 && "$WORKERS" -gt 0 ]]; then XDIST_ARGS=(-n "$WORKERS" --dist=loadfile); fi
echo "[gpu.sh] tests: ${TEST_ARGS[*]} (xdist: $HAS_XDIST, workers: $WORKERS)"
LEFT_FOR_TESTS=$(( BUDGET_S - $(elapsed_ms) / 1000 - RESERVE_AFTER_TESTS ))
(( LEFT_FOR_TESTS < CAP_TESTS )) && CAP_TESTS=$(( LEFT_FOR_TESTS > 60 ? LEFT_FOR_TESTS : 60 ))
STEP_SIGNAL=INT run_step tests "$CAP_TESTS" env XLA_PYTHON_CLIENT_PREALLOCATE=false \
  "$PY" -m pytest -q -o addopts= -p no:cacheprovider ${XDIST_ARGS[@]+"${XDIST_ARGS[@]}"} \
  --durations=15 --junitxml="$OUT/pytest_junit.xml" "${TEST_ARGS[@]}"
grep -E "(passed|failed|error|skipped).* in [0-9.]+s" "$OUT/logs/tests.log" | tail -n 1 \
  | sed 's/^/    /'

# 3. Benchmarks. Training at large batches, the library's step and the device sampler.
run_step throughput_large_batch "$CAP_SHORT" "$PY" - "$OUT/throughput_large_batch.json" \
  "$SHAPE" "$BATCHES" "$OPTIMIZERS" "$REPS" "$MIN_TRIPLETS" <<'PY'
import sys
import jax
from benchmarks import step_inputs, throughput
from tripjax import files, sampling
out, shape, batches, optimizers, reps, min_triplets = sys.argv[1:]
batches, optimizers = [int(b) for b in batches.split(",")], optimizers.split(",")
reps, min_triplets, dim = int(reps), int(min_triplets), step_inputs.TARGET_DIM
users, items, nnz = step_inputs.SHAPES[shape]
matrix = step_inputs.random_positives(users, items, nnz)
device = jax.devices()[0]
payload = {"benchmark": "benchmarks.throughput.time_steps at large batches (benchmarks/gpu.sh)",
           "shape": shape, "users": users, "items": items, "positives": int(matrix.nnz),
           "dim": dim, "reps": reps, "device_kind": device.device_kind,
           "platform": device.platform, "jax": jax.__version__, "steps": [], "epochs": []}
for batch in batches:
  if 3 * batch > matrix.nnz:
    continue
  sampler = sampling.EpochSampler(matrix, batch, step_inputs.batches_per_chunk(matrix.nnz, batch),
                                  shuffle_on="device")
  variants = [("make_train_step", name) for name in optimizers]
  for result in throughput.time_steps(matrix, sampler, variants, dim, reps, min_triplets):
    result.update(shape=shape, batch_size=batch, dim=dim)
    payload["steps"].append(result)
    print(f"B={batch} {result['optimizer']}: {result['triplets_per_s'] / 1e6:.1f}M triplets/s, "
          f"compile {result['compile_s']:.1f}s", flush=True)
  files.write_json_atomic(out, payload)
  epoch = throughput.time_epoch(matrix, batch, optimizers[0], dim, max(2, reps // 2))
  epoch["shape"] = shape
  payload["epochs"].append(epoch)
  print(f"B={batch} epoch with sampling ({optimizers[0]}): "
        f"{epoch['epoch_triplets_per_s'] / 1e6:.1f}M triplets/s", flush=True)
  files.write_json_atomic(out, payload)
PY

# Evaluation of every user (AUC and @20 metrics), compile apart from the warm runs.
run_step eval_all_users "$CAP_SHORT" "$PY" - "$OUT/eval_all_users.json" "$EVAL_SHAPE" \
  "$EVAL_BLOCKS" "$EVAL_REPEATS" <<'PY'
import sys, time
import jax
import numpy as np
from benchmarks import eval_speed
from tripjax import files, metrics
out, shape, blocks, repeats = sys.argv[1:]
spec = {"ml-20m": eval_speed.ML20M, "ml-1m": eval_speed.ML1M}[shape]
start = time.perf_counter()
train, test = eval_speed.make_split(spec["users"], spec["items"], spec["positives"],
                                    spec["test_per_user"])
score_fn = eval_speed.cosine_score_fn(*eval_speed.cosine_embeddings(
    spec["users"], spec["items"], spec["dim"]))
payload = {"benchmark": "tripjax.metrics.evaluate, every user, ks=(20,) (benchmarks/gpu.sh)",
           "shape": shape, "users": train.shape[0], "items": train.shape[1],
           "train_positives": int(train.nnz), "test_positives": int(test.nnz),
           "dim": spec["dim"], "data_s": time.perf_counter() - start,
           "device_kind": jax.devices()[0].device_kind, "platform": jax.default_backend(),
           "jax": jax.__version__, "runs": []}
for block in map(int, blocks.split(",")):
  start = time.perf_counter()
  result = metrics.evaluate(score_fn, train, test, ks=(20,), block_size=block)
  first = time.perf_counter() - start
  warm = []
  for _ in range(int(repeats)):  # evaluate returns host arrays: the work is done
    start = time.perf_counter()
    metrics.evaluate(score_fn, train, test, ks=(20,), block_size=block)
    warm.append(time.perf_counter() - start)
  payload["runs"].append({"block_size": block, "first_call_s": first, "warm_s": warm,
                          "median_s": float(np.median(warm)),
                          "users_evaluated": result.users_evaluated,
                          "mean_auc": result.means["auc"]})
  print(f"block {block}: {np.median(warm):.2f}s for {train.shape[0]} users "
        f"(first call {first:.2f}s)", flush=True)
  files.write_json_atomic(out, payload)
PY

run_step topk "$CAP_SHORT" "$PY" -m benchmarks.topk_speed "${TOPK_ARGS[@]}" \
  --out="$OUT/topk_speed.json"
run_step throughput "$CAP_SHORT" "$PY" -m benchmarks.throughput --shapes="$SHAPE" --target_only \
  --noimplicit --reps="$REPS" --out="$OUT/throughput.json"
if "$PY" -c "import sklearn" 2> /dev/null; then
  run_step eval_speed "$CAP_SHORT" "$PY" -m benchmarks.eval_speed "${EVAL_SPEED_ARGS[@]}" \
    --skip_ml20m --output="$OUT/eval_speed.json"
else
  skip_step eval_speed "sklearn is not installed (the lab loop's reference)"
fi

# 4. The summary.
SUMMARY_FLAGS=(--gpu_dir="$OUT" --gpu_total_s="$(( $(elapsed_ms) / 1000 ))")
[[ "$QUICK" == 1 ]] && SUMMARY_FLAGS+=(--gpu_quick)
if "$PY" -m benchmarks.gpu_summary "${SUMMARY_FLAGS[@]}" > "$OUT/gpu_summary.json.tmp" \
     2> "$OUT/logs/summary.log"; then
  mv "$OUT/gpu_summary.json.tmp" "$OUT/gpu_summary.json"
  cat "$OUT/gpu_summary.json"
else
  FAILED=1
  echo "[gpu.sh] summary failed:"; tail -n 15 "$OUT/logs/summary.log" | sed 's/^/    /'
fi
MS=$(elapsed_ms)
printf '[gpu.sh] total %d.%01ds (budget %ds); files in %s\n' $((MS / 1000)) \
  $((MS % 1000 / 100)) "$BUDGET_S" "$OUT"
exit "$FAILED"
