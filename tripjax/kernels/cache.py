"""The verified on-disk cache of compiled kernels, and their safe loading.

Libraries live under `$TRIPJAX_CACHE_DIR/kernels` (default `~/.cache/tripjax/kernels`), each
written atomically with its SHA-256 beside it. Only a library this user's build wrote is used:
a cache folder or library that is a symlink, another user's, or writable by group or others is
refused (`UnsafeKernelCache`), and one whose bytes differ from the recorded hash (truncated, say)
counts as absent, to be rebuilt. A library is loaded through its checked folder's descriptor,
after a last check that it is still the file hashed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import pathlib
import stat
from typing import Iterator

from tripjax import files
from tripjax.kernels import errors

HASH_SUFFIX = ".sha256"
_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def cache_dir() -> pathlib.Path:
  """Where compiled kernels are kept: `$TRIPJAX_CACHE_DIR/kernels`, else `~/.cache/tripjax/kernels`.

  A folder of their own, since `$TRIPJAX_CACHE_DIR` also holds the datasets and may be shared.
  """
  root = os.environ.get("TRIPJAX_CACHE_DIR")
  return (pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "tripjax") / "kernels"


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
    raise errors.UnsafeKernelCache(
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
    raise errors.KernelBuildError(
        f"cannot write the compiled kernel to {_printable(folder)} ({e}); set "
        "$TRIPJAX_CACHE_DIR to a writable folder.") from e
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
    raise errors.KernelBuildError(f"cannot read the cached kernel {_printable(path)} ({e}); "
                                  "remove it to rebuild it.") from e
  try:
    _refuse_unsafe(path, os.fstat(fd), folder=False)
  except errors.UnsafeKernelCache:
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


@contextlib.contextmanager
def build_lock(folder: pathlib.Path) -> Iterator[None]:
  """Holds an exclusive lock on the (checked) cache folder while a build runs, so that
  processes starting together compile once: the others wait, then find the build cached.

  An flock on the folder's own descriptor: no file is added, and a holder that dies releases it.
  """
  with _checked_folder(folder) as folder_fd:
    fcntl.flock(folder_fd, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(folder_fd, fcntl.LOCK_UN)


def is_verified(path: pathlib.Path) -> bool:
  """Whether the cache holds a usable build at `path` (creating its folder if missing).

  Usable: it and its folder are this user's, writable by no one else, no symlinks, and its
  bytes match the SHA-256 recorded at its build.

  Raises:
    UnsafeKernelCache: the cache folder or library may be another account's.
    KernelBuildError: the folder cannot be created or opened, or the library cannot be read.
  """
  with _checked_folder(path.parent) as folder_fd:
    fd = _open_verified(folder_fd, path)
  if fd is None:
    return False
  os.close(fd)
  return True


def install(partial: pathlib.Path, target: pathlib.Path) -> None:
  """Makes `partial` private, syncs it, renames it to `target`, then records its SHA-256.

  Until the hash lands, `target` and its record differ, which readers take for "rebuild".

  Raises:
    OSError: from the file system.
  """
  os.chmod(partial, 0o700)  # whatever the umask: a group-writable library would be refused
  fd = os.open(partial, _NO_FOLLOW)
  try:
    os.fsync(fd)
    digest = _sha256(fd)
  finally:
    os.close(fd)
  os.replace(partial, target)
  files.write_atomic(target.with_name(target.name + HASH_SUFFIX), f"{digest}\n", mode=0o600)


def _load_library(path: str) -> ctypes.CDLL:
  """dlopen()s the shared library at `path` (its constructors run)."""
  return ctypes.CDLL(path)


def _path_through(folder_fd: int, path: pathlib.Path) -> str:
  """`path` reached through the open, checked folder (so its parents cannot be swapped)."""
  through = f"/proc/self/fd/{folder_fd}"
  return f"{through}/{path.name}" if os.path.isdir(through) else str(path)


def load_verified(path: pathlib.Path) -> ctypes.CDLL | None:
  """Loads the cached library `path` if, right before loading, it passes `is_verified`'s checks.

  It is loaded through the checked folder's descriptor, and only if the file at `path` is still
  the one hashed.

  Returns:
    The library, or None when `path` is not (or no longer) a verified build, e.g. a concurrent
    rebuild replaced it: build it again and retry.

  Raises:
    UnsafeKernelCache: the cache folder or library may be another account's.
    KernelBuildError: the library cannot be loaded (the message says why).
  """
  with _checked_folder(path.parent) as folder_fd:
    fd = _open_verified(folder_fd, path)
    if fd is None:
      return None
    try:
      hashed = os.fstat(fd)
      named = os.stat(path.name, dir_fd=folder_fd, follow_symlinks=False)
      if (named.st_dev, named.st_ino) != (hashed.st_dev, hashed.st_ino):
        return None
      return _load_library(_path_through(folder_fd, path))
    except OSError as e:
      raise errors.KernelBuildError(
          f"loading the CPU kernels {path} failed: {e}. Delete that file to rebuild it, "
          "or, if its folder is mounted noexec, point $TRIPJAX_CACHE_DIR elsewhere.") from e
    finally:
      os.close(fd)
