"""The CPU kernels' one library: built on first use, loaded checked, registered with XLA:CPU."""

from __future__ import annotations

import ctypes
import functools

import jax

from tripjax.kernels import cache
from tripjax.kernels import compiler
from tripjax.kernels import errors

# XLA FFI target names -> the library's handler symbols.
TRIPLET_SGD_UPDATE = "tripjax_triplet_sgd_update"
MISSING_ITEMS = "tripjax_missing_items"
WEIGHTED_MISSING_ITEMS = "tripjax_weighted_missing_items"
SHUFFLE = "tripjax_shuffle"
_HANDLERS = {TRIPLET_SGD_UPDATE: "TripletSgdUpdate", MISSING_ITEMS: "MissingItems",
             WEIGHTED_MISSING_ITEMS: "WeightedMissingItems", SHUFFLE: "Shuffle"}


def load() -> ctypes.CDLL:
  """Builds the kernels unless a verified build is cached, and loads the library checked.

  Right before loading, the library is checked again (`cache.is_verified`'s rules) and found to
  be still the file hashed; it is loaded through the checked folder's descriptor.

  Raises:
    UnsafeKernelCache: the cache folder or library may be another account's.
    KernelBuildError: the kernels cannot be built or loaded (the message says why).
  """
  for _ in range(3):
    path = compiler.build()
    loaded = cache.load_verified(path)
    if loaded is not None:
      return loaded
  raise errors.KernelBuildError(
      f"the CPU kernels' library {path} kept changing between its check and its loading "
      "(another process rebuilding it?); try again.")


@functools.cache
def register() -> None:
  """Builds, loads and registers every kernel with XLA:CPU (once per process).

  Raises:
    UnsafeKernelCache: the cache folder or library may be another account's.
    KernelBuildError: the kernels cannot be built or loaded (the message says why).
  """
  loaded = load()
  for target, symbol in _HANDLERS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(loaded, symbol)),
                                platform="cpu")
