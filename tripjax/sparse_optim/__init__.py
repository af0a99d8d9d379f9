"""Row-sparse optimizers for embedding tables: lazy Adam, (row-wise) Adagrad, SGD.

They update only the rows a batch gathers (and their optimizer state); `rows` holds the
shared protocol (`RowOptimizer`) and the sum-gather-update-scatter machinery, one module per
optimizer family holds its update, and `row_optimizer(name, learning_rate)` builds one by name.
"""

from tripjax import errors
from tripjax.sparse_optim.adagrad import (SparseAdagradState, SparseRowwiseAdagradState,
                                          sparse_adagrad, sparse_rowwise_adagrad)
from tripjax.sparse_optim.adam import SparseAdamState, sparse_adam
from tripjax.sparse_optim.rows import (DENSE_ROW_RATIO, Params, RowOptimizer, Schedule,
                                       ScalarOrSchedule, learning_rate_at, sum_duplicate_rows)
from tripjax.sparse_optim.sgd import SparseSgdState, sparse_sgd

ROW_OPTIMIZERS = {"sparse_adam": sparse_adam, "sparse_adagrad": sparse_adagrad,
                  "sparse_rowwise_adagrad": sparse_rowwise_adagrad,
                  "sparse_sgd": sparse_sgd}


def row_optimizer(name: str, learning_rate: ScalarOrSchedule,
                  **kwargs) -> RowOptimizer:
  """Builds a row optimizer by name (a key of `ROW_OPTIMIZERS`)."""
  if name not in ROW_OPTIMIZERS:
    raise errors.InvalidInput(f"optimizer must be one of {sorted(ROW_OPTIMIZERS)}, got {name!r}.")
  return ROW_OPTIMIZERS[name](learning_rate, **kwargs)
