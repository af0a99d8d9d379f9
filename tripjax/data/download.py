"""Verified, atomic download and extraction of zip archives into a cache folder.

`fetch_archive` streams an archive into a temporary file beside its destination, checks its
length and MD5, renames it, extracts it into a temporary folder and renames the folder's entries
into place. Whatever goes wrong (no network, an HTTP error, a dropped connection, a checksum
mismatch, a broken zip, an archive without the expected files), it removes what it wrote and
raises `DownloadError`: the cache never holds a partial file or folder.

A process killed outright (`kill -9`, a power cut) cannot clean up: its temporary file
`.<archive>.<pid>-<host>-<random>.part` or folder `.extract-<pid>-<host>-<random>` stays behind.
The next `fetch_archive` into the same folder removes such leftovers when their process is gone
(checked on the same host only) or when they have not changed for `STALE_SECONDS`, and so those
of older versions (`.<archive>.<random>.part`, `.extract-<random>`), which name no process. It
never touches another name, nor the temporaries of a download that is still running.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import re
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from typing import Iterable, Sequence

import tqdm

from tripjax import errors

_CHUNK_BYTES = 1 << 20
_MAX_MD5_FILE_BYTES = 4096
_MD5_RE = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{32}(?![0-9a-fA-F])")

# A temporary untouched this long belongs to no running download: a live one writes its .part
# file at least once per read timeout, and extracts right after creating its folder.
STALE_SECONDS = 3600.0
_RANDOM = r"[a-z0-9_]{8}"  # what `tempfile` appends to a prefix
_OWNED_RE = re.compile(
    rf"\..+\.([0-9]+)-([A-Za-z0-9-]*)-{_RANDOM}\.part|\.extract-([0-9]+)-([A-Za-z0-9-]*)-{_RANDOM}")
_UNOWNED_RE = re.compile(rf"\..+\.{_RANDOM}\.part|\.extract-{_RANDOM}")


class DownloadError(errors.TripjaxError, OSError):
  """A download or extraction failed; nothing it wrote was left behind."""


class ChecksumError(DownloadError):
  """A downloaded file's MD5 differs from the expected one."""


def parse_md5(text: str, source: str = "MD5 file") -> str:
  """Returns the one MD5 digest in a checksum file's text, lower-case.

  Accepts GroupLens' BSD style (`MD5 (ml-100k.zip) = <hex>`), coreutils style
  (`<hex>  ml-100k.zip`) and a bare digest.

  Raises:
    DownloadError: `text` holds no 32-hex-digit digest, or several different ones.
  """
  digests = {m.lower() for m in _MD5_RE.findall(text)}
  if len(digests) != 1:
    found = "no MD5 digest" if not digests else f"{len(digests)} different MD5 digests"
    raise DownloadError(f"{source}: expected one MD5 digest, found {found} in {text[:200]!r}")
  return digests.pop()


def file_md5(path: str | os.PathLike) -> str:
  """Returns the hex MD5 of a file, read in chunks."""
  digest = hashlib.md5()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _reason(err: BaseException) -> str:
  """A short human reason for a network error."""
  if isinstance(err, urllib.error.HTTPError):
    return f"HTTP {err.code} {err.reason}"
  if isinstance(err, urllib.error.URLError):
    return f"cannot connect ({err.reason})"
  if isinstance(err, TimeoutError):
    return "timed out"
  return f"{type(err).__name__}: {err}"


def fetch_text(url: str, timeout: float = 60.0, max_bytes: int = _MAX_MD5_FILE_BYTES) -> str:
  """Returns a small text resource (such as an `.md5` file) at `url`.

  Raises:
    DownloadError: naming the URL and the reason.
  """
  try:
    with urllib.request.urlopen(url, timeout=timeout) as response:
      return response.read(max_bytes).decode("utf-8", errors="replace")
  except (OSError, http.client.HTTPException) as err:
    raise DownloadError(f"could not download {url}: {_reason(err)}") from err


def _stream(url: str, out, timeout: float, progress: bool | None) -> str:
  """Copies `url` into the open binary file `out`; returns the MD5 of what was written.

  Raises:
    DownloadError: the request failed or the connection ended before Content-Length bytes.
  """
  digest = hashlib.md5()
  received = 0
  try:
    with urllib.request.urlopen(url, timeout=timeout) as response:
      length = response.headers.get("Content-Length")
      expected = int(length) if length and length.isdigit() else None
      name = url.rsplit("/", 1)[-1]
      # disable=None lets tqdm hide the bar when stderr is not a terminal.
      with tqdm.tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                     disable=None if progress is None else not progress, leave=False) as bar:
        for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
          out.write(chunk)
          digest.update(chunk)
          received += len(chunk)
          bar.update(len(chunk))
  except (OSError, http.client.HTTPException) as err:
    raise DownloadError(f"could not download {url}: {_reason(err)} after {received} bytes") from err
  # http.client returns a short body without complaint when the peer closes early.
  if expected is not None and received != expected:
    raise DownloadError(f"could not download {url}: connection closed after {received} of "
                        f"{expected} bytes")
  return digest.hexdigest()


def _remove(path: pathlib.Path) -> None:
  """Removes a file or folder if present, ignoring a concurrent removal."""
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path, ignore_errors=True)
  else:
    path.unlink(missing_ok=True)


def _host() -> str:
  return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]


def _owner_tag() -> str:
  """`<pid>-<host>`, put in temporary names so that a later run can tell whether they are live."""
  return f"{os.getpid()}-{_host()}"


def _pid_alive(pid: int) -> bool:
  """Whether process `pid` runs on this machine (True when that cannot be told)."""
  if os.name != "posix":
    return True
  try:
    os.kill(pid, 0)
  except (ProcessLookupError, OverflowError):
    return False
  except PermissionError:
    return True
  return True


def _is_leftover(entry: pathlib.Path, now: float) -> bool:
  """Whether `entry` is a temporary of this module that no running download uses."""
  owned = _OWNED_RE.fullmatch(entry.name)
  if owned is None and _UNOWNED_RE.fullmatch(entry.name) is None:
    return False
  if owned is not None:
    pid, host = (owned[1], owned[2]) if owned[1] else (owned[3], owned[4])
    if host == _host() and not _pid_alive(int(pid)):
      return True
  try:
    return now - entry.lstat().st_mtime > STALE_SECONDS
  except OSError:
    return False


def remove_leftovers(folder: str | os.PathLike) -> list[pathlib.Path]:
  """Removes the temporaries that killed downloads left in `folder` (see the module docstring).

  Returns:
    The removed paths.
  """
  folder = pathlib.Path(folder)
  try:
    entries = sorted(folder.iterdir())
  except OSError:
    return []
  now = time.time()
  removed = [entry for entry in entries if _is_leftover(entry, now)]
  for entry in removed:
    _remove(entry)
  return removed


def download_file(url: str, dest: str | os.PathLike, md5: str, *, timeout: float = 60.0,
                  progress: bool | None = None) -> pathlib.Path:
  """Downloads `url` to `dest` through a temporary file, renamed only once its MD5 matches.

  Args:
    url: what to download.
    dest: final path; its folder must exist.
    md5: expected hex MD5 of the whole file.
    timeout: seconds allowed for connecting and for each read.
    progress: show a tqdm bar (None: only when stderr is a terminal).

  Returns:
    `dest` as a Path.

  Raises:
    DownloadError: the request failed or was cut short (no file is left behind).
    ChecksumError: the MD5 differs (no file is left behind).
  """
  dest = pathlib.Path(dest)
  try:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.{_owner_tag()}-", suffix=".part",
                                    dir=dest.parent)
  except OSError as err:
    raise DownloadError(f"cannot write the download of {url} in {dest.parent} ({err})") from err
  tmp = pathlib.Path(tmp_name)
  try:
    with os.fdopen(fd, "wb") as out:
      actual = _stream(url, out, timeout, progress)
    if actual != md5.lower():
      raise ChecksumError(f"MD5 mismatch for {url}: expected {md5.lower()}, got {actual}")
    os.replace(tmp, dest)
  finally:
    _remove(tmp)
  return dest


def _check_members(archive: zipfile.ZipFile, source: str) -> None:
  """Rejects entries that would land outside the extraction folder."""
  for member in archive.namelist():
    parts = pathlib.PurePosixPath(member.replace("\\", "/")).parts
    if member.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
      raise DownloadError(f"{source}: unsafe path in archive: {member!r}")


def extract_zip(archive_path: str | os.PathLike, dest_dir: str | os.PathLike,
                required: Sequence[str] = (), source: str | None = None) -> list[pathlib.Path]:
  """Extracts a zip into `dest_dir` atomically, entry by top-level entry.

  The archive is extracted into a temporary folder inside `dest_dir`, checked for the
  `required` files, and each top-level entry is then renamed into `dest_dir`.

  Args:
    archive_path: the zip file.
    dest_dir: the folder to extract into (must exist).
    required: paths relative to `dest_dir` (with `/`) that the archive must provide.
    source: name used in error messages (default: the archive path).

  Returns:
    The top-level paths created in `dest_dir`.

  Raises:
    DownloadError: the zip is broken or unsafe, lacks a required file, or an entry already exists
      in `dest_dir` with other content. The temporary folder is removed in every case.
  """
  dest_dir = pathlib.Path(dest_dir)
  source = source or str(archive_path)
  try:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".extract-{_owner_tag()}-", dir=dest_dir))
  except OSError as err:
    raise DownloadError(f"{source}: cannot extract in {dest_dir} ({err})") from err
  try:
    try:
      with zipfile.ZipFile(archive_path) as archive:
        _check_members(archive, source)
        bad = archive.testzip()
        if bad is not None:
          raise DownloadError(f"{source}: corrupt archive member {bad!r}")
        archive.extractall(tmp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as err:
      raise DownloadError(f"{source}: broken zip archive ({err})") from err
    missing = [r for r in required if not (tmp / r).is_file()]
    if missing:
      raise DownloadError(f"{source}: archive lacks {', '.join(missing)}")
    created = []
    for entry in sorted(tmp.iterdir()):
      target = dest_dir / entry.name
      try:
        os.replace(entry, target)
      except OSError as err:
        # Another process may have just put the same release in place.
        if all((dest_dir / r).is_file() for r in required if r.split("/")[0] == entry.name):
          continue
        raise DownloadError(f"{source}: cannot move {entry.name} into {dest_dir} ({err}); "
                            f"remove {target} and try again") from err
      created.append(target)
    return created
  finally:
    _remove(tmp)


def fetch_archive(url: str, dest_dir: str | os.PathLike, *, md5: str | None = None,
                  md5_url: str | None = None, required: Iterable[str] = (),
                  timeout: float = 60.0, progress: bool | None = None,
                  keep_archive: bool = False) -> list[pathlib.Path]:
  """Downloads a zip archive, verifies its MD5 and extracts it atomically into `dest_dir`.

  Args:
    url: the archive's URL.
    dest_dir: cache folder to extract into (created if needed).
    md5: the expected hex MD5; when None it is read from `md5_url`.
    md5_url: URL of a checksum file (default `url + ".md5"`), used when `md5` is None.
    required: paths relative to `dest_dir` that the archive must provide.
    timeout: seconds allowed for connecting and for each read.
    progress: show a tqdm bar (None: only when stderr is a terminal).
    keep_archive: keep the verified zip in `dest_dir` after extraction. A zip already in
      `dest_dir` under the archive's name is reused when its MD5 matches.

  Returns:
    The top-level paths created in `dest_dir`.

  Raises:
    DownloadError: naming the URL and the reason; `dest_dir` is left as it was, but for the
      leftovers of killed downloads, which are removed first (see `remove_leftovers`).
    ChecksumError: the archive's MD5 differs from the expected one.
  """
  dest_dir = pathlib.Path(dest_dir)
  try:
    dest_dir.mkdir(parents=True, exist_ok=True)
  except OSError as err:
    raise DownloadError(f"cannot create {dest_dir} for the download of {url} ({err})") from err
  remove_leftovers(dest_dir)
  required = tuple(required)
  if md5 is None:
    md5_url = md5_url or url + ".md5"
    md5 = parse_md5(fetch_text(md5_url, timeout), source=md5_url)
  archive = dest_dir / url.rsplit("/", 1)[-1]
  if archive.exists() and file_md5(archive) != md5.lower():
    raise DownloadError(f"{archive} is in the way of the download of {url} and its MD5 is not "
                        f"{md5.lower()}; remove it")
  success = False
  try:
    if not archive.exists():
      download_file(url, archive, md5, timeout=timeout, progress=progress)
    created = extract_zip(archive, dest_dir, required, source=url)
    success = True
    return created
  finally:
    if not (success and keep_archive):
      _remove(archive)
