"""A fused CPU kernel for the triplet step with `sparse_sgd` (XLA custom call through `jax.ffi`).

On CPU, XLA runs the row-sparse step as a chain of passes over [B, D] arrays (gathers, five
row reductions, the gradient, scatter-adds) on one core. `csrc/triplet_sgd_cpu.cc` does the
same arithmetic in two passes, the first spread over XLA's intra-op threads, and updates the
tables in place (they are aliased to the outputs, so a donated state is not copied).

The kernel is compiled from source on first use with the machine's C++ compiler (`$CXX`, else
`c++`), against the XLA FFI headers that jaxlib ships, with `-march=native`; the library is
cached under `$TRIPJAX_CACHE_DIR/kernels` (default `~/.cache/tripjax/kernels`) by a digest of the
source, the flags, the compiler, jaxlib's version and the CPU's features, and written atomically
with its SHA-256 beside it. Only a library this user's build wrote is loaded: a cache folder or
library that is a symlink, another user's, or writable by group or others is refused
(`UnsafeKernelCache`), and one whose bytes differ from the recorded hash (truncated, say) is
rebuilt.

    user, item, loss = triplet_sgd_update(user_table, item_table, users, pos, neg,
                                          cotangent, learning_rate, margin=0.5, l2=0.0)

equals, up to float rounding, the XLA step: `losses.triplet_cosine_loss` (plus l2), its
hand-written VJP scaled by `cotangent`, then `sparse_optim.sparse_sgd`'s scatter-adds.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from tripjax import errors

SOURCE = pathlib.Path(__file__).parent / "csrc" / "triplet_sgd_cpu.cc"
TARGET_NAME = "tripjax_triplet_sgd_update"
# -w: XLA's FFI headers warn under g++ 12 (their code, not ours; the kernel builds clean).
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-w")
# Where the compiler has a static libstdc++, it is linked in and kept private, so the kernel
# never binds to an older libstdc++ the process may have loaded first (conda's, say).
STATIC_RUNTIME_FLAGS = ("-static-libstdc++", "-static-libgcc", "-Wl,--exclude-libs,ALL")
BUILD_TIMEOUT_S = 300
HASH_SUFFIX = ".sha256"
_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Unavailable(errors.TripjaxError, RuntimeError):
  """The fused CPU step cannot run in this process (the message says why and what to do)."""


class KernelBuildError(Unavailable):
  """The fused CPU kernel could not be compiled or loaded (the message says why and how)."""


class UnsafeKernelCache(Unavailable):
  """The kernel cache holds a folder or library this user's build may not have written.

  Nothing from it is loaded; the one-line message names the path, the reason and what to do.
  """


def cache_dir() -> pathlib.Path:
  """Where compiled kernels are kept: `$TRIPJAX_CACHE_DIR/kernels`, else `~/.cache/tripjax/kernels`.

  A folder of their own, since `$TRIPJAX_CACHE_DIR` also holds the datasets and may be shared.
  """
  root = os.environ.get("TRIPJAX_CACHE_DIR")
  return (pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "tripjax") / "kernels"


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


def _printable(path: os.PathLike | str) -> str:
  """`path` with any line break or other unprintable character escaped (messages are one line)."""
  return "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                 for c in os.fspath(path))


def _unsafe_reason(info: os.stat_result, folder: bool) -> str | None:
  """Why a cache entry with this (l)stat may hold another account's code; None if it cannot."""
  if stat.S_ISLNK(info.st_mode):
    return "it is a symlink"
  if not (stat.S_ISDIR if folder else stat.S_ISREG)(info.st_mode):
    return "it is not a folder" if folder else "it is not a regular file"
  if info.st_uid != os.geteuid():
    return f"it is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
  if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
    return f"it is writable by group or others ({stat.filemode(info.st_mode)})"
  return None


def _refuse_unsafe(path: pathlib.Path, info: os.stat_result, folder: bool) -> None:
  """Raises UnsafeKernelCache when `_unsafe_reason` finds one."""
  reason = _unsafe_reason(info, folder)
  if reason is not None:
    raise UnsafeKernelCache(
        f"refusing the kernel cache {'folder' if folder else 'file'} {_printable(path)}: "
        f"{reason}, so this user's build may not have written it; remove it, or set "
        "TRIPJAX_CACHE_DIR to a folder only you can write.")


def _make_folders(folder: pathlib.Path) -> None:
  """Creates `folder` and its missing parents, each with mode 0o700."""
  missing = []
  for path in (folder, *folder.parents):
    if os.path.lexists(path):
      break
    missing.append(path)
  for path in reversed(missing):
    with contextlib.suppress(FileExistsError):
      os.mkdir(path, 0o700)


@contextlib.contextmanager
def _checked_folder(folder: pathlib.Path) -> Iterator[int]:
  """Creates `folder` if missing and yields a descriptor of it, checked as `_unsafe_reason` does.

  Raises:
    UnsafeKernelCache: the folder is a symlink, another user's, or writable by group or others.
    KernelBuildError: it cannot be created or opened.
  """
  try:
    _make_folders(folder)
    _refuse_unsafe(folder, os.lstat(folder), folder=True)
    fd = os.open(folder, _NO_FOLLOW | os.O_DIRECTORY)
  except OSError as e:
    raise KernelBuildError(f"cannot write the compiled kernel to {_printable(folder)} ({e}); "
                           "set $TRIPJAX_CACHE_DIR to a writable folder.") from e
  try:
    _refuse_unsafe(folder, os.fstat(fd), folder=True)  # the folder opened is one we may trust
    yield fd
  finally:
    os.close(fd)


def _open_checked(folder_fd: int, path: pathlib.Path) -> int | None:
  """A read descriptor of `path` (in the folder `folder_fd`), checked; None if there is none.

  Raises:
    UnsafeKernelCache: the file is a symlink, not a regular file, another user's, or writable
      by group or others.
    KernelBuildError: it cannot be opened.
  """
  try:
    _refuse_unsafe(path, os.stat(path.name, dir_fd=folder_fd, follow_symlinks=False),
                   folder=False)
    fd = os.open(path.name, _NO_FOLLOW, dir_fd=folder_fd)
  except FileNotFoundError:
    return None
  except OSError as e:
    raise KernelBuildError(f"cannot read the cached kernel {_printable(path)} ({e}); remove "
                           "it to rebuild it.") from e
  try:
    _refuse_unsafe(path, os.fstat(fd), folder=False)
  except UnsafeKernelCache:
    os.close(fd)
    raise
  return fd


def _sha256(fd: int) -> str:
  """The SHA-256 (hex) of the whole file open at `fd`."""
  digest, offset = hashlib.sha256(), 0
  while chunk := os.pread(fd, 1 << 20, offset):
    digest.update(chunk)
    offset += len(chunk)
  return digest.hexdigest()


def _recorded_sha256(folder_fd: int, name: str) -> str | None:
  """The SHA-256 recorded beside library `name` at its build; None if there is none to read."""
  try:
    fd = os.open(name + HASH_SUFFIX, _NO_FOLLOW, dir_fd=folder_fd)
  except OSError:
    return None
  with os.fdopen(fd, "rb") as f:
    return f.read(128).decode("ascii", "replace").strip() or None


def _open_verified(folder_fd: int, path: pathlib.Path) -> int | None:
  """A descriptor of the cached library `path` if it is safe and matches its recorded SHA-256.

  Returns:
    The descriptor, or None when the library must be built: absent, no hash recorded, or
    different bytes (a truncated file, say).

  Raises:
    UnsafeKernelCache: as `_open_checked`.
  """
  fd = _open_checked(folder_fd, path)
  if fd is not None and _sha256(fd) != _recorded_sha256(folder_fd, path.name):
    os.close(fd)
    fd = None
  return fd


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
  """Writes `path` as a temporary file in its folder, synced to disk, then renamed over it."""
  fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(partial, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(partial)
    raise


def _install(partial: pathlib.Path, target: pathlib.Path) -> None:
  """Makes `partial` private, syncs it, renames it to `target`, then records its SHA-256.

  Until the hash lands, `target` and its record differ, which readers take for "rebuild".
  """
  os.chmod(partial, 0o700)  # whatever the umask: a group-writable library would be refused
  fd = os.open(partial, _NO_FOLLOW)
  try:
    os.fsync(fd)
    digest = _sha256(fd)
  finally:
    os.close(fd)
  os.replace(partial, target)
  _write_atomically(target.with_name(target.name + HASH_SUFFIX), f"{digest}\n".encode())


def build() -> pathlib.Path:
  """Compiles the kernel unless a verified build is cached; returns the library's path.

  A cached library is used when it and its folder are this user's, writable by no one else,
  no symlinks, and its bytes match the SHA-256 recorded at its build; otherwise it is rebuilt.
  Concurrent builds are safe: each compiles into its own temporary folder and renames the
  result into place (the same bytes, whichever lands last), then records the hash.

  Raises:
    UnsafeKernelCache: the cache folder or library may be another account's (see above).
    KernelBuildError: no compiler, no FFI headers, an unwritable cache folder, or the
      compiler failed (its output is in the message). Nothing is left in the cache then.
  """
  compiler = _compiler()
  flags = _flags(compiler)
  target = library_path(compiler, flags)
  with _checked_folder(target.parent) as folder_fd:
    cached = _open_verified(folder_fd, target)
  if cached is not None:
    os.close(cached)
    return target
  include = pathlib.Path(_ffi().include_dir())
  if not (include / "xla" / "ffi" / "api" / "ffi.h").exists():
    raise KernelBuildError(f"jaxlib ships no XLA FFI headers at {include}; the fused CPU step "
                           "needs a jaxlib that does (>= 0.4.38).")
  try:
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
      _install(partial, target)
  except OSError as e:
    raise KernelBuildError(f"cannot write the compiled kernel to {target.parent} ({e}); set "
                           "$TRIPJAX_CACHE_DIR to a writable folder.") from e
  return target


def _load_library(path: str) -> ctypes.CDLL:
  """dlopen()s the shared library at `path` (its constructors run)."""
  return ctypes.CDLL(path)


def _path_through(folder_fd: int, path: pathlib.Path) -> str:
  """`path` reached through the open, checked folder (so its parents cannot be swapped)."""
  through = f"/proc/self/fd/{folder_fd}"
  return f"{through}/{path.name}" if os.path.isdir(through) else str(path)


def load() -> ctypes.CDLL:
  """Builds the kernel unless a verified build is cached, and loads the library checked.

  Right before loading, the library is checked again (`build`'s rules, the hash included) and
  found to be still the file hashed; it is loaded through the checked folder's descriptor.

  Raises:
    UnsafeKernelCache: the cache folder or library may be another account's.
    KernelBuildError: the kernel cannot be built or loaded (the message says why).
  """
  for _ in range(3):
    path = build()
    with _checked_folder(path.parent) as folder_fd:
      fd = _open_verified(folder_fd, path)
      if fd is None:
        continue  # replaced since build() checked it (a concurrent rebuild): check again
      try:
        hashed = os.fstat(fd)
        named = os.stat(path.name, dir_fd=folder_fd, follow_symlinks=False)
        if (named.st_dev, named.st_ino) != (hashed.st_dev, hashed.st_ino):
          continue
        return _load_library(_path_through(folder_fd, path))
      except OSError as e:
        raise KernelBuildError(
            f"loading the fused CPU kernel {path} failed: {e}. Delete that file to rebuild it, "
            "or, if its folder is mounted noexec, point $TRIPJAX_CACHE_DIR elsewhere.") from e
      finally:
        os.close(fd)
  raise KernelBuildError(f"the fused CPU kernel {path} kept changing between its check and its "
                         "loading (another process rebuilding it?); try again.")


@functools.cache
def register() -> None:
  """Builds, loads and registers the kernel with XLA:CPU (once per process).

  Raises:
    UnsafeKernelCache: the cache folder or library may be another account's.
    KernelBuildError: the kernel cannot be built or loaded (the message says why).
  """
  library = load()
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
