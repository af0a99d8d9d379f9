"""benchmarks.accuracy_table on real ML-100K, shortened to one split and one epoch."""

import dataclasses

import pytest

from benchmarks import accuracy_table
from tripjax.config import TrainConfig


@pytest.mark.parametrize("field, value, extra_row, note", [
    # The penalty's row scores the same trained model by the cosine alone.
    ("popularity_penalty", 0.05, "tuned, cosine only", "cosine alone"),
    # The exponent's row trains the same settings with uniform negatives.
    ("negative_exponent", 0.5, "tuned, uniform negatives", "drawn uniformly"),
    # The low ratings' row trains the same settings on the liked ratings alone.
    ("low_rating_weight", 0.5, "tuned, liked ratings only", "without the ratings below"),
])
def test_tuned_lever_gets_a_row_without_it(data_dir, field, value, extra_row, note):
  tuned = TrainConfig(dataset="ml-100k", epochs=1, batch_size=1024, learning_rate=0.3,
                      **{field: value})
  rows = accuracy_table.run_models({"tuned": tuned, "plain": dataclasses.replace(
      tuned, **{field: 0.0})}, str(data_dir), [0])
  assert set(rows) == {"popularity", "tuned", "plain", extra_row}
  # Same seed and settings: the extra row is the plain model, and the lever changes the AUC.
  assert rows[extra_row]["seeds"][0]["auc"] == rows["plain"]["seeds"][0]["auc"]
  assert rows["tuned"]["seeds"][0]["auc"] != rows["plain"]["seeds"][0]["auc"]
  table = accuracy_table.markdown(rows, [0], "cmd")
  assert f"| {extra_row} |" in table and note in table


def test_the_later_rounds_get_a_row_of_the_issues_starting_settings(data_dir):
  # A temperature and low ratings together: a row trained as ml100k.cfg was before them (the
  # hardest of 2, liked ratings only), the same model as that config trained on its own.
  tuned = TrainConfig(dataset="ml-100k", epochs=1, batch_size=1024, learning_rate=0.3,
                      num_negatives=4, negative_temperature=0.2, low_rating_weight=0.2,
                      low_rating_floor=3, high_rating_weight=1.5, user_weight_exponent=0.5)
  before = dataclasses.replace(tuned, num_negatives=2, negative_temperature=0.0,
                               low_rating_weight=0.0, high_rating_weight=1.0,
                               user_weight_exponent=0.0)
  rows = accuracy_table.run_models({"tuned": tuned, "before": before}, str(data_dir), [0])
  extra = "tuned, hardest of 2, liked ratings only"
  assert set(rows) == {"popularity", "tuned", "before", "tuned, liked ratings only", extra}
  assert rows[extra]["seeds"][0]["auc"] == rows["before"]["seeds"][0]["auc"]
  assert rows[extra]["seeds"][0]["auc"] != rows["tuned, liked ratings only"]["seeds"][0]["auc"]
  table = accuracy_table.markdown(rows, [0], "cmd")
  assert f"| {extra} |" in table and "as issue 14 began" in table


@pytest.mark.parametrize("extra, note, other", [
    ("tuned, liked ratings only", "without the ratings below", "as issue 14 began"),
    ("tuned, hardest of 2, liked ratings only", "as issue 14 began", "without the ratings below"),
])
def test_each_extra_row_brings_its_own_note_only(extra, note, other):
  metrics = {k: 0.5 for k in accuracy_table.COLUMNS}
  row = {"mean": metrics, "seeds": {0: metrics}, "median_train_seconds": 1.0}
  table = accuracy_table.markdown({"tuned": row, extra: row}, [0], "cmd")
  assert note in table and other not in table
