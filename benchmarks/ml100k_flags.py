"""The flags of the ML-100K accuracy benchmarks (accuracy_table, compare), defined once."""

from absl import flags

DATA_DIR = flags.DEFINE_string("data_dir", "", "Folder holding ml-100k/ (empty: "
                               "$TRIPJAX_DATA_DIR, then the cache).")
SPLIT_SEEDS = flags.DEFINE_list("split_seeds", ["0", "1", "2"], "Lab split seeds.")
