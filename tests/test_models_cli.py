"""End to end: `experiments.train --model=popularity` from smoke.cfg, then recommend/analyze."""

import json

import numpy as np
import pytest

from tripjax import baselines
from tripjax import metrics
from tripjax import train as train_lib

_SMOKE = "--flagfile=experiments/configs/smoke.cfg"


_GRAPH_CASES = {"ease": ["--model=ease", "--ease_lambda=50"],
                "rp3beta": ["--model=rp3beta", "--rp3_beta=0.3"],
                "pagerank": ["--model=pagerank", "--pagerank_restart=0.5",
                             "--pagerank_popularity=1.0"],
                "wrong_setting": ["--model=ease", "--pagerank_restart=0.5"],
                "triplet_cold": ["--cold_item_fraction=0.2"]}


@pytest.fixture(scope="module")
def model_runs(run_cli, tmp_path_factory):
  """Every model's run of this file from smoke.cfg, then their recommend and analyze calls: one
  interpreter per script for all of them.

  popularity (trained twice, and --model=nope refused): user, similar and liked requests and a
  report; EASE, RP3beta and personalised PageRank (and a setting of another model refused):
  user and similar requests, and EASE's report.
  """
  root = tmp_path_factory.mktemp("models")
  pop = root / "popularity" / "run"
  cases = {"pop/train": [_SMOKE, f"--workdir={pop}", "--model=popularity"],
           "pop/again": [_SMOKE, f"--workdir={pop}", "--model=popularity"],
           "pop/nope": [_SMOKE, f"--workdir={root / 'popularity' / 'nope'}", "--model=nope"]}
  cases.update({name: [_SMOKE, f"--workdir={root / name}", *flags]
                for name, flags in _GRAPH_CASES.items()})
  trained = run_cli("experiments.train", cases)
  assert trained["pop/train"].returncode == 0, trained["pop/train"].stderr[-3000:]
  pop_run = train_lib.restore_run(pop)
  title = str(pop_run.dataset.titles[3])
  requests = {"pop/user": [f"--workdir={pop}", f"--user={int(pop_run.dataset.user_ids[0])}",
                           "--k=7", "--format=json"],
              "pop/similar": [f"--workdir={pop}", f"--similar_to={title}"],
              "pop/liked": [f"--workdir={pop}", f"--liked={title}"]}
  reports = {"pop/report": [f"--workdir={pop}"]}
  for name in ("ease", "rp3beta", "pagerank"):
    assert trained[name].returncode == 0, trained[name].stderr[-3000:]
    run = train_lib.restore_run(root / name)
    requests[f"{name}/user"] = [f"--workdir={root / name}",
                                f"--user={int(run.dataset.user_ids[0])}", "--k=5",
                                "--format=json"]
    requests[f"{name}/similar"] = [f"--workdir={root / name}",
                                   f"--similar_to={run.dataset.titles[3]}", "--format=json"]
    if name == "ease":  # one report shows analyze works for a model with no vectors
      reports[name] = [f"--workdir={root / name}"]
  assert trained["triplet_cold"].returncode == 0, trained["triplet_cold"].stderr[-3000:]
  cold_run = train_lib.restore_run(root / "triplet_cold")
  cold, warm = (str(cold_run.dataset.titles[i]) for i in
                (cold_run.dataset.cold_items[0], cold_run.train[0].indices[0]))
  for name, flag in (("similar_cold", f"--similar_to={cold}"),
                     ("similar_warm", f"--similar_to={warm}"),
                     ("liked_cold", f"--liked={warm};{cold}")):
    requests[f"triplet_cold/{name}"] = [f"--workdir={root / 'triplet_cold'}", flag]
  answers = run_cli("experiments.recommend", requests)
  analyzed = run_cli("experiments.analyze", reports)
  return root, pop_run, trained, answers, analyzed


@pytest.fixture(scope="module")
def popularity_run(model_runs):
  """(workdir, run, trained, asked, analyzed) of the popularity model."""
  root, run, trained, answers, analyzed = model_runs
  def part(results):
    return {k[len("pop/"):]: v for k, v in results.items() if k.startswith("pop/")}
  return root / "popularity" / "run", run, part(trained), part(answers), part(analyzed)


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


@pytest.fixture(scope="module")
def graph_and_item_runs(model_runs):
  """EASE, RP3beta and personalised PageRank: (root, trained, asked, analyzed)."""
  root, _, trained, answers, done = model_runs
  asked = {name: {"user": answers[f"{name}/user"], "similar": answers[f"{name}/similar"]}
           for name in ("ease", "rp3beta", "pagerank")}
  return root, trained, asked, {"ease": {"report": done["ease"]}}


@pytest.mark.parametrize("name", ["ease", "rp3beta", "pagerank"])
def test_baselines_train_evaluate_recommend_and_report_end_to_end(graph_and_item_runs, name):
  root, _, asked, analyzed = graph_and_item_runs
  results = json.loads((root / name / "results.json").read_text())
  assert results["config"]["model"] == name
  assert results["model"]["auc"] > results["popularity"]["auc"]  # synthetic-tiny
  user = asked[name]["user"]
  assert user.returncode == 0, user.stderr[-2000:]
  assert len(json.loads(user.stdout)["items"]) == 5
  similar = asked[name]["similar"]
  if name != "ease":  # the walk from the item, or W's row, ranks similar items
    assert similar.returncode == 0, similar.stderr[-2000:]
    assert len(json.loads(similar.stdout)["items"]) == 10
  else:  # EASE has no item vectors nor a similar hook yet: one line naming the flag
    assert similar.returncode == 1 and "--similar_to" in similar.stderr
    assert "Traceback" not in similar.stderr
  if name in analyzed:
    assert analyzed[name]["report"].returncode == 0, analyzed[name]["report"].stderr[-2000:]
    assert (root / name / "report.md").exists()


def test_a_setting_of_another_model_is_refused_in_one_line(graph_and_item_runs):
  root, trained, _, _ = graph_and_item_runs
  done = trained["wrong_setting"]
  assert done.returncode != 0 and "Traceback" not in done.stderr
  assert "--pagerank_restart is a setting of --model=pagerank, not of --model=ease" in (
      done.stderr)
  assert not (root / "wrong_setting" / "flags.txt").exists()


def test_an_item_held_out_whole_and_not_placeable_is_refused_in_one_line(model_runs):
  # The triplet model without item features, on a split with cold items: a cold item's own
  # embedding is zero and never trained.
  _, _, _, answers, _ = model_runs
  assert answers["triplet_cold/similar_warm"].returncode == 0
  for name, flag in (("similar_cold", "--similar_to"), ("liked_cold", "--liked")):
    done = answers[f"triplet_cold/{name}"]
    assert done.returncode == 1 and done.stdout == "", done.stderr[-2000:]
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"experiments.recommend: {flag}: ")
    assert "is one of the run's cold items" in done.stderr
    assert done.stderr.endswith("or train with --item_features=genres.\n")
