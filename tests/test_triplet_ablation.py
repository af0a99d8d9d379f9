"""The triplet levers' ablation command (benchmarks.triplet_ablation) on a smoke config."""

import dataclasses

import pytest

from benchmarks import triplet_ablation
from tripjax.config import DRIVER_FLAGS, TrainConfig


def test_parse_lever_types_the_values_and_refuses_bad_ones():
  assert triplet_ablation.parse_lever("num_negatives=4;negative_temperature=0.1") == {
      "num_negatives": 4, "negative_temperature": 0.1}
  assert triplet_ablation.parse_lever("user_features=age,gender") == {
      "user_features": "age,gender"}
  for bad in ("colour=3", "num_negatives", "num_negatives=four", " ; "):
    with pytest.raises(ValueError, match="--lever"):
      triplet_ablation.parse_lever(bad)


def test_the_ablation_runs_on_the_smoke_config():
  base = dataclasses.replace(
      TrainConfig.from_flagfile("experiments/configs/smoke.cfg", ignore=DRIVER_FLAGS), epochs=2)
  report = triplet_ablation.ablate(
      base, ["num_negatives=3;negative_temperature=0.5", "item_features=genres"], [1])
  assert [r["lever"] for r in report["rows"]] == [
      "base", "num_negatives=3;negative_temperature=0.5", "item_features=genres"]
  assert report["base_config"]["num_negatives"] == base.num_negatives
  for row in report["rows"]:
    assert 0.5 < row["auc"] <= 1.0 and row["train_seconds"] > 0
  assert report["rows"][1]["auc"] != report["rows"][0]["auc"]  # the lever changed the fit
  table = triplet_ablation.markdown(report, "python -m benchmarks.triplet_ablation")
  delta = report["rows"][2]["ndcg@20"] - report["rows"][0]["ndcg@20"]
  assert f"| item_features=genres | " in table and f"({delta:+.4f})" in table
