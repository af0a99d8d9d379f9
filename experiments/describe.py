"""Prints the lab's statistics tables and the shape after each pipeline step for a dataset.

  python -m experiments.describe --dataset=ml-100k [--data_dir=...] [--threshold=4]
      [--min_user_positives=20]
"""

from absl import app
from absl import flags
import pandas as pd

from tripjax import data

_DATASET = flags.DEFINE_enum("dataset", "synthetic-tiny", data.DATASET_NAMES,
                             "Dataset to describe.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder holding MovieLens releases (default: "
                                "$TRIPJAX_DATA_DIR, then ~/.cache/tripjax).")
_DOWNLOAD = flags.DEFINE_bool("download", True, "Download MovieLens when it is absent.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of synthetic datasets.")
_THRESHOLD = flags.DEFINE_float("threshold", 4.0, "A rating >= threshold is a positive.")
_MIN_USER_POSITIVES = flags.DEFINE_integer(
    "min_user_positives", 20, "Users with fewer positives are dropped.", lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  ratings, items = data.load_dataset(_DATASET.value, data_dir=_DATA_DIR.value,
                                     download=_DOWNLOAD.value, seed=_SEED.value)
  dataset = data.implicit_feedback(ratings, items, threshold=_THRESHOLD.value,
                                   min_user_positives=_MIN_USER_POSITIVES.value)
  with pd.option_context("display.width", 200, "display.max_columns", 20,
                         "display.float_format", "{:.4f}".format):
    print(f"{_DATASET.value}: threshold {_THRESHOLD.value:g}, "
          f"min_user_positives {_MIN_USER_POSITIVES.value}")
    print("\nShape after each step:")
    print(data.steps_table(dataset).to_string())
    table = data.describe(ratings, dataset, threshold=_THRESHOLD.value)
    for stage in ("before", "after"):
      print(f"\nStatistics {stage} filtering:")
      print(table.loc[stage].to_string())


if __name__ == "__main__":
  app.run(main)
