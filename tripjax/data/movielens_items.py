"""MovieLens items files: `u.item` (`|`, 19 genre flags), `movies.dat` (`::`), `movies.csv`.

Items files are small (at most ~90k lines) and parsed line by line after decoding the whole file
(UTF-8 when valid, else the release's own encodings). Item ids follow the ratings' integer
grammar (`movielens_ratings.as_int`) and must be unique. Every expected failure is an
`errors.DataError` naming the file and the line.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import pathlib
from typing import Sequence

import numpy as np
import pandas as pd

from tripjax import errors
from tripjax.data.movielens_ratings import as_int, bom_length

ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western")
NO_GENRES = "(no genres listed)"

_CSV_MOVIES_HEADER = ("movieId", "title", "genres")


def _line_of(data: bytes, offset: int) -> int:
  return data.count(b"\n", 0, offset) + 1


def _decode(path: pathlib.Path, encodings: Sequence[str]) -> str:
  """The text of an items file: UTF-8 when it is valid UTF-8, else in the first of `encodings`
  that decodes it (see `read_items`)."""
  data = path.read_bytes()
  bom = bom_length(path, data[:4])
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
    return as_int(field)
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
        f"unknown MovieLens layout {layout!r}; known: {', '.join(_ITEM_READERS)}")
  rows = list(_ITEM_READERS[layout](path, _decode(path, encodings)))
  _check_unique_ids(path, rows)
  ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
  titles = pd.array([r[2] for r in rows], dtype="str")
  genres = pd.Series([r[3] for r in rows], dtype=object)
  return pd.DataFrame({"item_id": ids, "title": titles, "genres": genres})
