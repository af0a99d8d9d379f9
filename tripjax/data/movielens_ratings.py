"""MovieLens ratings files: `u.data` (tab), `ratings.dat` (`::`) and `ratings.csv` (header).

Ratings go through pandas' C parser (the `::` of the `.dat` files is first turned into a tab);
only when that fails is the file read again line by line to name the first bad line. Both read
one grammar: ids and timestamps are decimal integers (`196`, `+196`, ` 196`; never `196.0`, `1e2`
or `1_000`), ratings decimal numbers finite in float32; lines of blanks are skipped and a UTF-8
byte-order mark is ignored. The items files (`movielens_items`) read their ids with the same
grammar (`as_int`, `bom_length`).

Every expected failure is an `errors.DataError` (a ValueError) whose one-line message names the
file, and the line where there is one.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import pathlib
import re
import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from tripjax import errors

RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
_INT_COLUMNS = ("user_id", "item_id", "timestamp")
_CSV_RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
# layout -> the ratings file's separator, as written in the file
_RATINGS_SEPARATORS = {"100k": "\t", "dat": "::", "csv": ","}


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
      f.seek(bom_length(path, f.read(4)))
      return _parse_ratings(f, path, layout)
  if layout == "dat":
    data = path.read_bytes()
    bom = bom_length(path, data[:4])
    # No numeric field holds a ':', so '::' -> '\t' keeps every field and the line numbers.
    source = io.BytesIO(data.replace(b"::", b"\t"))
    del data
    source.seek(bom)
    return _parse_ratings(source, path, layout)
  if layout == "csv":
    _check_header(path, _CSV_RATINGS_HEADER)
    return _parse_ratings(path, path, layout)
  raise errors.InvalidInput(
      f"unknown MovieLens layout {layout!r}; known: {', '.join(_RATINGS_SEPARATORS)}")


def bom_length(path: pathlib.Path, head: bytes) -> int:
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
    bom_length(path, f.read(4))
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


def as_int(field: str) -> int:
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


_RATING_CHECKS: tuple[Callable[[str], object], ...] = (as_int, as_int, _as_finite_float, as_int)


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
      kind = "an integer" if check is as_int else "a finite number"
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
