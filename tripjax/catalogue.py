"""The title catalogue: finding items by title, users by id, and rows for printing. No JAX."""

from __future__ import annotations

import difflib
import re
from typing import Sequence

import numpy as np

from tripjax import errors

_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|il|el|das|der|die)$")


def _title_keys(title: str) -> set[str]:
  """Lower-case forms a title is known by: 'Usual Suspects, The (1995)' -> {'usual suspects, the',
  'the usual suspects'} (the full title is matched separately)."""
  base = _YEAR.sub("", title).strip().lower()
  keys = {base}
  moved = _TRAILING_ARTICLE.match(base)
  if moved:
    keys.add(f"{moved.group(2)} {moved.group(1)}")
  return keys


def _similarity(query: str, title: str) -> float:
  """difflib's ratio of a lower-case query and title, the better of with and without the year."""
  matcher = difflib.SequenceMatcher(None, b=query)
  ratios = []
  for form in {title, _YEAR.sub("", title)}:
    matcher.set_seq1(form)
    ratios.append(matcher.ratio())
  return max(ratios)


def find_item(titles: Sequence[str], query: str, max_candidates: int = 10) -> int:
  """Index of the item whose title matches `query`, case-insensitively.

  Tried in order, the first that matches exactly one title wins: the full title ('Fargo (1996)');
  the title without its year, also with a trailing article moved to the front ('fargo',
  'the usual suspects'); a substring of the full title ('toy sto').

  Args:
    titles: the catalogue's titles, str[I] (e.g. `dataset.titles`).
    query: what the user typed.
    max_candidates: how many titles an error message lists at most.

  Returns:
    The matching item index.

  Raises:
    ValueError: no title matches (listing the `max_candidates` closest titles by difflib's
      ratio, however far), or several do (listing them).
  """
  titles = [str(t) for t in titles]
  q = " ".join(str(query).split()).lower()
  if not q:
    raise errors.InvalidInput("empty title query.")
  stages = (
      [i for i, t in enumerate(titles) if t.lower() == q],
      [i for i, t in enumerate(titles) if q in _title_keys(t)],
      [i for i, t in enumerate(titles) if q in t.lower()],
  )
  for matches in stages:
    if len(matches) == 1:
      return matches[0]
    if len(matches) > 1:
      listed = "; ".join(repr(titles[i]) for i in matches[:max_candidates])
      more = f" and {len(matches) - max_candidates} more" if len(matches) > max_candidates else ""
      raise errors.InvalidInput(f"title {query!r} is ambiguous: it matches {len(matches)} items: "
                                f"{listed}{more}. Give the full title, with the year.")
  closest = sorted(range(len(titles)), key=lambda i: -_similarity(q, titles[i].lower()))
  hint = ("; closest: " + "; ".join(repr(titles[i]) for i in closest[:max_candidates])
          if closest else "")
  raise errors.InvalidInput(f"no item title matches {query!r} among {len(titles)} titles{hint}.")


def check_placeable(item: int, titles: Sequence[str], cold_items: np.ndarray | None,
                    has_item_features: bool, takes_item_features: bool, flag: str) -> None:
  """Refuses an item the model cannot place: one held out of training whole (a cold item of
  `--cold_item_fraction`) when the model has no item features to give it a vector.

  Such an item's vector is zero (or, for the item-item models, its row and column are empty), so
  every other item would tie with it at score 0.

  Args:
    item: the item's row.
    titles: every item's title.
    cold_items: the run's cold items (None: none held out).
    has_item_features: whether the model's params hold item features.
    takes_item_features: whether the run's model could have them (`--item_features`), which
      the message then suggests.
    flag: the flag that named the item.

  Raises:
    InvalidInput: naming `flag` and the title.
  """
  if cold_items is not None and not has_item_features and np.isin(item, cold_items):
    remedy = ", or train with --item_features=genres" if takes_item_features else ""
    raise errors.InvalidInput(
        f"{flag}: {titles[item]!r} is one of the run's cold items (held out of training by "
        "--cold_item_fraction) and the model has no item features to place it; ask about an "
        f"item it trained on{remedy}.")


def user_index(user_ids: np.ndarray, user_id: int) -> int:
  """Row of the user whose original id is `user_id`.

  Args:
    user_ids: int64[U], original user id of each row (`dataset.user_ids`).
    user_id: an original (e.g. MovieLens) user id.

  Raises:
    ValueError: the id is not among the users kept by the pipeline (says which ids exist).
  """
  user_ids = np.asarray(user_ids)
  rows = np.flatnonzero(user_ids == user_id)
  if rows.size == 0:
    raise errors.InvalidInput(f"unknown user id {user_id}: the dataset keeps {user_ids.size} "
                              f"users (ids {user_ids.min()}..{user_ids.max()}, not all of them; "
                              "users with too few positives were filtered out).")
  return int(rows[0])


def split_titles(text: str) -> list[str]:
  """Splits a list of titles typed on one line.

  Titles are separated by ';' or '|' when the text holds either, else by ','. With ',', a piece
  that is only an article (and maybe a year) is glued back to the title before it, so
  'Usual Suspects, The (1995),Fargo' gives ['Usual Suspects, The (1995)', 'Fargo'].
  """
  for sep in (";", "|"):
    if sep in text:
      return [p.strip() for p in text.split(sep) if p.strip()]
  pieces = []
  for piece in text.split(","):
    if pieces and re.fullmatch(r"\s*(the|a|an)(\s*\(\d{4}\))?\s*", piece, re.IGNORECASE):
      pieces[-1] = f"{pieces[-1]},{piece}"
    else:
      pieces.append(piece)
  return [p.strip() for p in pieces if p.strip()]


def item_rows(titles: Sequence[str], genres: Sequence[Sequence[str]], item_ids: np.ndarray,
              items: np.ndarray, scores: np.ndarray,
              marked: np.ndarray | None = None) -> list[dict]:
  """One dict per recommended item, for tables and JSON (padding slots, index -1, dropped).

  Args:
    titles, genres, item_ids: the dataset's per-item columns.
    items: int[k] item indices; scores: float[k].
    marked: optional bool[I]; adds `in_test` = marked[item] to each row.

  Returns:
    [{"rank", "item_id", "title", "genres", "score"[, "in_test"]}], best first.
  """
  rows = []
  for rank, (item, score) in enumerate(zip(np.asarray(items), np.asarray(scores)), 1):
    if item < 0:
      continue
    row = {"rank": rank, "item_id": int(item_ids[item]), "title": str(titles[item]),
           "genres": "|".join(genres[item]), "score": float(score)}
    if marked is not None:
      row["in_test"] = bool(marked[item])
    rows.append(row)
  return rows
