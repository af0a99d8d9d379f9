"""MovieLens releases: their specs, where a release is found (or downloaded) and `load_movielens`.

`load_movielens(name)` reads a release from `data_dir` when one is given, and fails when it is not
there; without `data_dir` it looks in `$TRIPJAX_DATA_DIR`, then the cache (`cache_dir`,
`$TRIPJAX_CACHE_DIR` or `~/.cache/tripjax`), downloads it into the cache when it is in neither,
and parses it into the two common frames:

- ratings: `user_id` int64, `item_id` int64, `rating` float32, `timestamp` int64, one row a rating.
- items: `item_id` int64, `title` str, `genres` list of str (empty when none is listed).

The files themselves are parsed by `movielens_ratings.read_ratings` and
`movielens_items.read_items` (re-exported here), which say the grammar they accept.

Every expected failure is an `errors.DataError` (a ValueError) whose one-line message names the
file, and the line where there is one.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Sequence

import pandas as pd

from tripjax import errors
from tripjax.data import download as download_lib
# The parsers, re-exported: `movielens.read_ratings` and friends are the public names.
from tripjax.data.movielens_items import ML_100K_GENRES, NO_GENRES, read_items
from tripjax.data.movielens_ratings import RATING_COLUMNS, read_ratings

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"

# layout -> (ratings file, items file)
LAYOUT_FILES = {
    "100k": ("u.data", "u.item"),
    "dat": ("ratings.dat", "movies.dat"),
    "csv": ("ratings.csv", "movies.csv"),
}


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


def _manual_hint(spec: MovieLensSpec, url: str, roots: Sequence[pathlib.Path],
                 files: Sequence[str]) -> str:
  places = " or ".join(str(r / spec.folder) for r in roots)
  return (f"To install it by hand, download {url}, unzip it and put its files "
          f"({', '.join(files)}) in {places}.")


def locate_release(spec: MovieLensSpec, data_dir: str | os.PathLike | None = None,
                   download: bool = True, *, cache_dir: str | os.PathLike | None = None,
                   base_url: str | None = None, timeout: float = 60.0,
                   progress: bool | None = None,
                   also_required: Sequence[str] = ()) -> pathlib.Path:
  """The folder a release is read from: `data_dir` (or nothing), else `$TRIPJAX_DATA_DIR`, then
  the cache, then a download into the cache (see `load_movielens` for the arguments).

  Args:
    also_required: files besides `spec.files` a download must bring (e.g. the users file);
      they are not checked in a folder found or named (the caller does).

  Raises:
    ReleaseNotFound, download.DownloadError: as in `load_movielens`.
  """
  if _given(data_dir):
    return release_folder(spec, data_dir, base_url)
  roots = search_roots(None, cache_dir)
  folder = find_release(spec, roots)
  if folder is not None:
    return folder
  url = archive_url(spec.name, base_url)
  files = tuple(spec.files) + tuple(also_required)
  hint = _manual_hint(spec, url, roots, files)
  if not download:
    raise ReleaseNotFound(f"MovieLens {spec.name} not found (download=False). {hint}")
  cache = cache_root(cache_dir)
  # The known MD5 belongs to GroupLens' archive; elsewhere trust the .md5 published beside it
  # only when no MD5 is pinned.
  try:
    download_lib.fetch_archive(url, cache, md5=spec.md5,
                               required=[f"{spec.folder}/{f}" for f in files],
                               timeout=timeout, progress=progress)
  except download_lib.DownloadError as err:
    raise type(err)(f"{err}. {hint}") from err
  return cache / spec.folder


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
  return read_release(locate_release(spec, data_dir, download, cache_dir=cache_dir,
                                     base_url=base_url, timeout=timeout, progress=progress),
                      spec)


def read_release(folder: str | os.PathLike,
                 spec: MovieLensSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
  """Parses the ratings and items files of a release folder (see `load_movielens`)."""
  folder = pathlib.Path(folder)
  ratings_file, items_file = spec.files
  ratings = read_ratings(folder / ratings_file, spec.layout)
  items = read_items(folder / items_file, spec.layout, spec.items_encodings)
  return ratings, items
