"""End-to-end tests of `python -m experiments.recommend` on the session's smoke.cfg run."""

import json
import re

import pytest

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
  cases = {name: [f"--workdir={empty if name == 'no_checkpoint' else workdir}",
                  *[a.format(**values) for a in args]] for name, args in CASES.items()}
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
