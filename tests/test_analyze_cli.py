"""End-to-end test of `python -m experiments.analyze` on the session's smoke.cfg run."""

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def penalized_run(tmp_path_factory):
  """smoke.cfg trained again with --popularity_penalty=0.05 (in this process: a few seconds)."""
  from tripjax import config  # pylint: disable=g-import-not-at-top
  from tripjax import train  # pylint: disable=g-import-not-at-top
  smoke = config.TrainConfig.from_flagfile(REPO / "experiments/configs/smoke.cfg",
                                           ignore=config.DRIVER_FLAGS)
  workdir = tmp_path_factory.mktemp("penalized") / "run"
  train.train_and_evaluate(dataclasses.replace(smoke, popularity_penalty=0.05), workdir)
  return workdir


@pytest.fixture(scope="module")
def analyzed(smoke_run, penalized_run, run_cli, tmp_path_factory):
  """The reports of the smoke run and of the penalized run, and analyze on a workdir without a
  checkpoint (one process). The smoke run is copied: xdist's workers share it, and analyze
  writes into the run's folder."""
  workdir = tmp_path_factory.mktemp("analyzed") / "run"
  shutil.copytree(smoke_run[0], workdir)
  no_checkpoint = tmp_path_factory.mktemp("no_checkpoint")
  (no_checkpoint / "flags.txt").write_text("--dataset=synthetic-tiny\n")
  results = run_cli("experiments.analyze", {"report": [f"--workdir={workdir}"],
                                            "penalized": [f"--workdir={penalized_run}"],
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


def _model_row_auc(text):
  model_row = next(line for line in text.splitlines() if line.startswith("| model |"))
  return float(model_row.split("|")[2])


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


def test_penalized_run_is_evaluated_and_reported_with_its_offset(analyzed, penalized_run):
  from tripjax import metrics  # pylint: disable=g-import-not-at-top
  from tripjax import model  # pylint: disable=g-import-not-at-top
  from tripjax import train  # pylint: disable=g-import-not-at-top
  _, _, results = analyzed
  done = results["penalized"]
  assert done.returncode == 0, done.stderr[-3000:]
  saved = json.loads((penalized_run / "results.json").read_text())
  text = (penalized_run / "report.md").read_text()
  assert _model_row_auc(text) == pytest.approx(saved["model"]["auc"], abs=1e-4)
  assert "scores - 0.05 * z(log(1 + item count))" in text
  # results.json holds the penalized score's AUC, not the cosine's.
  run = train.restore_run(penalized_run)
  assert run.config.popularity_penalty == 0.05
  offset = model.popularity_offset(run.train, 0.05)
  with_offset = metrics.evaluate(model.score_fn(run.params, offset), run.train, run.test)
  cosine = metrics.evaluate(model.score_fn(run.params), run.train, run.test)
  assert saved["model"]["auc"] == pytest.approx(float(with_offset.means["auc"]), abs=1e-6)
  assert not np.array_equal(np.asarray(with_offset.auc), np.asarray(cosine.auc))
