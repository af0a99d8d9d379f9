"""MovieLens loaders: every GroupLens release in its native layout, with verified download.

`load_movielens(name)` finds a release under `data_dir`, then `$TRIPJAX_DATA_DIR`, then the cache
(`cache_dir`, `$TRIPJAX_CACHE_DIR` or `~/.cache/tripjax`), downloads it into the cache when it is
in none of them, and parses it into the two common frames:

- ratings: `user_id` int64, `item_id` int64, `rating` float32, `timestamp` int64, one row a rating.
- items: `item_id` int64, `title` str, `genres` list of str (empty when none is listed).

Ratings go through pandas' C parser (the `::` of the `.dat` files is first turned into a tab);
only when that fails is the file read again line by line to name the first bad line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import pathlib
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from tripjax.data import download as download_lib

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"

ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western")
NO_GENRES = "(no genres listed)"

RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
_RATING_DTYPES = {"user_id": np.int64, "item_id": np.int64, "rating": np.float32,
                  "timestamp": np.int64}
_CSV_RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
_CSV_MOVIES_HEADER = ("movieId", "title", "genres")

# layout -> (ratings file, items file)
LAYOUT_FILES = {
    "100k": ("u.data", "u.item"),
    "dat": ("ratings.dat", "movies.dat"),
    "csv": ("ratings.csv", "movies.csv"),
}


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
    items_encodings: encodings tried in order to decode the items file.
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
  """Returns the spec of a release; a ValueError lists the known names."""
  try:
    return DATASETS[name]
  except (KeyError, TypeError):
    raise ValueError(f"unknown MovieLens dataset {name!r}; known: {', '.join(DATASETS)}") from None


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
    data_dir: folder holding `<folder>/` of the release (e.g. `data_dir/ml-1m/ratings.dat`);
      searched first, then `$TRIPJAX_DATA_DIR`, then the cache.
    download: download into the cache when the release is absent.
    cache_dir: the cache folder (default `$TRIPJAX_CACHE_DIR`, then `~/.cache/tripjax`).
    base_url: where the archives are (default `$TRIPJAX_MOVIELENS_URL`, then GroupLens).
    timeout: seconds allowed for connecting and for each read.
    progress: show a download progress bar (None: only when stderr is a terminal).

  Returns:
    (ratings, items): ratings has `user_id` int64[N], `item_id` int64[N], `rating`
    float32[N], `timestamp` int64[N]; items has `item_id` int64[I], `title` str[I], `genres`
    (a list of genre names per item, empty when none is listed).

  Raises:
    ValueError: unknown name, or a malformed line (naming the file and the line number).
    FileNotFoundError: the release is absent and `download` is False.
    download.DownloadError: the download failed; the message names the URL, the reason and
      where to put the files by hand.
  """
  spec = get_spec(name)
  roots = search_roots(data_dir, cache_dir)
  folder = find_release(spec, roots)
  if folder is None:
    url = archive_url(spec.name, base_url)
    hint = _manual_hint(spec, url, roots)
    if not download:
      raise FileNotFoundError(f"MovieLens {spec.name} not found (download=False). {hint}")
    cache = cache_root(cache_dir)
    # The known MD5 belongs to GroupLens' archive; elsewhere trust the .md5 published beside it
    # only when no MD5 is pinned.
    try:
      download_lib.fetch_archive(
          url, cache, md5=spec.md5, required=[f"{spec.folder}/{f}" for f in spec.files],
          timeout=timeout, progress=progress)
    except download_lib.DownloadError as err:
      raise type(err)(f"{err}\n{hint}") from err
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
    ValueError: a malformed line (wrong field count, a non-numeric or non-finite value), naming
      the file and the 1-based line number.
  """
  path = pathlib.Path(path)
  if layout == "100k":
    return _parse_ratings(path, path, "\t", "\t", header=False)
  if layout == "dat":
    # No numeric field holds a ':', so '::' -> '\t' keeps every field and the line numbers.
    data = path.read_bytes().replace(b"::", b"\t")
    return _parse_ratings(io.BytesIO(data), path, "\t", "::", header=False)
  if layout == "csv":
    _check_header(path, _CSV_RATINGS_HEADER)
    return _parse_ratings(path, path, ",", ",", header=True)
  raise ValueError(f"unknown MovieLens layout {layout!r}; known: {', '.join(LAYOUT_FILES)}")


def _check_header(path: pathlib.Path, expected: Sequence[str]) -> None:
  with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
    header = next(csv.reader(f), [])
  if tuple(h.strip() for h in header) != tuple(expected):
    raise ValueError(f"{path}, line 1: expected the header {','.join(expected)!r}, "
                     f"got {','.join(header)!r}")


def _parse_ratings(source, path: pathlib.Path, sep: str, file_sep: str,
                   header: bool) -> pd.DataFrame:
  """C-engine parse of a 4-column numeric table; on failure, names the first bad line."""
  try:
    with np.errstate(over="ignore"):  # a rating beyond float32 becomes inf, reported below
      frame = pd.read_csv(
          source, sep=sep, header=None, names=list(RATING_COLUMNS), dtype=_RATING_DTYPES,
          skiprows=1 if header else 0, engine="c", quoting=csv.QUOTE_NONE, na_filter=False,
          encoding="latin-1")
  except (ValueError, OverflowError, TypeError) as err:
    _raise_bad_line(path, file_sep, header, err)
  if not np.isfinite(frame["rating"].to_numpy()).all():
    _raise_bad_line(path, file_sep, header, None)
  if frame.empty:
    what = "nothing but its header" if header else "no line"
    raise ValueError(f"{path}: the ratings file is empty ({what}); expected one rating per line.")
  return frame  # columns and dtypes are already those of RATING_COLUMNS (no extra copy)


_INT64 = np.iinfo(np.int64)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _as_int(field: str) -> int:
  """The field as an int64 value (OverflowError beyond the int64 range)."""
  value = int(field)
  if not _INT64.min <= value <= _INT64.max:
    raise OverflowError("outside the int64 range")
  return value


def _as_finite_float(field: str) -> float:
  """The field as a rating: finite, also once stored as float32."""
  value = float(field)
  if not abs(value) <= _FLOAT32_MAX:
    raise ValueError("not finite")
  return value


_RATING_CHECKS: tuple[Callable[[str], object], ...] = (_as_int, _as_int, _as_finite_float, _as_int)


def _bad_field(fields: Sequence[str], sep: str,
               checks: Sequence[Callable[[str], object]], names: Sequence[str]) -> str | None:
  """Why a line's fields are malformed, or None when they are fine."""
  if len(fields) != len(checks):
    return f"expected {len(checks)} fields separated by {sep!r}, found {len(fields)}"
  for field, check, name in zip(fields, checks, names):
    try:
      check(field.strip())
    except OverflowError:
      return f"{name} {field!r} is outside the int64 range"
    except ValueError:
      kind = "an integer" if check is _as_int else "a finite number"
      return f"{name} {field!r} is not {kind}"
  return None


def _raise_bad_line(path: pathlib.Path, sep: str, header: bool, err: BaseException | None):
  """Raises a ValueError naming the first malformed line of a ratings file."""
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      if header and lineno == 1:
        continue
      line = raw.decode("latin-1").rstrip("\r\n")
      if not line.strip():
        continue
      reason = _bad_field(line.split(sep), sep, _RATING_CHECKS, RATING_COLUMNS)
      if reason:
        raise ValueError(f"{path}, line {lineno}: {reason}: {line[:200]!r}") from err
  raise ValueError(f"{path}: cannot parse ratings ({err})") from err


# ---------------------------------------------------------------------------------------------
# Items: small files (at most ~90k lines), parsed line by line.


def _decode(path: pathlib.Path, encodings: Sequence[str]) -> str:
  data = path.read_bytes()
  for encoding in encodings:
    try:
      return data.decode(encoding)
    except UnicodeDecodeError as err:
      last = err
  raise ValueError(f"{path}: not valid {' or '.join(encodings)} text ({last})")


def _lines(text: str):
  """(1-based line number, line) of the non-blank lines; splits on '\\n' only (not on U+0085)."""
  for lineno, line in enumerate(text.split("\n"), start=1):
    line = line.rstrip("\r")
    if line.strip():
      yield lineno, line


def _item_id(path: pathlib.Path, lineno: int, field: str, line: str) -> int:
  try:
    return int(field)
  except ValueError:
    raise ValueError(f"{path}, line {lineno}: item id {field!r} is not an integer: "
                     f"{line[:200]!r}") from None


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
      raise ValueError(f"{path}, line {lineno}: expected {width} fields separated by '|', "
                       f"found {len(fields)}: {line[:200]!r}")
    flags = [f.strip() for f in fields[5:]]
    if any(f not in ("0", "1") for f in flags):
      raise ValueError(f"{path}, line {lineno}: genre flags must be 0 or 1: {line[:200]!r}")
    genres = [g for g, f in zip(ML_100K_GENRES, flags) if f == "1"]
    yield _item_id(path, lineno, fields[0], line), fields[1], genres


def _read_movies_dat(path: pathlib.Path, text: str):
  for lineno, line in _lines(text):
    fields = line.split("::")
    if len(fields) != 3:
      raise ValueError(f"{path}, line {lineno}: expected 3 fields separated by '::', found "
                       f"{len(fields)}: {line[:200]!r}")
    yield _item_id(path, lineno, fields[0], line), fields[1], _split_genres(fields[2])


def _read_movies_csv(path: pathlib.Path, text: str):
  reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
  header = next(reader, [])
  if tuple(h.strip() for h in header) != _CSV_MOVIES_HEADER:
    raise ValueError(f"{path}, line 1: expected the header {','.join(_CSV_MOVIES_HEADER)!r}, "
                     f"got {','.join(header)!r}")
  for fields in reader:
    if not fields:
      continue
    lineno = reader.line_num
    if len(fields) != 3:
      raise ValueError(f"{path}, line {lineno}: expected 3 comma-separated fields, found "
                       f"{len(fields)}: {','.join(fields)[:200]!r}")
    yield _item_id(path, lineno, fields[0], ",".join(fields)), fields[1], _split_genres(fields[2])


_ITEM_READERS = {"100k": _read_u_item, "dat": _read_movies_dat, "csv": _read_movies_csv}


def read_items(path: str | os.PathLike, layout: str,
               encodings: Sequence[str] = ("utf-8",)) -> pd.DataFrame:
  """Parses an items file: `u.item` (`|`, 19 genre flags), `movies.dat` (`::`) or `movies.csv`.

  Args:
    path: the file.
    layout: `100k`, `dat` or `csv` (see `MovieLensSpec`).
    encodings: tried in order to decode the file.

  Returns:
    DataFrame with `item_id` int64[I], `title` str[I], `genres` (list of str per item; empty for
    "(no genres listed)" or no flag set).

  Raises:
    ValueError: a malformed line, naming the file and the 1-based line number.
  """
  path = pathlib.Path(path)
  if layout not in _ITEM_READERS:
    raise ValueError(f"unknown MovieLens layout {layout!r}; known: {', '.join(LAYOUT_FILES)}")
  rows = list(_ITEM_READERS[layout](path, _decode(path, encodings)))
  ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
  titles = pd.array([r[1] for r in rows], dtype="str")
  genres = pd.Series([r[2] for r in rows], dtype=object)
  return pd.DataFrame({"item_id": ids, "title": titles, "genres": genres})
