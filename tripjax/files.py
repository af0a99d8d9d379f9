"""Atomic file writes: a reader sees the old file or the complete new one, never a part of it.

The data goes to a temporary file in the destination's folder (same file system), is flushed
and fsynced, and then `os.replace`s the destination in one step. A failed or interrupted write
removes its temporary file and leaves the destination as it was.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Mapping

from tripjax import errors


def _umask() -> int:
  """The process umask, read without changing it (os.umask would, for every thread)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  return 0o022


def write_atomic(path: str | os.PathLike, data: str | bytes,
                 mode: int | None = None) -> pathlib.Path:
  """Writes `data` to `path` atomically, creating the parent folder if needed.

  Args:
    path: the destination file.
    data: text (written as UTF-8) or bytes.
    mode: the file's permission bits; None: as `open` would create it (0o666 less the umask).

  Returns:
    `path` as a Path.

  Raises:
    TypeError: `data` is neither str nor bytes (nothing is written).
  """
  if isinstance(data, str):
    data = data.encode("utf-8")
  elif not isinstance(data, (bytes, bytearray, memoryview)):
    raise TypeError(f"write_atomic({os.fspath(path)!r}): data must be str or bytes, got "
                    f"{type(data).__name__}.")
  path = pathlib.Path(path)
  try:
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  except OSError as e:
    raise _naming(e, path) from e
  try:
    os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)  # not mkstemp's 0600
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    if isinstance(e, OSError):
      raise _naming(e, path) from e
    raise
  return path


def check_writable(path: str | os.PathLike) -> None:
  """Raises the OSError that writing `path` would meet, before anything is computed or written.

  Checks what can be known without writing: `path` is not a folder, and its nearest existing
  ancestor is a folder the process may write into (missing folders below it are created by
  `write_atomic`).

  Raises:
    IsADirectoryError, NotADirectoryError, PermissionError: naming `path`.
  """
  path = pathlib.Path(path)
  if not path.name or path.is_dir():
    raise IsADirectoryError(21, "Is a directory", os.fspath(path))
  parent = path.parent
  while not parent.exists() and parent != parent.parent:
    parent = parent.parent
  if not parent.is_dir():
    raise NotADirectoryError(20, f"Not a directory ({os.fspath(parent)})", os.fspath(path))
  if not os.access(parent, os.W_OK | os.X_OK):
    raise PermissionError(13, f"Permission denied ({os.fspath(parent)})", os.fspath(path))


def check_outputs(outputs: Mapping[str, str],
                  inputs: Mapping[str, str | None] | None = None) -> None:
  """Refuses, before a long run, output paths it could not write at its end.

  Args:
    outputs: flag name -> path of each output the run writes (e.g. {"compare_json": ...}).
    inputs: what names each input (e.g. "the --base_flagfile") -> its path, None when not
      given: an output naming one would overwrite it.

  Raises:
    errors.InvalidInput: an output names an input or another output, or is a folder, lies under
      a file or in a folder the process cannot write; the message names the flag.
  """
  taken = {os.path.realpath(path): (what, False) for what, path in (inputs or {}).items()
           if path}
  for flag, path in outputs.items():
    key = os.path.realpath(path)
    if key in taken:
      what, is_output = taken[key]
      if is_output:
        raise errors.InvalidInput(f"--{what} and --{flag} both name {path}; give each output "
                                  "its own file.")
      raise errors.InvalidInput(f"--{flag}={path} would overwrite {what}; name another file.")
    taken[key] = (flag, True)
    try:
      check_writable(path)
    except OSError as e:
      raise errors.InvalidInput(f"--{flag}={path}: {e.strerror}; name a file in a folder you "
                                "can write.") from e


def _naming(err: OSError, path: pathlib.Path) -> OSError:
  """`err` naming the destination `path` instead of a temporary file."""
  if err.filename == os.fspath(path):
    return err
  return type(err)(err.errno, err.strerror or str(err), os.fspath(path))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> pathlib.Path:
  """Writes `obj` as JSON (and a final newline) to `path` atomically (see `write_atomic`).

  Raises:
    TypeError: `obj` is not JSON-serialisable (nothing is written).
  """
  return write_atomic(path, json.dumps(obj, indent=indent) + "\n")
