"""Prints the lab's statistics tables and the shape after each pipeline step for a dataset.

  python -m experiments.describe --dataset=ml-100k [--data_dir=...] [--threshold=4]
      [--min_user_positives=20]
"""

import pandas as pd

from experiments import data_flags
from experiments import run_cli
from tripjax import data


def main(argv):
  del argv
  ratings, items = data.load_dataset(data_flags.DATASET.value, data_dir=data_flags.DATA_DIR.value,
                                     download=data_flags.DOWNLOAD.value, seed=data_flags.SEED.value)
  dataset = data.implicit_feedback(ratings, items, threshold=data_flags.THRESHOLD.value,
                                   min_user_positives=data_flags.MIN_USER_POSITIVES.value)
  with pd.option_context("display.width", 200, "display.max_columns", 20,
                         "display.float_format", "{:.4f}".format):
    print(f"{data_flags.DATASET.value}: threshold {data_flags.THRESHOLD.value:g}, "
          f"min_user_positives {data_flags.MIN_USER_POSITIVES.value}")
    print("\nShape after each step:")
    print(data.steps_table(dataset).to_string())
    table = data.describe(ratings, dataset, threshold=data_flags.THRESHOLD.value)
    for stage in ("before", "after"):
      print(f"\nStatistics {stage} filtering:")
      print(table.loc[stage].to_string())


if __name__ == "__main__":
  run_cli.run(main)
