"""End-to-end tests of `python -m experiments.describe`."""

import os
import pathlib
import subprocess
import sys

import pytest

from tripjax import data

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
  env = dict(os.environ, PYTHONPATH=str(_ROOT))
  return subprocess.run([sys.executable, "-m", "experiments.describe", *args], cwd=_ROOT,
                        env=env, capture_output=True, text=True, timeout=120)


def test_describe_synthetic_tiny_with_flagfile(tmp_path):
  flagfile = tmp_path / "describe.cfg"
  flagfile.write_text("--dataset=synthetic-tiny\n--threshold=4\n--min_user_positives=21\n")
  result = _run(f"--flagfile={flagfile}")
  assert result.returncode == 0, result.stderr
  out = result.stdout
  ds = data.implicit_feedback(*data.load_dataset("synthetic-tiny"), min_user_positives=21)
  assert "min_user_positives 21" in out
  for name, (users, items, entries) in ds.steps.items():
    assert any(line.split() == [name, str(users), str(items), str(entries)]
               for line in out.splitlines()), name
  assert "Statistics before filtering" in out and "Statistics after filtering" in out
  for header in ("nobs", "variance", "skewness", "kurtosis"):
    assert header in out
  ratings, _ = data.load_dataset("synthetic-tiny")
  kept = ratings.user_id.isin(ds.user_ids) & ratings.item_id.isin(ds.item_ids)
  after = out.split("Statistics after filtering")[1].splitlines()
  ratings_line = next(line for line in after if line.startswith("ratings "))
  assert int(ratings_line.split()[1]) == int(kept.sum())


def test_unknown_dataset_lists_names():
  result = _run("--dataset=ml-2k")
  assert result.returncode != 0
  assert "--dataset" in result.stderr and "synthetic-tiny" in result.stderr
  assert "ml-100k" in result.stderr


def test_filter_leaving_no_user_fails_with_counts():
  result = _run("--dataset=synthetic-tiny", "--min_user_positives=1000")
  assert result.returncode != 0
  assert "min_user_positives: 0 users" in result.stderr
