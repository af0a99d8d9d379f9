"""MovieLens loaders: every GroupLens release in its native layout, with verified download.

`load_movielens(name)` reads a release from `data_dir` when one is given, and fails when it is not
there; without `data_dir` it looks in `$TRIPJAX_DATA_DIR`, then the cache (`cache_dir`,
`$TRIPJAX_CACHE_DIR` or `~/.cache/tripjax`), downloads it into the cache when it is in neither,
and parses it into the two common frames:

- ratings: `user_id` int64, `item_id` int64, `rating` float32, `timestamp` int64, one row a rating.
- items: `item_id` int64, `title` str, `genres` list of str (empty when none is listed).

Ratings go through pandas' C parser (the `::` of the `.dat` files is first turned into a tab);
only when that fails is the file read again line by line to name the first bad line. Both read
one grammar: ids and timestamps are decimal integers (`196`, `+196`, ` 196`; never `196.0`, `1e2`
or `1_000`), ratings decimal numbers finite in float32; lines of blanks are skipped and a UTF-8
byte-order mark is ignored. Item ids follow the same grammar and must be unique.

Every expected failure is an `errors.DataError` (a ValueError) whose one-line message names the
file, and the line where there is one.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import os
import pathlib
import re
import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from tripjax import errors
from tripjax.data import download as download_lib

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"

ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western")
NO_GENRES = "(no genres listed)"

RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
_INT_COLUMNS = ("user_id", "item_id", "timestamp")
_CSV_RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
_CSV_MOVIES_HEADER = ("movieId", "title", "genres")

# layout -> (ratings file, items file)
LAYOUT_FILES = {
    "100k": ("u.data", "u.item"),
    "dat": ("ratings.dat", "movies.dat"),
    "csv": ("ratings.csv", "movies.csv"),
}
# layout -> the ratings file's separator, as written in the file
_RATINGS_SEPARATORS = {"100k": "\t", "dat": "::", "csv": ","}


class ReleaseNotFound(errors.DataError, FileNotFoundError):
  """A release is not where it was asked for (or anywhere, when it may not be downloaded)."""


@dataclasses.dataclass(frozen=True)
class MovieLensSpec:
  """A MovieLens release: where GroupLens publishes it and how it is laid out.

  Attributes:
    name: release name, also the archive's stem (`ml-1m` -> `ml-1m.zip`).
    folder: the folder the archive unpacks to (`ml-10M100K` for `ml-10m`).
    layout: `100k` (u.data, u.item), `dat` (`::`-separated ratings.dat, movies.dat) or `csv`
      (ratings.csv, movies.csv with a header and quoted titles).
    md5: the archive's MD5 as GroupLens publishes it, or None for the `latest` releases, which
      change over time and are checked against the `.md5` file published beside the archive.
    items_encodings: the encodings GroupLens ships the items file in, tried in order when the
      file is not valid UTF-8 (see `read_items`).
  """

  name: str
  folder: str
  layout: str
  md5: str | None
  items_encodings: tuple[str, ...]

  @property
  def url(self) -> str:
    return archive_url(self.name)

  @property
  def files(self) -> tuple[str, str]:
    return LAYOUT_FILES[self.layout]


# MD5s are those of GroupLens' `<name>.zip.md5` files, as pinned in several independent public
# dataset registries. The `latest` releases are re-published, so only their `.md5` file is used.
DATASETS = {spec.name: spec for spec in (
    MovieLensSpec("ml-100k", "ml-100k", "100k", "0e33842e24a9c977be4e0107933c0723",
                  ("latin-1",)),
    MovieLensSpec("ml-1m", "ml-1m", "dat", "c4d9eecfca2ab87c1945afe126590906", ("latin-1",)),
    MovieLensSpec("ml-10m", "ml-10M100K", "dat", "ce571fd55effeba0271552578f2648bd",
                  ("utf-8", "latin-1")),
    MovieLensSpec("ml-20m", "ml-20m", "csv", "cd245b17a1ae2cc31bb14903e1204af3", ("utf-8",)),
    MovieLensSpec("ml-25m", "ml-25m", "csv", "6b51fb2759a8657d3bfcbfc42b592ada", ("utf-8",)),
    MovieLensSpec("ml-latest-small", "ml-latest-small", "csv", None, ("utf-8",)),
    MovieLensSpec("ml-latest", "ml-latest", "csv", None, ("utf-8",)),
)}


def archive_url(name: str, base_url: str | None = None) -> str:
  """The archive URL of release `name` under `base_url` (default: `$TRIPJAX_MOVIELENS_URL`,
  then GroupLens)."""
  base = base_url or os.environ.get("TRIPJAX_MOVIELENS_URL") or DEFAULT_BASE_URL
  return f"{base.rstrip('/')}/{name}.zip"


def get_spec(name: str) -> MovieLensSpec:
  """Returns the spec of a release; an `errors.InvalidInput` lists the known names."""
  try:
    return DATASETS[name]
  except (KeyError, TypeError):
    raise errors.InvalidInput(
        f"unknown MovieLens dataset {name!r}; known: {', '.join(DATASETS)}") from None


def cache_root(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The download cache: `cache_dir`, else `$TRIPJAX_CACHE_DIR`, else `~/.cache/tripjax`."""
  path = cache_dir or os.environ.get("TRIPJAX_CACHE_DIR") or "~/.cache/tripjax"
  return pathlib.Path(path).expanduser()


def search_roots(data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> list[pathlib.Path]:
  """The folders searched for releases, in order: data_dir, $TRIPJAX_DATA_DIR, the cache."""
  roots = []
  for path in (data_dir, os.environ.get("TRIPJAX_DATA_DIR"), cache_root(cache_dir)):
    if path:
      path = pathlib.Path(path).expanduser()
      if path not in roots:
        roots.append(path)
  return roots


def find_release(spec: MovieLensSpec, roots: Sequence[pathlib.Path]) -> pathlib.Path | None:
  """The first `<root>/<folder>` (or `<root>/<name>`) holding both of the release's files."""
  for root in roots:
    for sub in dict.fromkeys((spec.folder, spec.name)):
      folder = root / sub
      if all((folder / f).is_file() for f in spec.files):
        return folder
  return None


def _given(data_dir: str | os.PathLike | None) -> bool:
  """Whether `data_dir` names a folder (None and "" leave the choice to the search)."""
  return data_dir is not None and os.fspath(data_dir) != ""


def _candidate_folder(spec: MovieLensSpec, data_dir: pathlib.Path) -> pathlib.Path:
  """Where the release's files should be under an existing folder `data_dir`."""
  for sub in dict.fromkeys((spec.folder, spec.name)):
    if (data_dir / sub).is_dir():
      return data_dir / sub
  if data_dir.name in (spec.folder, spec.name):
    return data_dir
  for other in DATASETS.values():
    if data_dir.name in (other.folder, other.name):
      raise ReleaseNotFound(
          f"data_dir {data_dir} is the folder of MovieLens {other.name}, not {spec.name}; pass "
          f"the folder that holds {spec.folder}/, or the {spec.folder} folder itself")
  if any((data_dir / f).exists() for f in spec.files):
    return data_dir
  return data_dir / spec.folder


def release_folder(spec: MovieLensSpec, data_dir: str | os.PathLike,
                   base_url: str | None = None) -> pathlib.Path:
  """The folder of a release under a folder the user named, which must hold it.

  Args:
    spec: the release.
    data_dir: the folder that holds `<folder>/` (or `<name>/`) of the release, or that folder
      itself (named after the release, or holding its files directly).
    base_url: where the archives are, for the message (see `archive_url`).

  Returns:
    The folder holding the release's files.

  Raises:
    ReleaseNotFound: `data_dir` does not exist, is not a folder, is the folder of another
      release, or lacks one of the release's files (the message names each missing file).
  """
  data_dir = pathlib.Path(data_dir).expanduser()
  url = archive_url(spec.name, base_url)
  instead = ("or leave data_dir unset to use $TRIPJAX_DATA_DIR or the download cache "
             "(downloading the release there)")
  if not data_dir.exists():
    raise ReleaseNotFound(f"data_dir {data_dir} does not exist; download {url} and unzip it "
                          f"there (it unpacks to {spec.folder}/), {instead}")
  if not data_dir.is_dir():
    raise ReleaseNotFound(f"data_dir {data_dir} is not a folder; pass the folder that holds "
                          f"{spec.folder}/ (or the {spec.folder} folder itself), {instead}")
  folder = _candidate_folder(spec, data_dir)
  missing = [str(folder / f) for f in spec.files if not (folder / f).is_file()]
  if missing:
    verb = "is" if len(missing) == 1 else "are"
    raise ReleaseNotFound(
        f"{' and '.join(missing)} {verb} missing: data_dir {data_dir} does not hold MovieLens "
        f"{spec.name}; download {url}, unzip it and put its files ({', '.join(spec.files)}) in "
        f"{folder}, {instead}")
  return folder


def _manual_hint(spec: MovieLensSpec, url: str, roots: Sequence[pathlib.Path]) -> str:
  places = " or ".join(str(r / spec.folder) for r in roots)
  return (f"To install it by hand, download {url}, unzip it and put its files "
          f"({', '.join(spec.files)}) in {places}.")


def load_movielens(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                   *, cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
                   timeout: float = 60.0,
                   progress: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
  """Loads a MovieLens release, downloading it into the cache when it is nowhere to be found.

  Args:
    name: one of `DATASETS` (`ml-100k`, `ml-1m`, `ml-10m`, `ml-20m`, `ml-25m`,
      `ml-latest-small`, `ml-latest`).
    data_dir: the folder holding `<folder>/` of the release (e.g. `data_dir/ml-1m/ratings.dat`)
      or that folder itself (`data_dir=/data/ml-1m`). When given, the release is read from there
      or not at all: it is never replaced by `$TRIPJAX_DATA_DIR`, the cache or a download. When
      None (or ""), `$TRIPJAX_DATA_DIR` then the cache are searched.
    download: download into the cache when the release is absent (unused with `data_dir`).
    cache_dir: the cache folder (default `$TRIPJAX_CACHE_DIR`, then `~/.cache/tripjax`).
    base_url: where the archives are (default `$TRIPJAX_MOVIELENS_URL`, then GroupLens).
    timeout: seconds allowed for connecting and for each read.
    progress: show a download progress bar (None: only when stderr is a terminal).

  Returns:
    (ratings, items): ratings has `user_id` int64[N], `item_id` int64[N], `rating`
    float32[N], `timestamp` int64[N]; items has `item_id` int64[I], `title` str[I], `genres`
    (a list of genre names per item, empty when none is listed).

  Raises:
    errors.InvalidInput: unknown name.
    ReleaseNotFound: `data_dir` does not hold the release (naming each missing file), or the
      release is nowhere to be found and `download` is False. Also a FileNotFoundError.
    errors.DataError: a malformed file, naming it and the line.
    download.DownloadError: the download failed; the message names the URL, the reason and
      where to put the files by hand.
  """
  spec = get_spec(name)
  if _given(data_dir):
    return read_release(release_folder(spec, data_dir, base_url), spec)
  roots = search_roots(None, cache_dir)
  folder = find_release(spec, roots)
  if folder is None:
    url = archive_url(spec.name, base_url)
    hint = _manual_hint(spec, url, roots)
    if not download:
      raise ReleaseNotFound(f"MovieLens {spec.name} not found (download=False). {hint}")
    cache = cache_root(cache_dir)
    # The known MD5 belongs to GroupLens' archive; elsewhere trust the .md5 published beside it
    # only when no MD5 is pinned.
    try:
      download_lib.fetch_archive(
          url, cache, md5=spec.md5, required=[f"{spec.folder}/{f}" for f in spec.files],
          timeout=timeout, progress=progress)
    except download_lib.DownloadError as err:
      raise type(err)(f"{err}. {hint}") from err
    folder = cache / spec.folder
  return read_release(folder, spec)


def read_release(folder: str | os.PathLike,
                 spec: MovieLensSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
  """Parses the ratings and items files of a release folder (see `load_movielens`)."""
  folder = pathlib.Path(folder)
  ratings_file, items_file = spec.files
  ratings = read_ratings(folder / ratings_file, spec.layout)
  items = read_items(folder / items_file, spec.layout, spec.items_encodings)
  return ratings, items


# ---------------------------------------------------------------------------------------------
# Ratings: C parser first, a line-by-line scan only to explain a failure.


def read_ratings(path: str | os.PathLike, layout: str) -> pd.DataFrame:
  """Parses a ratings file: `u.data` (tab), `ratings.dat` (`::`) or `ratings.csv` (header).

  Args:
    path: the file.
    layout: `100k`, `dat` or `csv` (see `MovieLensSpec`).

  Returns:
    DataFrame with `user_id` int64[N], `item_id` int64[N], `rating` float32[N],
    `timestamp` int64[N].

  Raises:
    errors.DataError: a malformed line (wrong field count, an id or timestamp that is not a
      decimal integer, a rating that is not a finite number), naming the file and the 1-based
      line number; a UTF-16 file; an empty file.
  """
  path = pathlib.Path(path)
  if layout == "100k":
    with open(path, "rb") as f:
      f.seek(_bom_length(path, f.read(4)))
      return _parse_ratings(f, path, layout)
  if layout == "dat":
    data = path.read_bytes()
    bom = _bom_length(path, data[:4])
    # No numeric field holds a ':', so '::' -> '\t' keeps every field and the line numbers.
    source = io.BytesIO(data.replace(b"::", b"\t"))
    del data
    source.seek(bom)
    return _parse_ratings(source, path, layout)
  if layout == "csv":
    _check_header(path, _CSV_RATINGS_HEADER)
    return _parse_ratings(path, path, layout)
  raise errors.InvalidInput(
      f"unknown MovieLens layout {layout!r}; known: {', '.join(LAYOUT_FILES)}")


def _bom_length(path: pathlib.Path, head: bytes) -> int:
  """The length of the UTF-8 byte-order mark `head` starts with (0 when none).

  Raises:
    errors.DataError: `head` starts with a UTF-16 (or UTF-32) byte-order mark.
  """
  if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
    raise errors.DataError(f"{path}: starts with a UTF-16 byte-order mark; MovieLens files are "
                           f"8-bit text: save it as UTF-8")
  return len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0


def _check_header(path: pathlib.Path, expected: Sequence[str]) -> None:
  with open(path, "rb") as f:
    _bom_length(path, f.read(4))
  with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
    header = next(csv.reader(f), [])
  if tuple(h.strip() for h in header) != tuple(expected):
    raise errors.DataError(f"{path}, line 1: expected the header {','.join(expected)!r}, "
                           f"got {','.join(header)[:200]!r}")


def _one_line(err: BaseException | None) -> str:
  return " ".join(str(err).split())


def _parse_ratings(source, path: pathlib.Path, layout: str) -> pd.DataFrame:
  """C-engine parse of a 4-column numeric table; on failure, names the first bad line."""
  header = layout == "csv"
  try:
    # The integer columns are inferred, not cast: a cast would take `196.0` or `1e2` for 196 or
    # 100, which the line checker rejects; inference yields int64 only when every field is one.
    # A rating beyond float32 becomes inf, reported below.
    with np.errstate(over="ignore"), warnings.catch_warnings():
      warnings.simplefilter("ignore", pd.errors.DtypeWarning)
      frame = pd.read_csv(
          source, sep="," if header else "\t", header=None, names=list(RATING_COLUMNS),
          dtype={"rating": np.float32}, skiprows=1 if header else 0, engine="c",
          quoting=csv.QUOTE_NONE, na_filter=False, encoding="latin-1")
  except (ValueError, OverflowError, TypeError) as err:
    _raise_bad_line(path, layout, err)
  if frame.empty:
    what = "nothing but its header" if header else "no line"
    raise errors.DataError(
        f"{path}: the ratings file is empty ({what}); expected one rating per line.")
  if (any(frame[c].dtype != np.int64 for c in _INT_COLUMNS)
      or not np.isfinite(frame["rating"].to_numpy()).all()):
    _raise_bad_line(path, layout, None)
  return frame  # columns and dtypes are already those of RATING_COLUMNS (no extra copy)


_INT64 = np.iinfo(np.int64)
# What pandas' C parser takes for a number: the blanks around it are those its converters skip.
_INT_RE = re.compile(r"[ \t\v\f]*([+-]?[0-9]+)[ \t\v\f]*")
_NUMBER_RE = re.compile(
    r"[ \t\v\f]*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)[ \t\v\f]*")


def _as_int(field: str) -> int:
  """The field as an int64 value: a decimal integer (OverflowError beyond the int64 range)."""
  match = _INT_RE.fullmatch(field)
  if match is None:
    raise ValueError("not a decimal integer")
  value = int(match[1])
  if not _INT64.min <= value <= _INT64.max:
    raise OverflowError("outside the int64 range")
  return value


def _as_finite_float(field: str) -> float:
  """The field as a rating: a decimal number, finite also once stored as float32."""
  match = _NUMBER_RE.fullmatch(field)
  if match is None:
    raise ValueError("not a decimal number")
  with np.errstate(over="ignore"):
    value = np.float32(float(match[1]))
  if not np.isfinite(value):
    raise ValueError("not finite")
  return float(value)


_RATING_CHECKS: tuple[Callable[[str], object], ...] = (_as_int, _as_int, _as_finite_float, _as_int)


def _bad_field(fields: Sequence[str], sep: str,
               checks: Sequence[Callable[[str], object]], names: Sequence[str]) -> str | None:
  """Why a line's fields are malformed, or None when they are fine."""
  if len(fields) != len(checks):
    return f"expected {len(checks)} fields separated by {sep!r}, found {len(fields)}"
  for field, check, name in zip(fields, checks, names):
    try:
      check(field)
    except OverflowError:
      return f"{name} {field!r} is outside the int64 range"
    except ValueError:
      kind = "an integer" if check is _as_int else "a finite number"
      return f"{name} {field!r} is not {kind}"
  return None


def _raise_bad_line(path: pathlib.Path, layout: str, err: BaseException | None):
  """Raises a DataError naming the first malformed line of a ratings file.

  The lines are those of the C parser: ended by `\\n`, `\\r\\n` or `\\r`; a line of spaces and
  tabs (other than the separator) is skipped; `::` reads as a tab.
  """
  sep = _RATINGS_SEPARATORS[layout]
  parse_sep = "\t" if sep == "::" else sep
  blanks = " \t".replace(parse_sep, "")
  bom = codecs.BOM_UTF8.decode("latin-1")
  with open(path, encoding="latin-1", newline="") as f:
    for lineno, raw in enumerate(f, start=1):
      line = raw.rstrip("\r\n")
      if lineno == 1:
        line = line.removeprefix(bom)
        if layout == "csv":
          continue
      parsed = line.replace("::", "\t") if sep == "::" else line
      if not parsed.strip(blanks):
        continue
      reason = _bad_field(parsed.split(parse_sep), sep, _RATING_CHECKS, RATING_COLUMNS)
      if reason:
        raise errors.DataError(f"{path}, line {lineno}: {reason}: {line[:200]!r}") from err
  raise errors.DataError(f"{path}: cannot parse the ratings ({_one_line(err)})") from err


# ---------------------------------------------------------------------------------------------
# Items: small files (at most ~90k lines), parsed line by line.


def _line_of(data: bytes, offset: int) -> int:
  return data.count(b"\n", 0, offset) + 1


def _decode(path: pathlib.Path, encodings: Sequence[str]) -> str:
  """The text of an items file: UTF-8 when it is valid UTF-8, else in the first of `encodings`
  that decodes it (see `read_items`)."""
  data = path.read_bytes()
  bom = _bom_length(path, data[:4])
  try:
    return data[bom:].decode("utf-8")
  except UnicodeDecodeError as err:
    offset = bom + err.start
  where = f"{path}, line {_line_of(data, offset)}: byte 0x{data[offset]:02x}"
  if bom:
    raise errors.DataError(f"{where} is not UTF-8, yet the file starts with a UTF-8 byte-order "
                           f"mark; save it all as UTF-8 (or as latin-1 without the mark)")
  for encoding in encodings:
    if codecs.lookup(encoding).name != "utf-8":
      try:
        return data.decode(encoding)
      except UnicodeDecodeError:
        pass
  raise errors.DataError(f"{where} is not valid {' or '.join(encodings)} text; save the file "
                         f"as UTF-8")


def _lines(text: str):
  """(1-based line number, line) of the non-blank lines; splits on '\\n' only (not on U+0085)."""
  for lineno, line in enumerate(text.split("\n"), start=1):
    line = line.rstrip("\r")
    if line.strip():
      yield lineno, line


def _item_id(path: pathlib.Path, lineno: int, field: str, line: str) -> int:
  try:
    return _as_int(field)
  except OverflowError:
    reason = "is outside the int64 range"
  except ValueError:
    reason = "is not an integer"
  raise errors.DataError(f"{path}, line {lineno}: item id {field!r} {reason}: {line[:200]!r}")


def _split_genres(field: str) -> list[str]:
  field = field.strip()
  if not field or field == NO_GENRES:
    return []
  return field.split("|")


def _read_u_item(path: pathlib.Path, text: str):
  width = 5 + len(ML_100K_GENRES)
  for lineno, line in _lines(text):
    fields = line.split("|")
    if len(fields) != width:
      raise errors.DataError(f"{path}, line {lineno}: expected {width} fields separated by '|', "
                             f"found {len(fields)}: {line[:200]!r}")
    flags = [f.strip() for f in fields[5:]]
    if any(f not in ("0", "1") for f in flags):
      raise errors.DataError(
          f"{path}, line {lineno}: genre flags must be 0 or 1: {line[:200]!r}")
    genres = [g for g, f in zip(ML_100K_GENRES, flags) if f == "1"]
    yield lineno, _item_id(path, lineno, fields[0], line), fields[1], genres


def _read_movies_dat(path: pathlib.Path, text: str):
  for lineno, line in _lines(text):
    fields = line.split("::")
    if len(fields) != 3:
      raise errors.DataError(f"{path}, line {lineno}: expected 3 fields separated by '::', "
                             f"found {len(fields)}: {line[:200]!r}")
    yield lineno, _item_id(path, lineno, fields[0], line), fields[1], _split_genres(fields[2])


def _read_movies_csv(path: pathlib.Path, text: str):
  reader = csv.reader(io.StringIO(text, newline=""))
  header = next(reader, [])
  if tuple(h.strip() for h in header) != _CSV_MOVIES_HEADER:
    raise errors.DataError(f"{path}, line 1: expected the header "
                           f"{','.join(_CSV_MOVIES_HEADER)!r}, got {','.join(header)[:200]!r}")
  for fields in reader:
    if not fields:
      continue
    lineno = reader.line_num
    if len(fields) != 3:
      raise errors.DataError(f"{path}, line {lineno}: expected 3 comma-separated fields, found "
                             f"{len(fields)}: {','.join(fields)[:200]!r}")
    yield (lineno, _item_id(path, lineno, fields[0], ",".join(fields)), fields[1],
           _split_genres(fields[2]))


_ITEM_READERS = {"100k": _read_u_item, "dat": _read_movies_dat, "csv": _read_movies_csv}


def _check_unique_ids(path: pathlib.Path, rows) -> None:
  """Rejects an item id listed twice, naming both lines."""
  first_line = {}
  for lineno, item_id, *_ in rows:
    first = first_line.setdefault(item_id, lineno)
    if first != lineno:
      raise errors.DataError(f"{path}, line {lineno}: item id {item_id} is already listed on "
                             f"line {first}; each item must be listed once")


def read_items(path: str | os.PathLike, layout: str,
               encodings: Sequence[str] = ("utf-8",)) -> pd.DataFrame:
  """Parses an items file: `u.item` (`|`, 19 genre flags), `movies.dat` (`::`) or `movies.csv`.

  The file is read as UTF-8 whenever it is valid UTF-8, whatever `encodings` says: GroupLens ships
  some releases as latin-1, and one re-saved as UTF-8 would otherwise read `Café` as `CafÃ©`
  (latin-1 text with accents is almost never valid UTF-8). A UTF-8 byte-order mark is dropped.
  Otherwise the first of `encodings` that decodes the file is used.

  Args:
    path: the file.
    layout: `100k`, `dat` or `csv` (see `MovieLensSpec`).
    encodings: tried in order to decode the file when it is not valid UTF-8.

  Returns:
    DataFrame with `item_id` int64[I], `title` str[I], `genres` (list of str per item; empty for
    "(no genres listed)" or no flag set).

  Raises:
    errors.DataError: a malformed line or an item id listed twice, naming the file and the
      1-based line number(s); text in none of `encodings` (naming the line of the first bad
      byte), or a UTF-8 byte-order mark before text that is not UTF-8.
  """
  path = pathlib.Path(path)
  if layout not in _ITEM_READERS:
    raise errors.InvalidInput(
        f"unknown MovieLens layout {layout!r}; known: {', '.join(LAYOUT_FILES)}")
  rows = list(_ITEM_READERS[layout](path, _decode(path, encodings)))
  _check_unique_ids(path, rows)
  ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
  titles = pd.array([r[2] for r in rows], dtype="str")
  genres = pd.Series([r[3] for r in rows], dtype=object)
  return pd.DataFrame({"item_id": ids, "title": titles, "genres": genres})
