"""The training benchmarks' inputs: MovieLens-shaped random positives, chunking, optimizers.

Shared by `benchmarks.throughput` (triplets/s against implicit's BPR) and
`benchmarks.step_profile` (where the step's time goes), so both time the same step on the same
matrices.
"""

import numpy as np
import optax
import scipy.sparse as sp

from tripjax import sparse_optim
from tripjax.config import TrainConfig

# (users, items, positives): the real datasets' sizes, positives = ratings >= 4.
SHAPES = {
    "ml-100k": (943, 1682, 55_375),
    "ml-1m": (6040, 3706, 575_281),
    "ml-20m": (138_000, 27_000, 9_995_410),
}
OPTIMIZERS = ("adam", "sparse_adam", "sparse_adagrad", "sparse_rowwise_adagrad", "sparse_sgd")
TARGET_DIM, TARGET_BATCH = 64, 4096
# Batches per jitted call: the training driver's default, so the benchmark times what it runs.
BATCHES_PER_DISPATCH = TrainConfig().steps_per_dispatch


def random_positives(num_users: int, num_items: int, nnz: int, seed: int = 0) -> sp.csr_matrix:
  """bool CSR [U, I] with about `nnz` positives, skewed like MovieLens.

  Users' activity is log-normal (at least 5 positives), item popularity Zipf-like.
  """
  rng = np.random.default_rng(seed)
  activity = rng.lognormal(0.0, 1.0, num_users)
  counts = np.maximum(5, np.round(activity / activity.sum() * nnz)).astype(np.int64)
  counts = np.minimum(counts, num_items // 2)
  users = np.repeat(np.arange(num_users, dtype=np.int32), counts)
  popularity = 1.0 / (np.arange(num_items) + 10.0) ** 0.9
  items = rng.choice(num_items, size=users.size, p=popularity / popularity.sum())
  items = rng.permutation(num_items)[items].astype(np.int32)
  matrix = sp.csr_matrix((np.ones(users.size, bool), (users, items)),
                         shape=(num_users, num_items))
  matrix.sum_duplicates()
  matrix.data[:] = True
  matrix.sort_indices()
  return matrix


def batches_per_chunk(num_positives: int, batch_size: int) -> int:
  """The driver's batches per chunk, but at least 3 chunks per epoch (one may be padded)."""
  num_batches = -(-num_positives // batch_size)
  return max(1, min(BATCHES_PER_DISPATCH, num_batches // 3))


def make_optimizer(name: str, learning_rate: float = 1e-3):
  """The benchmarks' optimizer: optax adam, or the named `sparse_optim` row optimizer."""
  if name == "adam":
    return optax.adam(learning_rate)
  return sparse_optim.row_optimizer(name, learning_rate)
