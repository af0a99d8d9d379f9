"""benchmarks.gpu_summary on fake gpu.sh outputs: headline figures, test counts, broken runs."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import gpu_summary

REPO = pathlib.Path(__file__).resolve().parents[1]

_JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
<testsuite name="pytest" errors="0" failures="1" skipped="2" tests="10" time="12.5">
<testcase classname="tests.test_metrics" name="test_auc[ties]" time="0.1">
<failure message="assert 0.5 == 0.6">...</failure></testcase>
<testcase classname="tests.test_model" name="test_scores" time="0.2" />
</testsuite></testsuites>"""


def _write(folder: pathlib.Path, name: str, payload) -> None:
  path = folder / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(payload if isinstance(payload, str) else json.dumps(payload))


def _step(batch, optimizer, rate, dim=64):
  return {"step": "make_train_step", "optimizer": optimizer, "batch_size": batch, "dim": dim,
          "shape": "ml-20m", "triplets_per_s": rate}


@pytest.fixture
def gpu_run(tmp_path):
  """A folder as gpu.sh leaves it after a GPU run whose tests had one failure."""
  steps = [{"step": "install", "rc": 0, "seconds": 3.1, "timeout_s": 90, "timed_out": False},
           {"step": "tests", "rc": 1, "seconds": 150.2, "timeout_s": 200, "timed_out": False},
           {"step": "eval_speed", "rc": None, "seconds": 0, "timeout_s": 0, "skipped": True,
            "reason": "sklearn is not installed"}]
  _write(tmp_path, "steps.jsonl", "".join(json.dumps(s) + "\n" for s in steps))
  _write(tmp_path, "devices.json", {"backend": "gpu", "devices": ["cuda:0"], "jax": "0.10.2",
                                    "device_kind": "NVIDIA H200"})
  _write(tmp_path, "pytest_junit.xml", _JUNIT)
  _write(tmp_path, "logs/tests.log", "..F..\n1 failed, 7 passed, 2 skipped in 12.50s\n")
  _write(tmp_path, "throughput_large_batch.json", {
      "shape": "ml-20m",
      "steps": [_step(65536, "sparse_sgd", 2.5e8), _step(262144, "sparse_sgd", 4.2e8),
                _step(262144, "sparse_adam", 1.5e8)],
      "epochs": [{"epoch_triplets_per_s": 2e8, "shape": "ml-20m", "batch_size": 262144,
                  "optimizer": "sparse_sgd", "sampling_share": 0.3}]})
  # A faster row at another dim is not the dim-64 figure.
  _write(tmp_path, "throughput.json", {"steps": [_step(4096, "sparse_sgd", 1e8),
                                                 _step(4096, "sparse_sgd", 9e8, dim=32)]})
  _write(tmp_path, "eval_all_users.json", {
      "shape": "ml-20m", "users": 138_000, "items": 27_000,
      "runs": [{"block_size": 4096, "first_call_s": 5.0, "median_s": 3.0, "mean_auc": 0.5},
               {"block_size": 16384, "first_call_s": 4.0, "median_s": 2.0, "mean_auc": 0.5}]})
  _write(tmp_path, "topk_speed.json", {
      "shape": {"users": 138_000, "items": 27_000, "dim": 64, "k": 20},
      "runs": [{"batch_size": 4096, "median_s_all_users": 1.5, "median_s_per_1000_users": 0.011},
               {"batch_size": 16384, "median_s_all_users": 1.2,
                "median_s_per_1000_users": 0.0087}]})
  return tmp_path


def test_headline_figures_against_the_bandwidth_limit(gpu_run):
  out = gpu_summary.summarize(gpu_run, total_s=401.0)
  throughput = out["throughput"]
  assert (throughput["triplets_per_s"], throughput["batch_size"], throughput["optimizer"]) == (
      4.2e8, 262144, "sparse_sgd")
  assert throughput["source"] == "throughput_large_batch.json"
  assert out["fraction_of_bandwidth_limit"] == throughput["fraction_of_bandwidth_limit"]
  assert throughput["fraction_of_bandwidth_limit"] == pytest.approx(0.42)
  assert throughput["target_met"] is True
  assert throughput["epoch_with_sampling"]["epoch_triplets_per_s"] == 2e8
  evaluation = out["evaluation"]
  assert (evaluation["seconds_all_users"], evaluation["block_size"]) == (2.0, 16384)
  assert evaluation["first_call_s"] == 4.0 and evaluation["target_met"] is True
  floor = 2 * 4 * 138_000 * 27_000 / 4.8e12  # the score matrix written and read once
  assert evaluation["seconds_at_bandwidth_limit"] == pytest.approx(floor)
  assert evaluation["fraction_of_bandwidth_limit"] == pytest.approx(floor / 2.0)
  assert "ml1m_speedup_vs_lab_loop" not in evaluation  # eval_speed was skipped
  assert (out["topk"]["seconds_all_users"], out["topk"]["batch_size"]) == (1.2, 16384)
  assert out["devices"]["backend"] == "gpu" and out["total_s"] == 401.0


def test_steps_and_test_counts(gpu_run):
  out = gpu_summary.summarize(gpu_run)
  assert out["steps"]["install"] == {"rc": 0, "seconds": 3.1, "timeout_s": 90,
                                     "timed_out": False}
  assert out["failed_steps"] == ["tests"] and out["skipped_steps"] == ["eval_speed"]
  tests = out["tests"]
  assert {k: tests[k] for k in ("passed", "failed", "errors", "skipped", "total")} == {
      "passed": 7, "failed": 1, "errors": 0, "skipped": 2, "total": 10}
  assert tests["failed_tests"] == ["tests.test_metrics::test_auc[ties]"]
  assert tests["seconds"] == 12.5 and tests["interrupted"] is False


def test_counts_from_the_log_without_junit(gpu_run):
  (gpu_run / "pytest_junit.xml").unlink()
  _write(gpu_run, "logs/tests.log", "!!! KeyboardInterrupt !!!\n"
         "2 failed, 40 passed, 3 skipped, 1 error in 199.87s (0:03:19)\n")
  tests = gpu_summary.summarize(gpu_run)["tests"]
  assert {k: tests[k] for k in ("passed", "failed", "errors", "skipped", "total")} == {
      "passed": 40, "failed": 2, "errors": 1, "skipped": 3, "total": 46}
  assert tests["seconds"] == 199.87 and tests["interrupted"] is True


def test_small_shapes_leave_the_targets_open(gpu_run):
  _write(gpu_run, "throughput_large_batch.json", {
      "shape": "ml-100k", "steps": [dict(_step(4096, "sparse_sgd", 5e6), shape="ml-100k")]})
  (gpu_run / "throughput.json").unlink()
  _write(gpu_run, "eval_all_users.json", {
      "shape": "ml-1m", "users": 5180, "items": 3526,
      "runs": [{"block_size": 1024, "first_call_s": 2.0, "median_s": 0.5}]})
  out = gpu_summary.summarize(gpu_run, quick=True)
  assert out["throughput"]["shape"] == "ml-100k" and out["throughput"]["target_met"] is None
  assert out["fraction_of_bandwidth_limit"] == pytest.approx(5e-3)
  assert out["evaluation"]["target_met"] is None and out["quick"] is True


def test_missing_or_broken_files_are_reported_not_raised(tmp_path):
  _write(tmp_path, "devices.json", "{not json")
  out = gpu_summary.summarize(tmp_path)
  for section in ("devices", "steps", "tests", "throughput", "evaluation", "topk"):
    assert "error" in out[section], section
  assert out["fraction_of_bandwidth_limit"] is None and out["failed_steps"] == []


def test_main_prints_the_summary(gpu_run):
  done = subprocess.run(
      [sys.executable, "-m", "benchmarks.gpu_summary", f"--gpu_dir={gpu_run}",
       "--gpu_total_s=12.5"], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
      capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  out = json.loads(done.stdout)
  assert out["total_s"] == 12.5 and out["throughput"]["triplets_per_s"] == 4.2e8


def test_a_throughput_sweep_stopped_at_its_limit_is_read_from_its_partial_file(gpu_run):
  # benchmarks.throughput keeps a sweep's finished shapes in throughput.partial.json and
  # replaces throughput.json only when the sweep ends.
  (gpu_run / "throughput_large_batch.json").unlink()
  (gpu_run / "throughput.json").rename(gpu_run / "throughput.partial.json")
  out = gpu_summary.summarize(gpu_run)
  assert out["throughput"]["triplets_per_s"] == 1e8
