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
  given = data_flags.prepare_kwargs()
  ratings, items = data.load_dataset(given["name"], data_dir=given["data_dir"],
                                     download=given["download"], seed=given["seed"])
  dataset = data.implicit_feedback(ratings, items, threshold=given["threshold"],
                                   min_user_positives=given["min_user_positives"])
  with pd.option_context("display.width", 200, "display.max_columns", 20,
                         "display.float_format", "{:.4f}".format):
    print(f"{given['name']}: threshold {given['threshold']:g}, "
          f"min_user_positives {given['min_user_positives']}")
    print("\nShape after each step:")
    print(data.steps_table(dataset).to_string())
    table = data.describe(ratings, dataset, threshold=given["threshold"])
    for stage in ("before", "after"):
      print(f"\nStatistics {stage} filtering:")
      print(table.loc[stage].to_string())


if __name__ == "__main__":
  run_cli.run(main)
