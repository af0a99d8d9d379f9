"""The triplet levers' ablation command (benchmarks.triplet_ablation) on a smoke config."""

import json
import subprocess
import sys

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


def test_the_command_runs_on_the_smoke_config(tmp_path):
  out_json, out_md = tmp_path / "a.json", tmp_path / "a.md"
  done = subprocess.run(
      [sys.executable, "-m", "benchmarks.triplet_ablation",
       "--base_flagfile=experiments/configs/smoke.cfg", "--lever=num_negatives=1",
       "--lever=num_negatives=3;negative_temperature=0.5", "--lever=item_features=genres",
       "--validation_seeds=1", f"--out_json={out_json}", f"--out_md={out_md}"],
      capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  report = json.loads(out_json.read_text())
  assert [r["lever"] for r in report["rows"]] == [
      "base", "num_negatives=1", "num_negatives=3;negative_temperature=0.5",
      "item_features=genres"]
  base = TrainConfig.from_flagfile("experiments/configs/smoke.cfg", ignore=DRIVER_FLAGS)
  assert report["base_config"]["num_negatives"] == base.num_negatives
  for row in report["rows"]:
    assert 0.5 < row["auc"] <= 1.0 and row["train_seconds"] > 0
  table = out_md.read_text()
  assert "| item_features=genres |" in table and "(+" in table or "(-" in table
  assert report["rows"][1]["auc"] != report["rows"][0]["auc"]  # the lever changed the fit
