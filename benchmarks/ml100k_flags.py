"""The flags of the ML-100K accuracy benchmarks (accuracy_table, compare, features_table,
triplet_ablation), defined once."""

from absl import app
from absl import flags

DATA_DIR = flags.DEFINE_string("data_dir", "", "Folder holding ml-100k/ (empty: "
                               "$TRIPJAX_DATA_DIR, then the cache).")
SPLIT_SEEDS = flags.DEFINE_list("split_seeds", ["0", "1", "2"], "Lab split seeds.")


def split_seeds() -> list[int]:
  """`--split_seeds` as integers; a UsageError (one line) naming the flag otherwise."""
  try:
    seeds = [int(s) for s in SPLIT_SEEDS.value]
  except ValueError as e:
    raise app.UsageError(f"--split_seeds must be integers: {e}") from e
  if not seeds:
    raise app.UsageError("--split_seeds is empty; name at least one seed, e.g. "
                         "--split_seeds=0,1,2.")
  return seeds
