"""End-to-end test of `python -m experiments.analyze` on the session's smoke.cfg run."""

import json

import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def analyzed(smoke_run, run_cli, tmp_path_factory):
  """The report of the smoke run, and analyze on a workdir without a checkpoint (one process)."""
  workdir, _ = smoke_run
  no_checkpoint = tmp_path_factory.mktemp("no_checkpoint")
  (no_checkpoint / "flags.txt").write_text("--dataset=synthetic-tiny\n")
  results = run_cli("experiments.analyze", {"report": [f"--workdir={workdir}"],
                                            "no_checkpoint": [f"--workdir={no_checkpoint}"]})
  return workdir, no_checkpoint, results


def test_report_and_every_figure_written(analyzed):
  workdir, _, results = analyzed
  done = results["report"]
  assert done.returncode == 0, done.stderr[-3000:]
  text = (workdir / "report.md").read_text()
  for section in ("## Random and untrained scores", "## Model vs popularity",
                  "## The best and the worst user", "## Training"):
    assert section in text
  figures = sorted((workdir / "figures").iterdir())
  assert [f.name for f in figures] == sorted(["training_curves.png", "auc_histogram.png",
                                              "roc_best_worst.png",
                                              "auc_vs_train_positives.png"])
  for figure in figures:
    data = figure.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC), figure
    assert f"figures/{figure.name}" in text


def test_report_numbers_match_the_run(analyzed):
  workdir, _, _ = analyzed
  results = json.loads((workdir / "results.json").read_text())
  text = (workdir / "report.md").read_text()
  model_row = next(line for line in text.splitlines() if line.startswith("| model |"))
  assert float(model_row.split("|")[2]) == pytest.approx(results["model"]["auc"], abs=1e-4)
  popularity_row = next(line for line in text.splitlines() if line.startswith("| popularity |"))
  assert float(popularity_row.split("|")[2]) == pytest.approx(results["popularity"]["auc"],
                                                             abs=1e-4)


def test_workdir_without_checkpoint(analyzed):
  _, no_checkpoint, results = analyzed
  done = results["no_checkpoint"]
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert f"{no_checkpoint} has no finished checkpoint" in done.stderr, done.stderr[-2000:]
