"""End-to-end test of `python -m experiments.analyze` on a smoke.cfg training run."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(*args, timeout=240):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, text=True,
                        capture_output=True, timeout=timeout, check=False)


def smoke_workdir(tmp_path_factory) -> pathlib.Path:
  """A finished smoke.cfg run, trained once per test session (later callers reuse it)."""
  workdir = tmp_path_factory.getbasetemp() / "smoke_run"
  if not (workdir / "results.json").exists():
    done = _run("experiments.train", "--flagfile=experiments/configs/smoke.cfg",
                f"--workdir={workdir}")
    assert done.returncode == 0, done.stderr[-3000:]
  return workdir


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
  workdir = smoke_workdir(tmp_path_factory)
  done = _run("experiments.analyze", f"--workdir={workdir}")
  return workdir, done


def test_report_and_every_figure_written(analyzed):
  workdir, done = analyzed
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
  workdir, _ = analyzed
  import json  # pylint: disable=g-import-not-at-top
  results = json.loads((workdir / "results.json").read_text())
  text = (workdir / "report.md").read_text()
  model_row = next(line for line in text.splitlines() if line.startswith("| model |"))
  assert float(model_row.split("|")[2]) == pytest.approx(results["model"]["auc"], abs=1e-4)
  popularity_row = next(line for line in text.splitlines() if line.startswith("| popularity |"))
  assert float(popularity_row.split("|")[2]) == pytest.approx(results["popularity"]["auc"],
                                                             abs=1e-4)


def test_workdir_without_checkpoint(tmp_path):
  (tmp_path / "flags.txt").write_text("--dataset=synthetic-tiny\n")
  done = _run("experiments.analyze", f"--workdir={tmp_path}")
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert f"{tmp_path} has no finished checkpoint" in done.stderr, done.stderr[-2000:]
