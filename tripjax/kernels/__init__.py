"""Hand-written XLA:CPU kernels, compiled on first use and loaded from a verified cache.

`triplet_sgd_update` is the fused triplet step with `sparse_sgd` that
`train.make_train_step(..., fused_cpu=True)` calls; `missing_items_from_words` (the
exact-negatives search) and `shuffle` (the epoch's shuffle) are what `sampling.EpochSampler` runs
on CPU. Both live in one library (`library`);
`register()` builds and registers it up front, so that build errors surface before tracing.
"""

from tripjax.kernels.cache import cache_dir
from tripjax.kernels.compiler import build
from tripjax.kernels.errors import KernelBuildError, Unavailable, UnsafeKernelCache
from tripjax.kernels.library import load, register
from tripjax.kernels.missing_items_cpu import missing_items_from_words
from tripjax.kernels.shuffle_cpu import scratch_size, shuffle
from tripjax.kernels.triplet_sgd_cpu import triplet_sgd_update
