"""benchmarks/end_to_end.py: a run's phases, peak memory and metrics, as recorded."""

import pytest

from benchmarks import end_to_end


def _results(**phases):
  return {"dataset": {"name": "synthetic-tiny", "users": 3}, "config": {"epochs": 1},
          "phase_seconds": phases, "triplets_per_sec": 10.0, "backend": "cpu",
          "model": {"auc": 0.9, "precision@20": 0.1, "recall@20": 0.2, "ndcg@20": 0.3,
                    "hit@20": 0.5},
          "popularity": {"auc": 0.8, "ndcg@20": 0.1, "recall@20": 0.1}}


@pytest.mark.parametrize("peak_gib,under", [(7.5, True), (8.5, False)])
def test_summary_holds_the_peak_against_the_limit(peak_gib, under):
  record = end_to_end.summary(_results(data=1.0, train=2.0), int(peak_gib * 2**30), 5.0, 8.0)
  assert record["under_limit"] is under
  assert record["peak_rss_gib"] == pytest.approx(peak_gib)
  assert record["phase_seconds"] == {"data": 1.0, "train": 2.0}
  assert record["model"] == {"auc": 0.9, "precision@20": 0.1, "recall@20": 0.2, "ndcg@20": 0.3}
  assert record["popularity"] == {"auc": 0.8, "ndcg@20": 0.1}


def test_a_failed_run_is_one_line(tmp_path):
  bad = tmp_path / "bad.cfg"
  bad.write_text("--dataset=synthetic-tiny\n--epochs=0\n")
  with pytest.raises(Exception, match="the training run failed: .*--epochs"):
    end_to_end.run(str(bad), [], 8.0)
