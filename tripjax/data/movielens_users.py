"""MovieLens users files: `u.user` (ML-100K) and `users.dat` (ML-1M), and `load_users`.

Only these two releases describe their users; ML-10M, 20M, 25M, the `latest` releases and the
synthetic datasets do not, and `load_users` refuses them in one line naming `--user_features`.

Grammar (one user a line; blank lines are skipped; a UTF-8 byte-order mark is dropped; the
text is read as UTF-8 when valid, else latin-1):
- `u.user`: `user id|age|gender|occupation|zip code`; the age is in years (an integer in
  [0, 150)), the occupation a name (`technician`).
- `users.dat`: `UserID::Gender::Age::Occupation::Zip-code`; the age is the code of its bracket
  (`ML_1M_AGES`: 1 = under 18, 18 = 18-24, ..., 56 = 56+) and the occupation an integer code
  0-20, turned into its name as GroupLens' README lists them (`ML_1M_OCCUPATIONS`).
Ids follow the ratings' integer grammar (`movielens_ratings.as_int`) and must be unique; the
gender is `M` or `F`; the zip code is not read. Every expected failure is an `errors.DataError`
naming the file and the line.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pandas as pd

from tripjax import errors
from tripjax.data import movielens
from tripjax.data.movielens_ratings import as_int, bom_length

USER_COLUMNS = ("user_id", "age", "gender", "occupation")
# release name -> (users file, its layout); the other releases have no users file.
USER_FILES = {"ml-100k": ("u.user", "100k"), "ml-1m": ("users.dat", "dat")}
GENDERS = ("F", "M")
MAX_AGE = 150
# ML-1M's age codes: each is the lowest age of its bracket, but 1 ("Under 18").
ML_1M_AGES = (1, 18, 25, 35, 45, 50, 56)
# ML-1M's occupation codes 0-20, in order, as its README names them.
ML_1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")

_SEPARATORS = {"100k": "|", "dat": "::"}
_FLAG = "--user_features"


def _text(path: pathlib.Path) -> str:
  """The file's text: UTF-8 when valid, else latin-1 (users files are ASCII in practice)."""
  data = path.read_bytes()
  data = data[bom_length(path, data[:4]):]
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return data.decode("latin-1")


def _lines(text: str):
  """(1-based line number, line) of the non-blank lines; splits on '\\n' only."""
  for lineno, line in enumerate(text.split("\n"), start=1):
    line = line.rstrip("\r")
    if line.strip():
      yield lineno, line


def _int(field: str, what: str, low: int, high: int) -> int:
  """`field` as an integer in [low, high); ValueError saying why not."""
  try:
    value = as_int(field)
  except (ValueError, OverflowError):
    raise ValueError(f"{what} {field!r} is not an integer") from None
  if not low <= value < high:
    raise ValueError(f"{what} {value} is outside [{low}, {high})")
  return value


def _user_id(field: str) -> int:
  try:
    return as_int(field)
  except OverflowError:
    raise ValueError(f"user id {field!r} is outside the int64 range") from None
  except ValueError:
    raise ValueError(f"user id {field!r} is not an integer") from None


def _gender(field: str) -> str:
  gender = field.strip()
  if gender not in GENDERS:
    raise ValueError(f"gender {field!r} is not one of {', '.join(GENDERS)}")
  return gender


def _u_user(fields: list[str]) -> tuple[int, int, str, str]:
  user_id, age, gender, occupation, _ = fields
  occupation = occupation.strip()
  if not occupation:
    raise ValueError("the occupation is empty")
  return (_user_id(user_id), _int(age, "age", 0, MAX_AGE),
          _gender(gender), occupation)


def _users_dat(fields: list[str]) -> tuple[int, int, str, str]:
  user_id, gender, age, occupation, _ = fields
  age = _int(age, "age", 0, MAX_AGE)
  if age not in ML_1M_AGES:
    raise ValueError(f"age code {age} is not one of {', '.join(map(str, ML_1M_AGES))}")
  code = _int(occupation, "occupation code", 0, len(ML_1M_OCCUPATIONS))
  return (_user_id(user_id), age, _gender(gender),
          ML_1M_OCCUPATIONS[code])


_PARSERS = {"100k": _u_user, "dat": _users_dat}


def read_users(path: str | os.PathLike, layout: str) -> pd.DataFrame:
  """Parses a users file: `u.user` (layout `100k`) or `users.dat` (layout `dat`).

  Args:
    path: the file.
    layout: `100k` or `dat` (see the module docstring for each grammar).

  Returns:
    DataFrame with `user_id` int64[N], `age` int64[N] (years for ML-100K, the bracket code of
    `ML_1M_AGES` for ML-1M), `gender` str[N] (`M` or `F`), `occupation` str[N], in file order.

  Raises:
    errors.DataError: a malformed line (field count, an id or age that is not an integer in
      range, an unknown gender, age or occupation code, an empty occupation), a user id listed
      twice (naming both lines) or a file with no user, naming the file and the 1-based line.
    errors.InvalidInput: an unknown layout.
  """
  path = pathlib.Path(path)
  if layout not in _PARSERS:
    raise errors.InvalidInput(
        f"unknown MovieLens users layout {layout!r}; known: {', '.join(_PARSERS)}")
  sep, parse = _SEPARATORS[layout], _PARSERS[layout]
  rows, first_line = [], {}
  for lineno, line in _lines(_text(path)):
    fields = line.split(sep)
    try:
      if len(fields) != 5:
        raise ValueError(f"expected 5 fields separated by {sep!r}, found {len(fields)}")
      row = parse(fields)
    except ValueError as err:
      raise errors.DataError(f"{path}, line {lineno}: {err}: {line[:200]!r}") from None
    first = first_line.setdefault(row[0], lineno)
    if first != lineno:
      raise errors.DataError(f"{path}, line {lineno}: user id {row[0]} is already listed on "
                             f"line {first}; each user must be listed once")
    rows.append(row)
  if not rows:
    raise errors.DataError(f"{path}: the users file is empty; expected one user per line")
  columns = list(zip(*rows))
  return pd.DataFrame({
      "user_id": np.array(columns[0], dtype=np.int64),
      "age": np.array(columns[1], dtype=np.int64),
      "gender": pd.array(columns[2], dtype="str"),
      "occupation": pd.array(columns[3], dtype="str"),
  })


def _no_users(name: str) -> errors.InvalidInput:
  with_users = " and ".join(USER_FILES)
  return errors.InvalidInput(f"{_FLAG}: dataset {name} has no user features (only {with_users} "
                             f"describe their users); leave {_FLAG} empty")


def users_path(name: str, data_dir: str | os.PathLike | None = None, download: bool = True, *,
               cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
               timeout: float = 60.0, progress: bool | None = None) -> pathlib.Path:
  """The users file of a release, in the folder `load_movielens` reads its ratings from.

  The folder is found as `load_movielens` finds it (`data_dir` or nothing; else
  `$TRIPJAX_DATA_DIR`, then the cache, then a download into the cache), so that users and
  ratings come from the same copy of the release; that folder must hold the users file.

  Args: as in `load_users`.

  Returns:
    The path of `u.user` or `users.dat`.

  Raises:
    errors.InvalidInput: the dataset has no users file (naming `--user_features`).
    movielens.ReleaseNotFound: the release is not there, or its folder lacks the users file.
    download.DownloadError: the download failed.
  """
  if not isinstance(name, str) or name not in USER_FILES:
    if isinstance(name, str) and (name in movielens.DATASETS or name.startswith("synthetic-")):
      raise _no_users(name)
    movielens.get_spec(name)  # raises, listing the known names
  spec = movielens.get_spec(name)
  filename = USER_FILES[name][0]
  url = movielens.archive_url(spec.name, base_url)
  folder = movielens.locate_release(spec, data_dir, download, cache_dir=cache_dir,
                                    base_url=base_url, timeout=timeout, progress=progress,
                                    also_required=(filename,))
  path = folder / filename
  if not path.is_file():
    raise movielens.ReleaseNotFound(
        f"{path} is missing: MovieLens {spec.name} describes its users there ({url} holds it); "
        f"put it beside {' and '.join(spec.files)}, or leave {_FLAG} empty")
  return path


def load_users(name: str, data_dir: str | os.PathLike | None = None, download: bool = True, *,
               cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
               timeout: float = 60.0, progress: bool | None = None) -> pd.DataFrame:
  """Loads the users of a MovieLens release that describes them (ML-100K, ML-1M).

  Args:
    name: a dataset name (`ml-100k`, `ml-1m`; any other MovieLens release or `synthetic-*`
      name is refused).
    data_dir, download, cache_dir, base_url, timeout, progress: as in `load_movielens`.

  Returns:
    DataFrame with `user_id` int64[N], `age` int64[N], `gender` str[N], `occupation` str[N]
    (see `read_users`), every user of the file (the lab pipeline's filters are not applied).

  Raises:
    errors.InvalidInput: the dataset has no users file (naming `--user_features`), or an
      unknown name.
    movielens.ReleaseNotFound: the release, or its users file, is not there.
    errors.DataError: a malformed users file, naming it and the line.
    download.DownloadError: the download failed.
  """
  path = users_path(name, data_dir, download, cache_dir=cache_dir, base_url=base_url,
                    timeout=timeout, progress=progress)
  return read_users(path, USER_FILES[name][1])
