"""Speed of `recommend.top_k` for every user of an ML-1M-shaped model, seen items filtered out.

  python -m benchmarks.topk_speed [--users=6040 --items=3706 --dim=64 --k=20 --repeats=5]

Writes runs/benchmarks/topk_speed.json (`--out`: another file): the median seconds for all users
and per thousand users over `--repeats` timed runs (each run ends with the results on the host),
the first (compiling) run apart, for each block size, plus the device kind and library versions.
The committed figures in benchmarks/results/topk_speed.json (shown in benchmarks/RESULTS.md) were
made, and are updated, by

  python -m benchmarks.topk_speed --out=benchmarks/results/topk_speed.json
"""

import os
import platform
import time

from absl import flags
import jax
import numpy as np
import scipy.sparse as sp

from benchmarks import outputs
from experiments import run_cli
from tripjax import files
from tripjax import model
from tripjax import recommend

_USERS = flags.DEFINE_integer("users", 6040, "Users (ML-1M: 6040).", lower_bound=1)
_ITEMS = flags.DEFINE_integer("items", 3706, "Items (ML-1M: 3706).", lower_bound=2)
_DIM = flags.DEFINE_integer("dim", 64, "Embedding size.", lower_bound=1)
_K = flags.DEFINE_integer("k", 20, "Items per user.", lower_bound=1)
_SEEN = flags.DEFINE_integer("seen_per_user", 165, "Mean training items per user (ML-1M: ~165).",
                             lower_bound=1)
_BLOCKS = flags.DEFINE_list("batch_sizes", ["256", "1024", "4096"], "Block sizes to time.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per block size (median reported).",
                                lower_bound=1)
flags.register_validator(
    "batch_sizes", lambda v: bool(v) and all(s.isdigit() and int(s) > 0 for s in v),
    "must be one or more positive integers, e.g. --batch_sizes=256,1024")
_OUT = flags.DEFINE_string("out", outputs.default_output("topk_speed.json"), "JSON output path.")


def _seen_matrix(num_users, num_items, mean_seen, seed=0):
  """bool CSR [U, I] with a Poisson-ish number of random seen items per user."""
  rng = np.random.default_rng(seed)
  counts = np.clip(rng.geometric(1.0 / mean_seen, num_users), 1, num_items // 2)
  rows = np.repeat(np.arange(num_users), counts)
  cols = np.concatenate([rng.choice(num_items, c, replace=False) for c in counts])
  matrix = sp.csr_matrix((np.ones(rows.size, bool), (rows, cols)), (num_users, num_items))
  matrix.sort_indices()
  return matrix


def main(argv):
  del argv
  params = model.init_params(jax.random.key(0), _USERS.value, _ITEMS.value, _DIM.value)
  seen = _seen_matrix(_USERS.value, _ITEMS.value, _SEEN.value)
  users = np.arange(_USERS.value, dtype=np.int32)
  runs = []
  for batch_size in map(int, _BLOCKS.value):
    start = time.perf_counter()
    recommend.top_k(params, users, k=_K.value, exclude=seen, batch_size=batch_size)
    first = time.perf_counter() - start
    times = []
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      items, _ = recommend.top_k(params, users, k=_K.value, exclude=seen, batch_size=batch_size)
      times.append(time.perf_counter() - start)  # top_k returns numpy: the work is done
    median = float(np.median(times))
    runs.append({"batch_size": batch_size, "first_run_s_with_compile": first,
                 "median_s_all_users": median, "median_s_per_1000_users":
                     median * 1000 / _USERS.value, "times_s": times})
    print(f"batch {batch_size:5d}: {median:.3f} s for {_USERS.value} users, "
          f"{median * 1000 / _USERS.value:.3f} s per 1000 users (first run {first:.2f} s)")
  checked = min(100, users.size)
  assert not np.any(seen[users[:checked]].toarray()[np.arange(checked)[:, None],
                                                    items[:checked]])
  files.write_json_atomic(_OUT.value, {
      "benchmark": "recommend.top_k, all users, train items excluded",
      "shape": {"users": _USERS.value, "items": _ITEMS.value, "dim": _DIM.value, "k": _K.value,
                "seen_entries": int(seen.nnz)},
      "runs": runs,
      "device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
      "cpu_count": os.cpu_count(), "machine": platform.machine(),
      "jax": jax.__version__, "numpy": np.__version__,
  })
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
