"""What the synthetic generator makes: `SyntheticConfig`, the named presets and their checks.

`preset_config(preset, **overrides)` is the configuration `tripjax.data.synthetic.make_synthetic`
generates from; an inconsistent one is rejected here, before any data is drawn.
"""

from __future__ import annotations

import dataclasses

from tripjax import errors


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Shape and strength of the planted structure.

  Attributes:
    num_users: U.
    num_items: I.
    num_ratings: target number of ratings (the result can be slightly lower when heavy users run
      out of distinct candidates).
    dim: D, the rank of the planted factors.
    zipf_exponent: popularity exponent; p(rank) ~ (rank + zipf_offset * I)^-exponent.
    zipf_offset: offset of the Zipf law as a fraction of I (flattens the head).
    uniform_mix: share of candidate draws that are uniform over items instead of by popularity.
    min_ratings: every user rates at least this many items.
    min_positives: every user has at least this many ratings >= 4.
    activity_sigma: sigma of the log-normal spread of user activity.
    max_user_fraction: no user rates more than this fraction of the items.
    oversample: candidates drawn per rating to choose from.
    selection_strength: how strongly affinity drives which items a user rates.
    popularity_quality: weight of (standardised) log popularity in the rating score.
    user_bias: standard deviation of a per-user rating offset.
    rating_noise: standard deviation of the noise in the rating score.
    genre_noise: standard deviation of the noise added to the (unit-variance) genre scores.
    start_year: first year of the timestamps.
    end_year: last year of the timestamps (exclusive).
    mean_active_days: mean length of a user's active window.
  """

  num_users: int = 100
  num_items: int = 200
  num_ratings: int = 6_000
  dim: int = 4
  zipf_exponent: float = 1.0
  zipf_offset: float = 0.01
  uniform_mix: float = 0.2
  min_ratings: int = 25
  min_positives: int = 20
  activity_sigma: float = 1.0
  max_user_fraction: float = 0.5
  oversample: float = 3.0
  selection_strength: float = 2.0
  popularity_quality: float = 0.3
  user_bias: float = 0.3
  rating_noise: float = 0.3
  genre_noise: float = 0.5
  start_year: int = 1996
  end_year: int = 2000
  mean_active_days: float = 60.0


PRESETS = {
    # Tests and the offline quick start: every user keeps >= 20 positives.
    "tiny": SyntheticConfig(),
    "ml-100k": SyntheticConfig(num_users=943, num_items=1682, num_ratings=100_000, dim=16,
                               min_ratings=20, min_positives=5, start_year=1997,
                               end_year=1998),
    "ml-1m": SyntheticConfig(num_users=6040, num_items=3706, num_ratings=1_000_209, dim=16,
                             min_ratings=20, min_positives=5, start_year=2000, end_year=2003),
    "ml-20m": SyntheticConfig(num_users=138_000, num_items=27_000, num_ratings=20_000_000,
                              dim=16, min_ratings=20, min_positives=5, start_year=1995,
                              end_year=2015),
}


def preset_config(preset: str = "tiny", **overrides) -> SyntheticConfig:
  """The configuration of a preset with some fields replaced.

  Raises:
    ValueError: unknown preset, unknown override or inconsistent values.
  """
  if preset not in PRESETS:
    raise errors.InvalidInput(f"Unknown synthetic preset {preset!r}; known presets: "
                              f"{sorted(PRESETS)}")
  fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise errors.InvalidInput(f"Unknown make_synthetic override(s) {unknown}; valid: "
                              f"{sorted(fields)}")
  config = dataclasses.replace(PRESETS[preset], **overrides)
  _validate(config)
  return config


def _validate(c: SyntheticConfig) -> None:
  for name in ("num_users", "num_items", "num_ratings", "dim", "min_ratings"):
    if int(getattr(c, name)) < 1:
      raise errors.InvalidInput(f"make_synthetic: {name} must be >= 1, got {getattr(c, name)}")
  if not 0 <= c.min_positives <= c.min_ratings:
    raise errors.InvalidInput("make_synthetic: need 0 <= min_positives <= min_ratings, got "
                              f"min_positives={c.min_positives}, min_ratings={c.min_ratings}")
  max_per_user = int(c.max_user_fraction * c.num_items)
  if c.min_ratings > max_per_user:
    raise errors.InvalidInput(f"make_synthetic: min_ratings={c.min_ratings} exceeds "
                              f"max_user_fraction * num_items = {max_per_user}")
  if c.num_ratings < c.num_users * c.min_ratings:
    raise errors.InvalidInput(f"make_synthetic: num_ratings={c.num_ratings} is below num_users * "
                              f"min_ratings = {c.num_users * c.min_ratings}")
  if not 0 <= c.uniform_mix <= 1:
    raise errors.InvalidInput(f"make_synthetic: uniform_mix must be in [0, 1], got {c.uniform_mix}")
  if c.oversample < 1:
    raise errors.InvalidInput(f"make_synthetic: oversample must be >= 1, got {c.oversample}")
  if c.end_year <= c.start_year:
    raise errors.InvalidInput(f"make_synthetic: end_year ({c.end_year}) must be after start_year "
                              f"({c.start_year})")
