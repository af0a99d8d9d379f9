"""benchmarks.time_to_auc: every method's curve on synthetic-tiny, the tables, the budget."""

import importlib.util
import json

import pytest

from benchmarks import time_to_auc
from tripjax import files

HAS_IMPLICIT = importlib.util.find_spec("implicit") is not None
TRIPJAX_METHODS = ("fused", "sparse_adam", "sparse_adagrad")
IMPLICIT_METHODS = ("implicit_bpr", "implicit_als")
METHODS = TRIPJAX_METHODS + (IMPLICIT_METHODS if HAS_IMPLICIT else ())


@pytest.fixture(scope="module")
def report():
  # Three epochs each (the budget is not reached), AUC on 50 users.
  return time_to_auc.run("tiny", METHODS, seconds=600.0, eval_users=50, max_epochs=3)


@pytest.mark.parametrize("method", TRIPJAX_METHODS + IMPLICIT_METHODS)
def test_each_method_gives_a_curve(report, method):
  if method not in METHODS:
    pytest.skip("implicit is not installed")
  points = report["points"][method]
  assert [p["epoch"] for p in points] == [1, 2, 3]
  seconds = [p["seconds"] for p in points]
  assert all(0 < a < b for a, b in zip(seconds, seconds[1:])), seconds
  assert all(0.0 <= p["auc"] <= 1.0 for p in points), points
  info = report["methods"][method]
  assert info["epochs"] == 3 and info["train_seconds"] == seconds[-1]
  assert info["setup_seconds"] >= 0.0 and info["cores_used"] > 0.0
  # Three epochs end long before 10 s of training: nothing is read at any mark.
  assert report["auc_at"][method] == {str(m): None for m in time_to_auc.MARKS}


def test_the_report_has_the_documented_keys(report, tmp_path):
  assert {"shape", "users", "items", "positives", "eval_users", "seconds", "marks", "methods",
          "points", "auc_at"} <= set(report)
  assert report["shape"] == "tiny" and report["eval_users"] == 50
  assert set(report["points"]) == set(report["auc_at"]) == set(report["methods"]) == set(METHODS)
  path = files.write_json_atomic(tmp_path / "tta.json", report)  # JSON-ready as it is
  assert json.loads(path.read_text())["points"] == report["points"]
  text = time_to_auc.markdown(report, "python -m benchmarks.time_to_auc")
  rows = [line for line in text.splitlines() if line.startswith("| ")]
  assert len(rows) == 2 + len(METHODS)  # header, rule, one per method
  assert all(row.count("|") == rows[0].count("|") for row in rows)


def test_auc_at_reads_the_last_epoch_finished_by_each_mark():
  points = [{"seconds": 4.0, "epoch": 1, "auc": 0.6}, {"seconds": 25.0, "epoch": 2, "auc": 0.7},
            {"seconds": 61.0, "epoch": 3, "auc": 0.8}]
  assert time_to_auc.auc_at(points) == {"10": 0.6, "30": 0.7, "60": 0.7, "120": None,
                                        "300": None}
  assert time_to_auc.auc_at(points[2:], marks=(10, 60)) == {"10": None, "60": None}
  assert time_to_auc.auc_at([]) == {str(m): None for m in time_to_auc.MARKS}


def test_a_run_stops_once_its_budget_is_spent():
  curve = time_to_auc.Curve()
  curve.add(0.5, None, None, seconds_budget=1.0, max_epochs=10)
  with pytest.raises(time_to_auc._BudgetSpent):  # pylint: disable=protected-access
    curve.add(1.5, None, None, seconds_budget=1.0, max_epochs=10)
  assert curve.seconds == [0.5, 1.5]


def test_unknown_methods_are_refused():
  with pytest.raises(Exception, match="unknown.*bogus"):
    time_to_auc.run("tiny", ["fused", "bogus"], seconds=1.0, eval_users=5)
