"""End-to-end tests of `python -m experiments.recommend` on the session's smoke.cfg run."""

import dataclasses
import json
import re
import shutil

import jax
import numpy as np

import pytest

from tripjax import model
from tripjax import recommend


CASES = {
    "user_json": ["--user={user}", "--k=7", "--format=json"],
    "similar_table": ["--similar_to={title}"],
    "liked_json": ["--liked={liked}", "--k=6", "--format=json"],
    "unknown_user": ["--user=987654321"],
    "unknown_title": ["--similar_to=No Such Film Anywhere"],
    "k_too_big": ["--similar_to={title}", "--k=100000"],
    "two_modes": ["--user={user}", "--similar_to={title}"],
    "no_checkpoint": ["--user=1"],
    "user_penalized": ["--user={user}", "--k=7", "--format=json"],
    "liked_penalized": ["--liked={liked}", "--k=6", "--format=json"],
}


@pytest.fixture(scope="module")
def cli(smoke_run, run_cli, tmp_path_factory):
  """Runs every case in CASES once (one interpreter, tests/cli_driver.py) on the smoke run."""
  workdir, _ = smoke_run
  from tripjax import train  # pylint: disable=g-import-not-at-top
  run = train.restore_run(workdir)
  titles = [str(t) for t in run.dataset.titles]
  values = {"user": int(run.dataset.user_ids[0]), "title": titles[3],
            "liked": ";".join(titles[i] for i in run.train[0].indices[:5])}
  empty = tmp_path_factory.mktemp("not_a_run")
  # The same parameters with a popularity penalty in the run's config: scoring only, no
  # retraining.
  penalized = tmp_path_factory.mktemp("penalized") / "run"
  shutil.copytree(workdir, penalized)
  from tripjax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  workdir_lib.write_config(dataclasses.replace(run.config, popularity_penalty=0.5), penalized)
  dirs = {"no_checkpoint": empty, "user_penalized": penalized, "liked_penalized": penalized}
  cases = {name: [f"--workdir={dirs.get(name, workdir)}", *[a.format(**values) for a in args]]
           for name, args in CASES.items()}
  return run, values, run_cli("experiments.recommend", cases)


def test_user_recommendations_json(cli):
  run, values, results = cli
  done = results["user_json"]
  assert done.returncode == 0, done.stderr[-3000:]
  answer = json.loads(done.stdout)
  assert answer["query"]["user"] == values["user"] and answer["query"]["k"] == 7
  items = answer["items"]
  assert [r["rank"] for r in items] == list(range(1, 8))
  scores = [r["score"] for r in items]
  assert scores == sorted(scores, reverse=True)
  ids = list(run.dataset.item_ids)
  seen = set(run.train[0].indices.tolist())
  test = set(run.test[0].indices.tolist())
  for row in items:
    item = ids.index(row["item_id"])
    assert item not in seen
    assert row["title"] == str(run.dataset.titles[item])
    assert row["in_test"] == (item in test)


def test_similar_items_table(cli):
  run, values, results = cli
  done = results["similar_table"]
  assert done.returncode == 0, done.stderr[-3000:]
  lines = done.stdout.strip().splitlines()
  assert lines[0] == f"similar_to: {values['title']}, k: 10"
  assert lines[1].split() == ["rank", "item_id", "title", "genres", "score"]
  assert len(lines) == 2 + 10  # default k for --similar_to
  body = "\n".join(lines[2:])
  assert values["title"] not in body
  item = [str(t) for t in run.dataset.titles].index(values["title"])
  expected, _ = recommend.similar_items(run.params, item, k=10)
  for rank, (line, neighbour) in enumerate(zip(lines[2:], expected), 1):
    assert line.split()[:2] == [str(rank), str(run.dataset.item_ids[neighbour])]


def test_fold_in_json(cli):
  _, values, results = cli
  done = results["liked_json"]
  assert done.returncode == 0, done.stderr[-3000:]
  answer = json.loads(done.stdout)
  liked = values["liked"].split(";")
  assert answer["query"]["liked"] == liked
  titles = [r["title"] for r in answer["items"]]
  assert len(titles) == 6 and not set(titles) & set(liked)


@pytest.mark.parametrize("case,message", [
    ("unknown_user", r"unknown user id 987654321: the dataset keeps \d+ users"),
    ("unknown_title", "no item title matches 'No Such Film Anywhere'"),
    ("k_too_big", r"k=100000 is larger than the catalogue"),
    ("two_modes", "give exactly one of --user, --similar_to, --liked"),
    ("no_checkpoint", "not a tripjax training folder"),
])
def test_bad_input_is_one_clear_line(cli, case, message):
  done = cli[2][case]
  assert done.returncode == 1
  assert "Traceback" not in done.stderr
  assert re.search(message, done.stderr), done.stderr[-2000:]


def test_penalized_run_ranks_with_its_popularity_offset(cli):
  run, values, results = cli
  offset = model.popularity_offset(run.train, 0.5)
  ids = np.asarray(run.dataset.item_ids)
  done = results["user_penalized"]
  assert done.returncode == 0, done.stderr[-3000:]
  got = json.loads(done.stdout)["items"]
  items, scores = recommend.top_k(run.params, np.array([0]), k=7, exclude=run.train,
                                  item_offset=offset)
  assert [r["item_id"] for r in got] == ids[items[0]].tolist()
  np.testing.assert_allclose([r["score"] for r in got], scores[0], atol=1e-5)
  plain = json.loads(results["user_json"].stdout)["items"]
  assert [r["item_id"] for r in got] != [r["item_id"] for r in plain]
  done = results["liked_penalized"]
  assert done.returncode == 0, done.stderr[-3000:]
  liked = [recommend.find_item(run.dataset.titles, t)
           for t in recommend.split_titles(values["liked"])]
  vec = recommend.fold_in(run.params, liked, jax.random.key(0), steps=200,
                          margin=run.config.margin)
  items, _ = recommend.top_k_for_vectors(run.params, vec, k=6, exclude=np.unique(liked),
                                         item_offset=offset)
  assert [r["item_id"] for r in json.loads(done.stdout)["items"]] == ids[items].tolist()
