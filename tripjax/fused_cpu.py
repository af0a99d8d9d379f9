"""A fused CPU kernel for the triplet step with `sparse_sgd` (XLA custom call through `jax.ffi`).

On CPU, XLA runs the row-sparse step as a chain of passes over [B, D] arrays (gathers, five
row reductions, the gradient, scatter-adds) on one core. `csrc/triplet_sgd_cpu.cc` does the
same arithmetic in two passes, the first spread over XLA's intra-op threads, and updates the
tables in place (they are aliased to the outputs, so a donated state is not copied).

The kernel is compiled from source on first use with the machine's C++ compiler (`$CXX`, else
`c++`), against the XLA FFI headers that jaxlib ships, with `-march=native`; the library is
cached under `$TRIPJAX_CACHE_DIR` (default `~/.cache/tripjax/kernels`) by a digest of the source, the
flags, the compiler, jaxlib's version and the CPU's features, and written atomically.

    user, item, loss = triplet_sgd_update(user_table, item_table, users, pos, neg,
                                          cotangent, learning_rate, margin=0.5, l2=0.0)

equals, up to float rounding, the XLA step: `losses.triplet_cosine_loss` (plus l2), its
hand-written VJP scaled by `cotangent`, then `sparse_optim.sparse_sgd`'s scatter-adds.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).parent / "csrc" / "triplet_sgd_cpu.cc"
TARGET_NAME = "tripjax_triplet_sgd_update"
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-w")


class KernelBuildError(RuntimeError):
  """The fused CPU kernel could not be compiled or loaded (the message says why and how)."""


def cache_dir() -> pathlib.Path:
  """Where compiled kernels are kept: `$TRIPJAX_CACHE_DIR`, else `~/.cache/tripjax/kernels`."""
  return pathlib.Path(os.environ.get("TRIPJAX_CACHE_DIR")
                      or pathlib.Path.home() / ".cache" / "tripjax" / "kernels")


def _compiler() -> str:
  name = os.environ.get("CXX", "c++")
  path = shutil.which(name)
  if path is None:
    raise KernelBuildError(
        f"the fused CPU step compiles {SOURCE.name} with a C++17 compiler, and $CXX={name!r} "
        "was not found; install g++ or clang++ (or set CXX), or train without "
        "--fused_cpu_step.")
  return path


def _cpu_features() -> str:
  """The CPU's feature flags (-march=native depends on them), or '' where unknown."""
  try:
    with open("/proc/cpuinfo") as f:
      return next((line for line in f if line.startswith("flags")), "")
  except OSError:
    return ""


def library_path(compiler: str) -> pathlib.Path:
  """The cached library's path for this source, compiler, jaxlib and CPU."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256()
  for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), compiler.encode(),
               jaxlib.__version__.encode(), _cpu_features().encode()):
    digest.update(part)
    digest.update(b"\0")
  return cache_dir() / f"triplet_sgd_cpu-{digest.hexdigest()[:16]}.so"


def build() -> pathlib.Path:
  """Compiles the kernel unless a cached build exists; returns the library's path.

  Raises:
    KernelBuildError: no compiler, no FFI headers, or the compiler failed (its output is in
      the message). Nothing is left in the cache then.
  """
  compiler = _compiler()
  target = library_path(compiler)
  if target.exists():
    return target
  include = pathlib.Path(jax.ffi.include_dir())
  if not (include / "xla" / "ffi" / "api" / "ffi.h").exists():
    raise KernelBuildError(f"jaxlib ships no XLA FFI headers at {include}; the fused CPU step "
                           "needs a jaxlib that does (>= 0.4.36).")
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
    partial = pathlib.Path(tmp) / target.name
    command = [compiler, *FLAGS, f"-I{include}", str(SOURCE), "-o", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise KernelBuildError(f"compiling {SOURCE} failed ({' '.join(command)}):\n"
                             f"{result.stderr[-4000:]}")
    os.replace(partial, target)
  return target


@functools.cache
def _register() -> None:
  """Builds, loads and registers the kernel with XLA:CPU (once per process)."""
  library = ctypes.cdll.LoadLibrary(str(build()))
  jax.ffi.register_ffi_target(TARGET_NAME, jax.ffi.pycapsule(library.TripletSgdUpdate),
                              platform="cpu")


def triplet_sgd_update(user_table: jax.Array, item_table: jax.Array, users: jax.Array,
                       pos: jax.Array, neg: jax.Array, cotangent: jax.Array,
                       learning_rate: jax.Array | float, margin: float, l2: float = 0.0
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One fused sparse-SGD step of the triplet loss (CPU only; call it under `jax.jit`).

  Args:
    user_table: float32[U, D].
    item_table: float32[I, D].
    users: int32[B], rows of `user_table`.
    pos: int32[B], rows of `item_table` the users liked.
    neg: int32[B], rows of `item_table` drawn as negatives.
    cotangent: float32[B], d objective / d loss of each triplet (weight / batch denominator);
      the l2 term adds `l2 * cotangent[k] * (|u|^2 + |p|^2 + |n|^2)` to the objective.
    learning_rate: float32[], the step size.
    margin: the triplet margin.
    l2: weight of the squared norms (0 for none).

  Returns:
    (new user_table float32[U, D], new item_table float32[I, D], per-triplet hinge losses
    float32[B] at the old tables). Under jit with donated tables the update is in place.
  """
  _register()
  size, dim = users.shape[0], user_table.shape[1]
  call = jax.ffi.ffi_call(
      TARGET_NAME,
      (jax.ShapeDtypeStruct(user_table.shape, jnp.float32),
       jax.ShapeDtypeStruct(item_table.shape, jnp.float32),
       jax.ShapeDtypeStruct((size,), jnp.float32),
       jax.ShapeDtypeStruct((3, size, dim), jnp.float32)),
      input_output_aliases={0: 0, 1: 1})
  user, item, loss, _ = call(
      user_table.astype(jnp.float32), item_table.astype(jnp.float32),
      users.astype(jnp.int32), pos.astype(jnp.int32), neg.astype(jnp.int32),
      cotangent.astype(jnp.float32), jnp.asarray(learning_rate, jnp.float32),
      margin=np.float32(margin), l2=np.float32(l2))
  return user, item, loss
