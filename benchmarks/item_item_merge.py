"""Merging two runs of `benchmarks.item_item_fit` (flag-free, so tests can import it)."""

MODELS = ("ease", "rp3beta", "itemknn")


def merge(base: dict, new: dict) -> dict:
  """`base` with its rows of `new`'s models replaced by `new`'s.

  Args:
    base: this script's JSON payload.
    new: another run's payload, of the same shape (the same random matrix).

  Returns:
    `base` whose "models" are in `MODELS` order, each of `new`'s rows with `new`'s "command",
    "baseline" (its "fit_rss_mib" is relative to that) and "environment".

  Raises:
    ValueError: the shapes differ.
  """
  if base["shape"] != new["shape"]:
    raise ValueError(f"cannot merge runs of different shapes: {base['shape']} and "
                     f"{new['shape']}")
  rows = {m["model"]: m for m in base["models"]}
  for m in new["models"]:
    rows[m["model"]] = {**m, "command": new["command"], "baseline": new["baseline"],
                        "environment": new["environment"]}
  return {**base, "models": [rows[name] for name in MODELS if name in rows]}
