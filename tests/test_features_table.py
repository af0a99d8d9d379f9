"""benchmarks.features_table on a smoke config (synthetic data with genres)."""

import dataclasses

import pytest

from benchmarks import features_table
from tripjax.config import DRIVER_FLAGS, TrainConfig


def test_variants_parse_and_bad_ones_are_refused():
  assert features_table.variant_changes("none") == {}
  assert features_table.variant_changes("item_features=genres;user_features=age") == {
      "item_features": "genres", "user_features": "age"}
  with pytest.raises(Exception, match="--variant"):
    features_table.variant_changes("margin=0.3")


def test_warm_and_cold_rows_for_each_variant():
  base = dataclasses.replace(
      TrainConfig.from_flagfile("experiments/configs/smoke.cfg", ignore=DRIVER_FLAGS), epochs=1)
  report = features_table.run(base, ["none", "item_features=genres"], [0], 0.2)
  none, genres = report["rows"]
  assert (none["variant"], genres["variant"]) == ("none", "item_features=genres")
  for row in report["rows"]:
    assert 0.5 < row["warm"]["auc"] <= 1.0
    assert row["cold"]["items"] == 40 and row["cold"]["popularity_by_genre"] is not None
  assert none["cold"]["model"]["auc"] == pytest.approx(0.5)  # no vector for a cold item
  assert genres["cold"]["model"]["auc"] != pytest.approx(0.5)
  table = features_table.markdown(report, "cmd")
  assert "| item_features=genres |" in table and "| popularity by genre |" in table
