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
import platform
import shlex
import shutil
import signal
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).parent / "csrc" / "triplet_sgd_cpu.cc"
TARGET_NAME = "tripjax_triplet_sgd_update"
# -w: XLA's FFI headers warn under g++ 12 (their code, not ours; the kernel builds clean).
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-w")
# Where the compiler has a static libstdc++, it is linked in and kept private, so the kernel
# never binds to an older libstdc++ the process may have loaded first (conda's, say).
STATIC_RUNTIME_FLAGS = ("-static-libstdc++", "-static-libgcc", "-Wl,--exclude-libs,ALL")
BUILD_TIMEOUT_S = 300


class Unavailable(RuntimeError):
  """The fused CPU step cannot run in this process (the message says why and what to do)."""


class KernelBuildError(Unavailable):
  """The fused CPU kernel could not be compiled or loaded (the message says why and how)."""


def cache_dir() -> pathlib.Path:
  """Where compiled kernels are kept: `$TRIPJAX_CACHE_DIR`, else `~/.cache/tripjax/kernels`."""
  return pathlib.Path(os.environ.get("TRIPJAX_CACHE_DIR")
                      or pathlib.Path.home() / ".cache" / "tripjax" / "kernels")


def _compiler() -> list[str]:
  """The compiler command: `$CXX` split like a shell would (e.g. "ccache g++"), else c++."""
  try:
    command = shlex.split(os.environ.get("CXX", "")) or ["c++"]
  except ValueError as e:
    raise KernelBuildError(f"$CXX={os.environ['CXX']!r} is not a command line: {e}.") from e
  path = shutil.which(command[0])
  if path is None:
    raise KernelBuildError(
        f"the fused CPU step compiles {SOURCE.name} with a C++17 compiler, and "
        f"{command[0]!r} ($CXX, default c++) was not found; install g++ or clang++ (or set "
        "CXX), or train without --fused_cpu_step.")
  return [path, *command[1:]]


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
  """Runs `command`; on timeout kills its whole process group (the driver's cc1plus and ld too).

  Raises:
    subprocess.TimeoutExpired: after killing the group.
  """
  with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        start_new_session=True) as process:
    try:
      stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, signal.SIGKILL)
      process.communicate()
      raise
  return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _compiler_version(compiler: list[str]) -> str:
  """`compiler --version`'s first line ('' if it prints none)."""
  try:
    result = _run([*compiler, "--version"], timeout=60)
  except (OSError, subprocess.TimeoutExpired):
    return ""
  return (result.stdout.splitlines() or [""])[0]


def _flags(compiler: list[str]) -> tuple[str, ...]:
  """`FLAGS`, plus `STATIC_RUNTIME_FLAGS` where the compiler has a static libstdc++."""
  try:  # prints the bare name when it has no such file
    found = _run([*compiler, "-print-file-name=libstdc++.a"], timeout=60).stdout.strip()
  except (OSError, subprocess.TimeoutExpired):
    found = ""
  return FLAGS + (STATIC_RUNTIME_FLAGS if os.path.isabs(found) and os.path.exists(found)
                  else ())


def _cpu_features() -> str:
  """What -march=native depends on: the machine and its CPU feature list."""
  features = ""
  try:
    with open("/proc/cpuinfo") as f:  # x86: "flags", aarch64: "Features"
      features = next((line for line in f if line.startswith(("flags", "Features"))), "")
  except OSError:
    pass
  return f"{platform.machine()} {platform.processor()} {features}"


def library_path(compiler: list[str], flags: tuple[str, ...]) -> pathlib.Path:
  """The cached library's path for this source, compiler, flags, jaxlib and CPU."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256()
  for part in (SOURCE.read_bytes(), " ".join(flags), " ".join(compiler),
               _compiler_version(compiler), jaxlib.__version__, _cpu_features()):
    digest.update(part if isinstance(part, bytes) else part.encode())
    digest.update(b"\0")
  return cache_dir() / f"triplet_sgd_cpu-{digest.hexdigest()[:16]}.so"


def _ffi():
  """`jax.ffi`, or a KernelBuildError naming the JAX version that has it."""
  ffi = getattr(jax, "ffi", None)
  if ffi is None or not hasattr(ffi, "include_dir"):
    raise KernelBuildError(f"the fused CPU step needs jax.ffi (JAX >= 0.4.38); this is JAX "
                           f"{jax.__version__}. Upgrade jax and jaxlib, or train without "
                           "--fused_cpu_step.")
  return ffi


def build() -> pathlib.Path:
  """Compiles the kernel unless a cached build exists; returns the library's path.

  Concurrent builds are safe: each compiles into its own temporary folder and renames the
  result into place (the same bytes, whichever lands last).

  Raises:
    KernelBuildError: no compiler, no FFI headers, an unwritable cache folder, or the
      compiler failed (its output is in the message). Nothing is left in the cache then.
  """
  compiler = _compiler()
  flags = _flags(compiler)
  target = library_path(compiler, flags)
  if target.exists():
    return target
  include = pathlib.Path(_ffi().include_dir())
  if not (include / "xla" / "ffi" / "api" / "ffi.h").exists():
    raise KernelBuildError(f"jaxlib ships no XLA FFI headers at {include}; the fused CPU step "
                           "needs a jaxlib that does (>= 0.4.38).")
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
      partial = pathlib.Path(tmp) / target.name
      command = [*compiler, *flags, f"-I{include}", str(SOURCE), "-o", str(partial)]
      try:
        result = _run(command, BUILD_TIMEOUT_S)
      except subprocess.TimeoutExpired as e:
        raise KernelBuildError(f"compiling {SOURCE} took over {BUILD_TIMEOUT_S} s "
                               f"({' '.join(command)}).") from e
      if result.returncode != 0:
        raise KernelBuildError(f"compiling {SOURCE} failed ({' '.join(command)}):\n"
                               f"{result.stderr[-4000:]}")
      os.replace(partial, target)
  except OSError as e:
    raise KernelBuildError(f"cannot write the compiled kernel to {target.parent} ({e}); set "
                           "$TRIPJAX_CACHE_DIR to a writable folder.") from e
  return target


@functools.cache
def register() -> None:
  """Builds, loads and registers the kernel with XLA:CPU (once per process).

  Raises:
    KernelBuildError: the kernel cannot be built or loaded (the message says why).
  """
  path = build()
  try:
    library = ctypes.cdll.LoadLibrary(str(path))
  except OSError as e:
    raise KernelBuildError(
        f"loading the fused CPU kernel {path} failed: {e}. Delete that file to rebuild it, or, "
        "if its folder is mounted noexec, point $TRIPJAX_CACHE_DIR elsewhere.") from e
  _ffi().register_ffi_target(TARGET_NAME, _ffi().pycapsule(library.TripletSgdUpdate),
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
  register()
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
