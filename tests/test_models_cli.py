"""End to end: `experiments.train --model=popularity` from smoke.cfg, then recommend/analyze."""

import json

import numpy as np
import pytest

from tripjax import baselines
from tripjax import metrics
from tripjax import train as train_lib

_SMOKE = "--flagfile=experiments/configs/smoke.cfg"


@pytest.fixture(scope="module")
def popularity_run(run_cli, tmp_path_factory):
  """Trains the popularity model (and refuses --model=nope), then asks recommend and analyze."""
  root = tmp_path_factory.mktemp("popularity")
  workdir = root / "run"
  trained = run_cli("experiments.train", {
      "train": [_SMOKE, f"--workdir={workdir}", "--model=popularity"],
      "again": [_SMOKE, f"--workdir={workdir}", "--model=popularity"],
      "nope": [_SMOKE, f"--workdir={root / 'nope'}", "--model=nope"]})
  assert trained["train"].returncode == 0, trained["train"].stderr[-3000:]
  run = train_lib.restore_run(workdir)
  user, title = int(run.dataset.user_ids[0]), str(run.dataset.titles[3])
  asked = run_cli("experiments.recommend", {
      "user": [f"--workdir={workdir}", f"--user={user}", "--k=7", "--format=json"],
      "similar": [f"--workdir={workdir}", f"--similar_to={title}"],
      "liked": [f"--workdir={workdir}", f"--liked={title}"]})
  analyzed = run_cli("experiments.analyze", {"report": [f"--workdir={workdir}"]})
  return workdir, run, trained, asked, analyzed


def test_train_writes_a_popularity_run(popularity_run):
  workdir, run, trained, _, _ = popularity_run
  assert run.config.model == "popularity"
  assert "--model=popularity" in (workdir / "flags.txt").read_text().splitlines()
  results = json.loads((workdir / "results.json").read_text())
  assert results["config"]["model"] == "popularity" and results["steps"] == 0
  # The model is the baseline: the same numbers, bit for bit.
  assert results["model"] == results["popularity"]
  baseline = metrics.evaluate(baselines.popularity_scores(run.train), run.train, run.test)
  assert results["model"]["auc"] == float(baseline.means["auc"])
  assert "AUC" in trained["train"].stdout
  again = trained["again"]  # a finished run is read back, not refitted
  assert again.returncode == 0 and again.stdout == trained["train"].stdout


def test_unknown_model_is_a_one_line_flag_error(popularity_run):
  workdir, _, trained, _, _ = popularity_run
  done = trained["nope"]
  assert done.returncode != 0 and "Traceback" not in done.stderr
  assert "flag --model=nope" in done.stderr and "popularity" in done.stderr
  assert not (workdir.parent / "nope").exists()


def test_recommend_ranks_by_popularity(popularity_run):
  _, run, _, asked, _ = popularity_run
  done = asked["user"]
  assert done.returncode == 0, done.stderr[-3000:]
  got = json.loads(done.stdout)["items"]
  counts = baselines.item_counts(run.train).astype(np.float32)
  unseen = np.setdiff1d(np.arange(run.train.shape[1]), run.train[0].indices)
  want = unseen[np.argsort(-counts[unseen], kind="stable")[:7]]
  assert [r["item_id"] for r in got] == np.asarray(run.dataset.item_ids)[want].tolist()
  assert [r["score"] for r in got] == counts[want].tolist()


@pytest.mark.parametrize("case,message", [
    ("similar", "--similar_to: the popularity model has no item vectors"),
    ("liked", "--liked: the popularity model cannot fold in a new user")])
def test_similar_items_and_fold_in_are_refused_in_one_line(popularity_run, case, message):
  done = popularity_run[3][case]
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert message in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_analyze_reports_the_popularity_run(popularity_run):
  workdir, _, _, _, analyzed = popularity_run
  done = analyzed["report"]
  assert done.returncode == 0, done.stderr[-3000:]
  text = (workdir / "report.md").read_text()
  assert "popularity model" in text and "## Random scores" in text
  assert "untrained" not in text and "## Model vs popularity" in text
  assert "No training history" in text
