"""Hand-written XLA:CPU kernels, compiled on first use and loaded from a verified cache.

`triplet_sgd_update` is the fused triplet step with `sparse_sgd` that
`train.make_train_step(..., fused_cpu=True)` calls; `register()` builds and registers it up
front, so that build errors surface before tracing.
"""

from tripjax.kernels.cache import cache_dir
from tripjax.kernels.compiler import build
from tripjax.kernels.errors import KernelBuildError, Unavailable, UnsafeKernelCache
from tripjax.kernels.triplet_sgd_cpu import load, register, triplet_sgd_update
