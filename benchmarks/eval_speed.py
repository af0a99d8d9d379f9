"""Speed of `tripjax.metrics.evaluate` against the lab's per-user sklearn loop, and peak memory of
an ML-20M-shaped evaluation.

  python -m benchmarks.eval_speed [--repeats=5] [--lab_users=500] [--skip_ml20m]

Part 1 (ML-1M shape: 5,180 users x 3,526 items, ~560k positives, 10 test items per user, random
D=64 embeddings, cosine scores): the full `evaluate` (AUC and every @20 metric, top-20 lists) vs the
lab's loop (per user: numpy cosine scores, then `roc_auc_score` on the candidates). The lab loop is
timed on the first `--lab_users` users and extrapolated linearly to all users; both are timed in
the same process in interleaved rounds (the CPUs are shared), medians of `--repeats` rounds and
the per-round ratios, compile time reported apart. Exactness: the AUC of `evaluate` against
sklearn on the same float32 scores.

Part 2 (ML-20M shape: 138,000 users x 27,000 items, ~10M positives): one `evaluate` in a child
process per block size; peak RSS of the child (`ru_maxrss`), data generation included.

Writes runs/benchmarks/eval_speed.json (`--output`: another file). The committed figures in
benchmarks/results/eval_speed.json (shown in benchmarks/RESULTS.md) were made, and are updated, by

  python -m benchmarks.eval_speed --repeats=7 --output=benchmarks/results/eval_speed.json
"""

import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time

from absl import flags
import numpy as np
import scipy.sparse as sp

from benchmarks import outputs
from experiments import run_cli
from tripjax import files

_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs (median reported).", lower_bound=1)
_LAB_USERS = flags.DEFINE_integer("lab_users", 500, "Users the lab loop is timed on.",
                                  lower_bound=1)
_BLOCK_SIZES = flags.DEFINE_multi_integer("block_size", [256, 1024],
                                          "Block sizes timed on the ML-1M shape.", lower_bound=1)
_ML20M_BLOCKS = flags.DEFINE_multi_integer("ml20m_block_size", [1024],
                                           "Block sizes of the ML-20M memory runs.", lower_bound=1)
_SKIP_ML20M = flags.DEFINE_bool("skip_ml20m", False, "Skip the ML-20M memory run.")
_OUTPUT = flags.DEFINE_string("output", outputs.default_output("eval_speed.json"),
                              "JSON output.")

ML1M = dict(users=5180, items=3526, positives=560_000, test_per_user=10, dim=64)
ML20M = dict(users=138_000, items=27_000, positives=10_000_000, test_per_user=10, dim=64)


def make_split(users, items, positives, test_per_user, seed=0):
  """A synthetic implicit-feedback split with popularity skew and heavy-tailed activity.

  Returns:
    (train, test): disjoint bool CSR [users, items]; every user keeps >= 1 train positive and
    has min(test_per_user, n_u - 1) test positives.
  """
  rng = np.random.default_rng(seed)
  activity = rng.lognormal(0.0, 0.8, users)
  pop = 1.0 / np.arange(1, items + 1) ** 0.9
  pop = rng.permutation(pop / pop.sum())
  draws = positives
  for _ in range(4):  # duplicates are dropped: draw more until ~`positives` distinct pairs remain
    per_user = np.maximum(20, np.round(activity / activity.sum() * draws)).astype(np.int64)
    rows = np.repeat(np.arange(users, dtype=np.int64), per_user)
    codes = np.unique(rows * items + rng.choice(items, size=rows.size, p=pop))
    if codes.size >= 0.98 * positives:
      break
    draws = int(draws * positives / codes.size * 1.02)
  rows, cols = (codes // items).astype(np.int32), (codes % items).astype(np.int32)
  # Rank the entries of each row by a random key; the first few go to test.
  order = np.lexsort((rng.random(rows.size), rows))
  rows, cols = rows[order], cols[order]
  counts = np.bincount(rows, minlength=users)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  rank = np.arange(rows.size) - np.repeat(starts, counts)
  is_test = rank < np.minimum(test_per_user, counts - 1)[rows]

  def csr(mask):
    m = sp.csr_matrix((np.ones(mask.sum(), bool), (rows[mask], cols[mask])), shape=(users, items))
    m.sort_indices()
    return m

  return csr(~is_test), csr(is_test)


def cosine_embeddings(users, items, dim, seed=0):
  rng = np.random.default_rng(seed)
  u = rng.standard_normal((users, dim), dtype=np.float32)
  v = rng.standard_normal((items, dim), dtype=np.float32)
  return (u / np.linalg.norm(u, axis=1, keepdims=True),
          v / np.linalg.norm(v, axis=1, keepdims=True))


def cosine_score_fn(u, v):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  u, v = jnp.asarray(u), jnp.asarray(v)
  return jax.jit(lambda users: u[users] @ v.T)


def lab_loop(u, v, train, test, num_users):
  """The lab's evaluation: per user, numpy cosine scores and sklearn's AUC on the candidates."""
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  aucs = []
  for user in range(num_users):
    scores = v @ u[user]
    cand = np.ones(v.shape[0], bool)
    cand[train.indices[train.indptr[user]:train.indptr[user + 1]]] = False
    labels = np.zeros(v.shape[0], bool)
    labels[test.indices[test.indptr[user]:test.indptr[user + 1]]] = True
    aucs.append(roc_auc_score(labels[cand], scores[cand]))
  return np.array(aucs)


def sklearn_on_scores(scores, train, test):
  """sklearn's AUC of each of the first len(scores) users on the given float32[B, I] scores."""
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  out = []
  for user, row in enumerate(scores):
    cand = np.ones(row.size, bool)
    cand[train.indices[train.indptr[user]:train.indptr[user + 1]]] = False
    labels = np.zeros(row.size, bool)
    labels[test.indices[test.indptr[user]:test.indptr[user + 1]]] = True
    out.append(roc_auc_score(labels[cand], row[cand]))
  return np.array(out)


def bench_ml1m(repeats, lab_users, block_sizes):
  from tripjax import metrics  # pylint: disable=g-import-not-at-top
  train, test = make_split(ML1M["users"], ML1M["items"], ML1M["positives"],
                           ML1M["test_per_user"])
  u, v = cosine_embeddings(ML1M["users"], ML1M["items"], ML1M["dim"])
  score_fn = cosine_score_fn(u, v)
  num_users = train.shape[0]
  out = {"shape": {"users": num_users, "items": train.shape[1], "train_positives": int(train.nnz),
                   "test_positives": int(test.nnz), "dim": ML1M["dim"]},
         "evaluate": {}}
  lab_users = min(lab_users, num_users)
  results, first = {}, {}
  for block in block_sizes:  # compile (first call) apart
    t0 = time.perf_counter()
    results[block] = metrics.evaluate(score_fn, train, test, ks=(20,), block_size=block)
    first[block] = time.perf_counter() - t0
  # Interleaved rounds, so the lab loop and evaluate see the same machine load (shared CPUs).
  times = {block: [] for block in block_sizes}
  lab_times, ratios = [], []
  for _ in range(repeats):
    for block in block_sizes:
      t0 = time.perf_counter()
      metrics.evaluate(score_fn, train, test, ks=(20,), block_size=block)
      times[block].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    lab_aucs = lab_loop(u, v, train, test, lab_users)
    lab_times.append(time.perf_counter() - t0)
    ratios.append(lab_times[-1] * num_users / lab_users / min(t[-1] for t in times.values()))
  for block in block_sizes:
    med = float(np.median(times[block]))
    out["evaluate"][str(block)] = {"median_s": med, "runs_s": [round(x, 4) for x in times[block]],
                                   "first_call_s (compile + run)": first[block],
                                   "compile_s_estimate": max(0.0, first[block] - med)}
  block = min(block_sizes, key=lambda b: np.median(times[b]))
  result, med = results[block], float(np.median(times[block]))
  lab_med = float(np.median(lab_times))
  lab_total = lab_med * num_users / lab_users
  same_scores = np.asarray(score_fn(np.arange(lab_users, dtype=np.int32)))
  sk_same = sklearn_on_scores(same_scores, train, test)
  out["lab_loop"] = {"users_timed": lab_users, "median_s_for_timed_users": lab_med,
                     "runs_s": [round(x, 4) for x in lab_times],
                     "extrapolated_s_all_users": lab_total,
                     "note": "timed on the first users_timed users, extrapolated linearly"}
  out["best_block_size"] = block
  out["speedup_vs_lab"] = lab_total / med
  out["speedup_per_round"] = [round(r, 1) for r in ratios]
  out["speedup_median_of_rounds"] = float(np.median(ratios))
  out["max_abs_auc_diff_vs_sklearn_same_scores"] = float(
      np.max(np.abs(result.auc[:lab_users] - sk_same)))
  out["max_abs_auc_diff_vs_lab_numpy_scores"] = float(
      np.max(np.abs(result.auc[:lab_users] - lab_aucs)))
  out["note_on_lab_diff"] = ("the lab's numpy matmul rounds scores differently from XLA's; one "
                             "swapped near-tie moves a user's AUC by 1/(n_pos*n_neg) ~ 3e-5")
  out["mean_auc"] = result.means["auc"]
  return out


_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from benchmarks.eval_speed import ML20M, make_split, cosine_embeddings, cosine_score_fn
from tripjax import metrics
t0 = time.perf_counter()
train, test = make_split(ML20M["users"], ML20M["items"], ML20M["positives"], ML20M["test_per_user"])
u, v = cosine_embeddings(ML20M["users"], ML20M["items"], ML20M["dim"])
rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
t1 = time.perf_counter()
res = metrics.evaluate(cosine_score_fn(u, v), train, test, ks=(20,), block_size={block})
t2 = time.perf_counter()
print(json.dumps(dict(block_size={block}, users=train.shape[0], items=train.shape[1],
    train_positives=int(train.nnz), test_positives=int(test.nnz), data_s=t1 - t0,
    evaluate_s_incl_compile=t2 - t1, mean_auc=res.means["auc"],
    peak_rss_gib_after_data=rss_data,
    peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)))
"""


def bench_ml20m(block):
  root = str(pathlib.Path(__file__).resolve().parents[1])
  proc = subprocess.run([sys.executable, "-c", _CHILD.format(root=root, block=block)],
                        capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    return {"block_size": block, "error": proc.stderr[-2000:]}
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  out["under_4_gib"] = out["peak_rss_gib"] < 4.0
  return out


def _versions():
  import jax  # pylint: disable=g-import-not-at-top
  import sklearn  # pylint: disable=g-import-not-at-top
  return {"python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__,
          "scipy": __import__("scipy").__version__, "sklearn": sklearn.__version__,
          "device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
          "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg()}


def main(argv):
  del argv
  out = {"versions": _versions()}
  out["ml1m"] = bench_ml1m(_REPEATS.value, _LAB_USERS.value, _BLOCK_SIZES.value)
  print(json.dumps(out["ml1m"], indent=2))
  if not _SKIP_ML20M.value:
    out["ml20m"] = [bench_ml20m(b) for b in _ML20M_BLOCKS.value]
    print(json.dumps(out["ml20m"], indent=2))
  out["versions"]["load_average_at_end"] = os.getloadavg()
  out["parent_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  files.write_json_atomic(_OUTPUT.value, out)
  print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
