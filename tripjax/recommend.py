"""Using a trained model: top-k recommendations, similar items, title look-up, fold-in of new users.

Everything here is a pure function over the parameter pytree `{"user": float32[U, D],
"item": float32[I, D]}` (score = cosine of the two embeddings) and, where seen items are filtered
out, a boolean CSR matrix [U, I]. Scores are computed one block of users at a time, so the full
U x I score matrix never exists.

`top_k` and `top_k_for_vectors` take the run's `item_offset` (`model.popularity_offset(train,
config.popularity_penalty)`), so they rank exactly as the run's evaluation does;
`similar_items` is item-item cosine and takes none.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

from tripjax import errors
from tripjax import losses
from tripjax import metrics
from tripjax import model

Params = Mapping[str, jax.Array]

_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|il|el|das|der|die)$")


_unit = losses.normalize  # the model's own normalisation, so scores equal model.cosine_scores


@functools.partial(jax.jit, static_argnames=("k",))
def _masked_top_k(user_vecs: jax.Array, item_unit: jax.Array, exclude: jax.Array,
                  k: int, item_offset: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Top-k of one block, with the model's scores and evaluation's top-k (`metrics.top_k_unseen`).

  Args:
    user_vecs: float32[B, D].
    item_unit: float32[I, D], unit rows.
    exclude: bool[B, I], items never to recommend.
    k: static number of items.
    item_offset: optional float32[I] added to every row's scores (as `model.score_fn` does).

  Returns:
    (int32[B, k] items, -1 where a user has fewer than k candidates; float32[B, k] their scores,
    offset included, -inf in those slots).
  """
  scores = model.vector_scores(user_vecs, item_unit, item_offset)
  items = metrics.top_k_unseen(scores, ~exclude, k)
  top_scores = jnp.take_along_axis(scores, jnp.maximum(items, 0), axis=1)
  return items, jnp.where(items >= 0, top_scores, -jnp.inf)


def _check_k(k: int, num_candidates: int, what: str = "catalogue") -> int:
  if isinstance(k, bool) or int(k) != k or k <= 0:
    raise errors.InvalidInput(f"k must be a positive integer, got k={k!r}.")
  if k > num_candidates:
    raise errors.InvalidInput(f"k={k} is larger than the {what} ({num_candidates} items).")
  return int(k)


def _exclude_rows(exclude, rows: slice, batch_size: int, num_items: int) -> np.ndarray:
  """Dense bool[batch_size, I] of `exclude[rows]`, zero-padded to the block size."""
  block = np.zeros((batch_size, num_items), dtype=bool)
  if exclude is None:
    return block
  part = exclude[rows]
  if sp.issparse(part):
    part = sp.csr_matrix(part)
    lengths = np.diff(part.indptr)
    block[np.repeat(np.arange(part.shape[0]), lengths), part.indices] = True
  else:
    block[:part.shape[0]] = np.asarray(part, dtype=bool)
  return block


def top_k_for_vectors(params: Params, user_vecs, k: int = 20, exclude=None,
                      batch_size: int = 1024, item_offset=None) -> tuple[np.ndarray, np.ndarray]:
  """The k best items for raw user embeddings (e.g. fold-in users), by cosine (plus offset).

  Args:
    params: `{"item": float32[I, D], ...}`; only the item table is used.
    user_vecs: float32[D] (one user) or float32[B, D].
    k: items per user, 1 <= k <= I.
    exclude: items never to recommend: None, bool CSR or dense bool [B, I] (row b for user b),
      or, for a single float32[D] vector, a sequence of item indices.
    batch_size: users scored per block; the score matrix held at once is [batch_size, I].
    item_offset: optional float32[I] added to every user's scores, e.g. the run's
      `model.popularity_offset(train, config.popularity_penalty)`; None: the cosine alone.

  Returns:
    `(items, scores)`: int32[B, k] and float32[B, k] (or [k] for a single vector), best first, ties
    broken by the lower item index. A user with fewer than k candidates gets index -1 and score
    -inf in the slots beyond them.
  """
  item_table = jnp.asarray(params["item"], jnp.float32)
  num_items, dim = item_table.shape
  vecs = np.asarray(user_vecs, dtype=np.float32)
  single = vecs.ndim == 1
  if single:
    vecs = vecs[None]
    if exclude is not None and not (sp.issparse(exclude) or np.ndim(exclude) == 2):
      exclude = _indices_to_mask(exclude, num_items)[None]
  if vecs.ndim != 2 or vecs.shape[1] != dim:
    raise errors.InvalidInput(f"user_vecs must be float32[{dim}] or float32[B, {dim}] to match "
                              f"the item table, got shape {np.shape(user_vecs)}.")
  if exclude is not None and not sp.issparse(exclude):
    exclude = np.asarray(exclude, bool)
  if exclude is not None and tuple(exclude.shape) != (vecs.shape[0], num_items):
    raise errors.InvalidInput(f"exclude must have shape {(vecs.shape[0], num_items)} (one row per "
                              f"user), got {tuple(exclude.shape)}.")
  items, scores = _blocked_top_k(vecs, item_table, k, exclude, batch_size, item_offset)
  return (items[0], scores[0]) if single else (items, scores)


def _check_offset(item_offset, num_items: int) -> jax.Array | None:
  """The offset as float32[I] on device, or None; raises ValueError on a bad shape or value."""
  if item_offset is None:
    return None
  offset = np.asarray(item_offset, np.float32)
  if offset.shape != (num_items,):
    raise errors.InvalidInput(f"item_offset must be float32[{num_items}] (one per item), got "
                              f"shape {offset.shape}.")
  if not np.all(np.isfinite(offset)):
    raise errors.InvalidInput("item_offset holds NaN or Inf.")
  return jnp.asarray(offset)


def _blocked_top_k(vecs: np.ndarray, item_table: jax.Array, k: int, exclude,
                   batch_size: int, item_offset=None) -> tuple[np.ndarray, np.ndarray]:
  num_items = item_table.shape[0]
  k = _check_k(k, num_items)
  if batch_size <= 0:
    raise errors.InvalidInput(f"batch_size must be positive, got {batch_size}.")
  offset = _check_offset(item_offset, num_items)
  num = vecs.shape[0]
  batch_size = min(batch_size, max(num, 1))
  item_unit = jax.jit(_unit)(item_table)
  out_items = np.empty((num, k), np.int32)
  out_scores = np.empty((num, k), np.float32)
  for start in range(0, num, batch_size):
    rows = slice(start, min(start + batch_size, num))
    size = rows.stop - rows.start
    block = np.zeros((batch_size, vecs.shape[1]), np.float32)  # padded: one compile for all blocks
    block[:size] = vecs[rows]
    mask = _exclude_rows(exclude, rows, batch_size, num_items)
    items, scores = _masked_top_k(block, item_unit, mask, k, offset)
    out_items[rows] = np.asarray(items)[:size]
    out_scores[rows] = np.asarray(scores)[:size]
  return out_items, out_scores


def top_k(params: Params, users, k: int = 20, exclude: sp.csr_matrix | None = None,
          batch_size: int = 1024, item_offset=None) -> tuple[np.ndarray, np.ndarray]:
  """The k best items per user by cosine score, optionally leaving out items the user has seen.

  With the run's `item_offset` the lists are exactly evaluation's top-k unseen items
  (`metrics.evaluate(model.score_fn(params, item_offset), ...).top_items`).

  Args:
    params: `{"user": float32[U, D], "item": float32[I, D]}`.
    users: int[B] user indices (rows of `params["user"]`), or raw embeddings float32[D] /
      float32[B, D] (then see `top_k_for_vectors`).
    k: items per user, 1 <= k <= I.
    exclude: bool CSR [U, I] (usually the training matrix) of items never to recommend, or None.
    batch_size: users scored per block; the score matrix held at once is [batch_size, I].
    item_offset: optional float32[I] added to every user's scores (`model.popularity_offset`);
      None: the cosine alone.

  Returns:
    `(items, scores)`: int32[B, k] and float32[B, k] (scores include the offset), best first,
    ties broken by the lower item index; index -1 and score -inf where a user has fewer than k
    unseen items.
  """
  users = np.asarray(users)
  if np.issubdtype(users.dtype, np.floating):
    if exclude is not None:
      raise errors.InvalidInput("exclude for raw user vectors is per vector: use "
                                "top_k_for_vectors.")
    return top_k_for_vectors(params, users, k, None, batch_size, item_offset)
  num_users = params["user"].shape[0]
  if users.ndim != 1 or not np.issubdtype(users.dtype, np.integer):
    raise errors.InvalidInput(f"users must be int[B] user indices, got dtype {users.dtype} shape "
                              f"{users.shape}.")
  bad = (users < 0) | (users >= num_users)
  if bad.any():
    raise errors.InvalidInput(f"user index {int(users[bad][0])} is out of range: the model has "
                              f"{num_users} users (0..{num_users - 1}).")
  if exclude is not None:
    if tuple(exclude.shape) != (num_users, params["item"].shape[0]):
      raise errors.InvalidInput(f"exclude has shape {tuple(exclude.shape)} but the model has "
                                f"{num_users} users x {params['item'].shape[0]} items.")
    exclude = sp.csr_matrix(exclude)[users]
  vecs = np.asarray(params["user"], np.float32)[users]
  return _blocked_top_k(vecs, jnp.asarray(params["item"], jnp.float32), k, exclude, batch_size,
                        item_offset)


def similar_items(params: Params, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """The k items nearest to `item` by cosine of item embeddings, the item itself left out.

  Pure item-item cosine: a run's popularity offset (`model.popularity_offset`) ranks items for a
  user and is not applied here.

  Args:
    params: `{"item": float32[I, D], ...}`.
    item: an item index, 0 <= item < I.
    k: 1 <= k <= I - 1.

  Returns:
    `(items, scores)`: int32[k] and float32[k], most similar first, ties by lower index.
  """
  item_table = jnp.asarray(params["item"], jnp.float32)
  num_items = item_table.shape[0]
  if isinstance(item, bool) or int(item) != item or not 0 <= item < num_items:
    raise errors.InvalidInput(f"item index {item!r} is out of range: the model has {num_items} "
                              f"items (0..{num_items - 1}).")
  k = _check_k(k, num_items - 1, "catalogue without the item itself")
  mask = np.zeros((1, num_items), bool)
  mask[0, int(item)] = True
  items, scores = _masked_top_k(item_table[int(item)][None], jax.jit(_unit)(item_table), mask, k)
  return np.asarray(items[0]), np.asarray(scores[0])


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


def _indices_to_mask(item_indices, num_items: int) -> np.ndarray:
  items = np.asarray(item_indices)
  if items.ndim != 1 or (items.size and not np.issubdtype(items.dtype, np.integer)):
    raise errors.InvalidInput(f"item indices must be a 1-D sequence of ints, got {item_indices!r}.")
  items = items.astype(np.int64)
  bad = (items < 0) | (items >= num_items)
  if bad.any():
    raise errors.InvalidInput(f"item index {int(items[bad][0])} is out of range: the model has "
                              f"{num_items} items (0..{num_items - 1}).")
  mask = np.zeros(num_items, bool)
  mask[items] = True
  return mask


@functools.partial(jax.jit, static_argnames=("steps", "num_negatives", "margin",
                                             "learning_rate"))
def _fold_in(item_table: jax.Array, liked: jax.Array, liked_weight: jax.Array,
             candidates: jax.Array, num_candidates: jax.Array, key: jax.Array, *, steps: int,
             num_negatives: int, margin: float, learning_rate: float) -> jax.Array:
  """Minimises the triplet loss over one user vector with the item table frozen.

  Args:
    item_table: float32[I, D].
    liked: int32[P] liked items, padded (padding has weight 0).
    liked_weight: float32[P], 1 for real entries, 0 for padding.
    candidates: int32[I], the non-liked items first (`num_candidates` of them), then padding.
    num_candidates: int32[], how many negatives there are to draw from.
    key: PRNG key.
  """
  pos = item_table[liked]                                     # [P, D]
  unit = _unit(item_table[liked])
  user = jnp.sum(unit * liked_weight[:, None], 0) / jnp.maximum(liked_weight.sum(), 1.0)
  optimizer = optax.adam(learning_rate)

  def loss_fn(u, negatives):
    p = jnp.broadcast_to(pos[:, None], negatives.shape)       # [P, N, D]
    u = jnp.broadcast_to(u, negatives.shape)
    per_triplet = losses.triplet_cosine_loss(
        u.reshape(-1, u.shape[-1]), p.reshape(-1, u.shape[-1]),
        negatives.reshape(-1, u.shape[-1]), margin).reshape(negatives.shape[:2])
    weights = jnp.broadcast_to(liked_weight[:, None], per_triplet.shape)
    return jnp.sum(per_triplet * weights) / jnp.maximum(weights.sum(), 1.0)

  def step(carry, step_key):
    u, opt_state = carry
    draw = jax.random.randint(step_key, (liked.shape[0], num_negatives), 0, num_candidates)
    grad = jax.grad(loss_fn)(u, item_table[candidates[draw]])
    updates, opt_state = optimizer.update(grad, opt_state, u)
    return (optax.apply_updates(u, updates), opt_state), None

  (user, _), _ = jax.lax.scan(step, (user, optimizer.init(user)), jax.random.split(key, steps))
  return user


def fold_in(params: Params, item_indices: Sequence[int], key: jax.Array, steps: int = 200,
            margin: float = 0.5, learning_rate: float = 0.05,
            num_negatives: int = 16) -> jax.Array:
  """An embedding for a new user from the items they liked, without retraining.

  Starts from the mean of the liked items' unit embeddings, then takes `steps` Adam steps on the
  training loss (`losses.triplet_cosine_loss`) over the user vector alone, item embeddings frozen:
  at each step every liked item is paired with `num_negatives` negatives drawn uniformly among the
  items not liked. One jitted `lax.scan`; the liked list is padded to a power of two, so users with
  similar numbers of liked items share a compilation. Deterministic given `key`.

  Args:
    params: `{"item": float32[I, D], ...}`.
    item_indices: int[P], the liked items (duplicates are ignored), 1 <= P < I.
    key: a `jax.random.key`.
    steps: optimisation steps (0 returns the mean of the liked items).
    margin: the triplet margin, as in training.
    learning_rate: Adam's learning rate.
    num_negatives: negatives per liked item per step.

  Returns:
    float32[D], usable with `top_k_for_vectors` (or `top_k`).
  """
  item_table = jnp.asarray(params["item"], jnp.float32)
  num_items = item_table.shape[0]
  mask = _indices_to_mask(item_indices, num_items)
  liked = np.flatnonzero(mask).astype(np.int32)
  if liked.size == 0:
    raise errors.InvalidInput("fold_in needs at least one liked item, got none.")
  if liked.size == num_items:
    raise errors.InvalidInput(f"fold_in needs at least one item not liked; all {num_items} are "
                              "liked.")
  if steps < 0 or num_negatives <= 0 or margin < 0 or learning_rate <= 0:
    raise errors.InvalidInput("fold_in needs steps >= 0, num_negatives > 0, margin >= 0 and "
                              f"learning_rate > 0; got steps={steps}, "
                              f"num_negatives={num_negatives}, margin={margin}, "
                              f"learning_rate={learning_rate}.")
  padded = 1 << int(np.ceil(np.log2(liked.size)))
  weight = np.zeros(padded, np.float32)
  weight[:liked.size] = 1.0
  liked = np.pad(liked, (0, padded - liked.size))
  candidates = np.concatenate([np.flatnonzero(~mask), np.flatnonzero(mask)]).astype(np.int32)
  return _fold_in(item_table, liked, weight, candidates, np.int32((~mask).sum()), key,
                  steps=int(steps), num_negatives=int(num_negatives), margin=float(margin),
                  learning_rate=float(learning_rate))


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
