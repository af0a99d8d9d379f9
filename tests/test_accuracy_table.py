"""benchmarks.accuracy_table on real ML-100K, shortened to one split and one epoch."""

import dataclasses

from benchmarks import accuracy_table
from tripjax.config import TrainConfig


def test_penalised_config_also_reports_its_cosine_only_row(data_dir):
  tuned = TrainConfig(dataset="ml-100k", epochs=1, batch_size=1024, learning_rate=0.3,
                      popularity_penalty=0.05)
  rows = accuracy_table.run_models({"tuned": tuned, "plain": dataclasses.replace(
      tuned, popularity_penalty=0.0)}, str(data_dir), [0])
  assert set(rows) == {"popularity", "tuned", "plain", "tuned, cosine only"}
  # Same seed and settings: the cosine-only row is the plain model, the penalty changes the AUC.
  assert rows["tuned, cosine only"]["seeds"][0]["auc"] == rows["plain"]["seeds"][0]["auc"]
  assert rows["tuned"]["seeds"][0]["auc"] != rows["plain"]["seeds"][0]["auc"]
  table = accuracy_table.markdown(rows, [0], "cmd")
  assert "| tuned, cosine only |" in table and "cosine alone" in table


def test_weighted_negatives_config_also_reports_its_uniform_negatives_row(data_dir):
  tuned = TrainConfig(dataset="ml-100k", epochs=1, batch_size=1024, learning_rate=0.3,
                      negative_exponent=0.5)
  rows = accuracy_table.run_models({"tuned": tuned, "plain": dataclasses.replace(
      tuned, negative_exponent=0.0)}, str(data_dir), [0])
  assert set(rows) == {"popularity", "tuned", "plain", "tuned, uniform negatives"}
  # Same seed and settings: the uniform-negatives row is the plain model; the exponent matters.
  assert rows["tuned, uniform negatives"]["seeds"][0]["auc"] == rows["plain"]["seeds"][0]["auc"]
  assert rows["tuned"]["seeds"][0]["auc"] != rows["plain"]["seeds"][0]["auc"]
  assert rows["tuned, uniform negatives"]["config"]["negative_exponent"] == 0.0
  table = accuracy_table.markdown(rows, [0], "cmd")
  assert "| tuned, uniform negatives |" in table and "drawn uniformly" in table
