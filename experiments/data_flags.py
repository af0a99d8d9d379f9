"""The data flags shared by experiments.describe and experiments.evaluate (defined once).

Each script reads them as `data_flags.DATASET.value` etc.; `--flagfile` works for all of them.
"""

from absl import flags

from tripjax import data

DATASET = flags.DEFINE_enum("dataset", "synthetic-tiny", data.DATASET_NAMES, "Dataset.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder holding the MovieLens release (or its "
                               "parent); used or refused, never replaced. Unset: "
                               "$TRIPJAX_DATA_DIR, then ~/.cache/tripjax, then a download.")
DOWNLOAD = flags.DEFINE_bool("download", True, "Download MovieLens when it is absent.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of synthetic datasets.")
THRESHOLD = flags.DEFINE_float("threshold", 4.0, "A rating >= threshold is a positive.")
MIN_USER_POSITIVES = flags.DEFINE_integer(
    "min_user_positives", 20, "Users with fewer positives are dropped.", lower_bound=1)
