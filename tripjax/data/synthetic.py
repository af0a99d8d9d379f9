"""Synthetic MovieLens-like data with planted structure, for tests and offline runs.

The generative story, in the order the random streams are drawn:

1. Latent factors: user factors P: float32[U, D] and item factors Q: float32[I, D], i.i.d. N(0, 1).
   Affinity(u, i) = <P[u], Q[i]> / sqrt(D), roughly N(0, 1).
2. Item popularity: a Zipf-like law p(rank) ~ (rank + offset)^-exponent over a random permutation of
   the items.
3. User activity: each user rates `min_ratings` items plus a log-normal share of the rest, so the
   total is about `num_ratings` (capped at `max_user_fraction` of the items).
4. Which items a user rates: candidates drawn by popularity (mixed with a little uniform mass),
   then the user keeps the distinct candidates with the largest `selection_strength * affinity +
   Gumbel noise` (a Gumbel top-k, i.e. sampling without replacement proportional to
   exp(selection_strength * affinity)).
5. Ratings 1-5: a score = affinity + item quality (correlated with popularity) + user bias + noise,
   cut at the global quantiles of MovieLens 100K's rating distribution (55% of ratings >= 4). Each
   user's `min_positives` best-scored items are lifted to at least 4. So `rating >= 4` marks the
   planted likes: items whose affinity with the user is high.
6. Genres (MovieLens names): each genre has a random direction in factor space; an item belongs to
   the genres whose direction it points to most (at MovieLens 100K's genre frequencies).
7. Titles "Synthetic Film <id> (<year>)" and timestamps: each user is active over a random window
   and rates at uniform times inside it.

Everything is vectorised and processed in chunks of users, so the `ml-20m` preset (20M ratings)
builds in bounded memory. The knobs of each stage and the named presets are `SyntheticConfig` and
`PRESETS` (`tripjax.data.synthetic_config`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# The configuration and presets (`synthetic_config`), re-exported: `synthetic.PRESETS` etc.
from tripjax.data.synthetic_config import PRESETS, SyntheticConfig, preset_config

# MovieLens genre names and their frequency among MovieLens 100K's 1682 items.
GENRE_FREQUENCIES = {
    "Action": 251 / 1682, "Adventure": 135 / 1682, "Animation": 42 / 1682,
    "Children's": 122 / 1682, "Comedy": 505 / 1682, "Crime": 109 / 1682,
    "Documentary": 50 / 1682, "Drama": 725 / 1682, "Fantasy": 22 / 1682,
    "Film-Noir": 24 / 1682, "Horror": 92 / 1682, "Musical": 56 / 1682,
    "Mystery": 61 / 1682, "Romance": 247 / 1682, "Sci-Fi": 101 / 1682,
    "Thriller": 251 / 1682, "War": 71 / 1682, "Western": 27 / 1682,
}
GENRE_NAMES = tuple(GENRE_FREQUENCIES)

# Cumulative share of ratings <= 1, 2, 3, 4 in MovieLens 100K.
_RATING_QUANTILES = (0.06110, 0.17480, 0.44625, 0.78799)

_CHUNK_CANDIDATES = 2_000_000


def _streams(seed: int) -> list[np.random.Generator]:
  """Independent generators, one per stage, so stages can be recomputed on their own."""
  return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(7)]


def _factors(c: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  users = rng.standard_normal((c.num_users, c.dim), dtype=np.float32)
  items = rng.standard_normal((c.num_items, c.dim), dtype=np.float32)
  return users, items


def planted_factors(preset: str = "tiny", seed: int = 0,
                    **overrides) -> tuple[np.ndarray, np.ndarray]:
  """The latent factors behind `make_synthetic(preset, seed, **overrides)`.

  Row u of the user factors is user id u + 1; row i of the item factors is item id i + 1.

  Returns:
    (user_factors float32[U, D], item_factors float32[I, D]); the planted affinity of (u, i) is
    `user_factors[u] @ item_factors[i] / sqrt(D)`.
  """
  config = preset_config(preset, **overrides)
  return _factors(config, _streams(seed)[0])


def _popularity(c: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
  """float64[I]: the probability of each item under the Zipf-like law."""
  ranks = rng.permutation(c.num_items).astype(np.float64)
  weights = (ranks + 1.0 + c.zipf_offset * c.num_items) ** -c.zipf_exponent
  return weights / weights.sum()


def _activity(c: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
  """int64[U]: how many items each user rates (sums to num_ratings unless every user is capped)."""
  cap = int(c.max_user_fraction * c.num_items)
  weights = rng.lognormal(0.0, c.activity_sigma, c.num_users)
  share = np.zeros(c.num_users)
  free = np.ones(c.num_users, dtype=bool)
  # Water-filling: users above the cap are capped and the excess goes to the others.
  for _ in range(c.num_users):
    budget = c.num_ratings - c.num_users * c.min_ratings - share[~free].sum()
    share[free] = budget * weights[free] / weights[free].sum()
    over = free & (share > cap - c.min_ratings)
    if not over.any():
      break
    share[over] = cap - c.min_ratings
    free &= ~over
    if not free.any():
      break
  counts = c.min_ratings + np.floor(share).astype(np.int64)
  # Hand the rounding remainder to the uncapped users with the largest fractional parts.
  remainder = c.num_ratings - int(counts.sum())
  fraction = np.where(counts < cap, share - np.floor(share), -1.0)
  counts[np.argsort(-fraction, kind="stable")[:max(remainder, 0)]] += 1
  return np.minimum(counts, cap)


def _genres(c: SyntheticConfig, item_factors: np.ndarray,
            rng: np.random.Generator) -> list[list[str]]:
  """Genres that follow the item factors: one random direction per genre."""
  directions = rng.standard_normal((c.dim, len(GENRE_NAMES))).astype(np.float32)
  directions /= np.linalg.norm(directions, axis=0, keepdims=True)
  unit = item_factors / np.linalg.norm(item_factors, axis=1, keepdims=True)
  # Projections of unit vectors have std 1/sqrt(D); rescale them to unit std.
  scores = math.sqrt(c.dim) * (unit @ directions) + c.genre_noise * rng.standard_normal(
      (c.num_items, len(GENRE_NAMES)), dtype=np.float32)
  freqs = np.array([GENRE_FREQUENCIES[g] for g in GENRE_NAMES])
  thresholds = np.array([np.quantile(scores[:, g], 1.0 - f) for g, f in enumerate(freqs)])
  member = scores > thresholds
  # An item in no genre joins the one it is closest to joining.
  none = ~member.any(axis=1)
  member[none, np.argmax(scores[none] - thresholds, axis=1)] = True
  return [[GENRE_NAMES[g] for g in np.flatnonzero(row)] for row in member]


def _grouped_descending(groups: np.ndarray, key: np.ndarray) -> np.ndarray:
  """The permutation sorting by group (ascending), then key (float32, descending).

  One int64 argsort of (group << 32 | ~monotone bits of key) instead of a lexsort.
  """
  bits = key.astype(np.float32).view(np.uint32)
  monotone = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
  composite = (groups.astype(np.int64) << 32) | (~monotone).astype(np.int64)
  return np.argsort(composite, kind="stable")


def _guide_table(cdf: np.ndarray, size: int = 1 << 20) -> np.ndarray:
  """int64[size + 1]: searchsorted(cdf, b / size) for every bin edge b."""
  return np.searchsorted(cdf, np.arange(size + 1) / size)


def _sample(cdf: np.ndarray, guide: np.ndarray, uniform: np.ndarray, n: int) -> np.ndarray:
  """int32 indices distributed by `cdf`: searchsorted(cdf, uniform), via a guide table.

  Most uniforms fall in a bin whose two edges map to the same index; only the others need a
  binary search (random-access binary searches dominate the cost otherwise).
  """
  bins = (uniform * (len(guide) - 1)).astype(np.int64)
  out = guide[bins]
  ambiguous = np.flatnonzero(out != guide[bins + 1])
  out[ambiguous] = np.searchsorted(cdf, uniform[ambiguous])
  return np.minimum(out, n - 1).astype(np.int32)


def _rate_chunk(c: SyntheticConfig, user_factors: np.ndarray, item_factors: np.ndarray,
                cdf: np.ndarray, guide: np.ndarray, quality: np.ndarray, user_bias: np.ndarray,
                counts: np.ndarray, first_user: int, rng: np.random.Generator):
  """Picks and scores the items of users first_user .. first_user + len(counts) - 1.

  Returns:
    (users int32[n], items int32[n], score float32[n], lifted bool[n]) with `lifted` marking each
    user's `min_positives` best-scored items.
  """
  num = len(counts)
  per_user = np.ceil(c.oversample * counts).astype(np.int64) + 5
  local = np.repeat(np.arange(num, dtype=np.int32), per_user)
  items = _sample(cdf, guide, rng.random(local.size), c.num_items)
  scale = np.float32(1.0 / math.sqrt(c.dim))
  affinity = np.einsum("nd,nd->n", user_factors[first_user + local], item_factors[items]) * scale
  key = c.selection_strength * affinity + rng.gumbel(size=local.size).astype(np.float32)
  order = _grouped_descending(local, key)
  # The first occurrence of a (user, item) pair in key order is its best draw.
  _, first = np.unique(local[order].astype(np.int64) * c.num_items + items[order],
                       return_index=True)
  kept = order[np.sort(first)]
  local, items, affinity = local[kept], items[kept], affinity[kept]
  rank = np.arange(local.size) - np.searchsorted(local, np.arange(num))[local]
  take = rank < counts[local]
  local, items, affinity = local[take], items[take], affinity[take]

  score = (affinity + quality[items] + user_bias[first_user + local]
           + c.rating_noise * rng.standard_normal(local.size, dtype=np.float32))
  order = _grouped_descending(local, score)
  rank = np.arange(local.size) - np.searchsorted(local[order], np.arange(num))[local[order]]
  lifted = np.zeros(local.size, dtype=bool)
  lifted[order[rank < c.min_positives]] = True
  return (local + np.int32(first_user)), items, score.astype(np.float32), lifted


def _timestamps(c: SyntheticConfig, users: np.ndarray, rng_user: np.random.Generator,
                rng_rating: np.random.Generator) -> np.ndarray:
  start = pd.Timestamp(f"{c.start_year}-01-01").value // 10**9
  end = pd.Timestamp(f"{c.end_year}-01-01").value // 10**9
  span = np.minimum(rng_user.exponential(c.mean_active_days * 86400, c.num_users) + 86400,
                    end - start)
  first = start + rng_user.random(c.num_users) * (end - start - span)
  return (first[users] + rng_rating.random(users.size) * span[users]).astype(np.int64)


def make_synthetic(preset: str = "tiny", seed: int = 0,
                   **overrides) -> tuple[pd.DataFrame, pd.DataFrame]:
  """Generates a MovieLens-like dataset with planted latent structure.

  Args:
    preset: one of `PRESETS` ("tiny", "ml-100k", "ml-1m", "ml-20m").
    seed: the result is a deterministic function of (preset, seed, overrides).
    **overrides: `SyntheticConfig` fields to replace (e.g. `num_users=50`).

  Returns:
    ratings: DataFrame with `user_id` int64 (1..U), `item_id` int64 (1..I), `rating` float32 in
      {1, ..., 5}, `timestamp` int64 (unix seconds); sorted by user then timestamp.
    items: DataFrame with `item_id` int64 (1..I, every item, rated or not), `title` str,
      `genres` (list of MovieLens genre names, at least one).

  Raises:
    ValueError: unknown preset or override, or inconsistent sizes.
  """
  c = preset_config(preset, **overrides)
  (rng_factors, rng_pop, rng_activity, rng_rate, rng_genre, rng_time,
   rng_title) = _streams(seed)
  user_factors, item_factors = _factors(c, rng_factors)
  popularity = _popularity(c, rng_pop)
  counts = _activity(c, rng_activity)
  user_bias = (c.user_bias * rng_activity.standard_normal(c.num_users)).astype(np.float32)
  log_pop = np.log(popularity)
  quality = (c.popularity_quality * (log_pop - log_pop.mean()) / (log_pop.std() + 1e-12))
  quality = quality.astype(np.float32)
  mixed = (1.0 - c.uniform_mix) * popularity + c.uniform_mix / c.num_items
  cdf = np.cumsum(mixed)
  cdf /= cdf[-1]

  candidates = np.cumsum(np.ceil(c.oversample * counts) + 5)
  bounds = np.searchsorted(candidates, np.arange(_CHUNK_CANDIDATES, candidates[-1],
                                                 _CHUNK_CANDIDATES))
  bounds = np.unique(np.concatenate([[0], bounds, [c.num_users]]))
  guide = _guide_table(cdf)
  parts = [_rate_chunk(c, user_factors, item_factors, cdf, guide, quality, user_bias,
                       counts[lo:hi], lo, rng_rate) for lo, hi in zip(bounds[:-1], bounds[1:])]
  users, items, score, lifted = (np.concatenate(p) for p in zip(*parts))
  del parts

  cuts = np.quantile(score, _RATING_QUANTILES).astype(np.float32)
  rating = (np.searchsorted(cuts, score, side="right") + 1).astype(np.float32)
  del score
  rating[lifted] = np.maximum(rating[lifted], 4.0)
  del lifted
  timestamp = _timestamps(c, users, rng_time, rng_rate)
  # Timestamps span < 2^32 seconds, so (user, time) packs into one int64 sort key.
  order = np.argsort((users.astype(np.int64) << 32) | (timestamp - timestamp.min()),
                     kind="stable")
  ratings = pd.DataFrame({
      "user_id": users[order].astype(np.int64) + 1,
      "item_id": items[order].astype(np.int64) + 1,
      "rating": rating[order],
      "timestamp": timestamp[order],
  })
  del users, items, rating, timestamp, order

  item_ids = np.arange(1, c.num_items + 1, dtype=np.int64)
  years = rng_title.integers(c.start_year - 70, c.end_year, c.num_items)
  items_frame = pd.DataFrame({
      "item_id": item_ids,
      "title": [f"Synthetic Film {i} ({y})" for i, y in zip(item_ids.tolist(), years.tolist())],
      "genres": _genres(c, item_factors, rng_genre),
  })
  return ratings, items_frame
