"""End-to-end tests of `python -m experiments.describe`."""

import pytest

from tripjax import data


@pytest.fixture(scope="module")
def described(run_cli, tmp_path_factory):
  """The three command lines below, in one interpreter (`run_cli`)."""
  flagfile = tmp_path_factory.mktemp("describe") / "describe.cfg"
  flagfile.write_text("--dataset=synthetic-tiny\n--threshold=4\n--min_user_positives=21\n")
  return run_cli("experiments.describe", {
      "flagfile": [f"--flagfile={flagfile}"],
      "unknown": ["--dataset=ml-2k"],
      "no_user": ["--dataset=synthetic-tiny", "--min_user_positives=1000"]})


def test_describe_synthetic_tiny_with_flagfile(described):
  result = described["flagfile"]
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


def test_unknown_dataset_lists_names(described):
  result = described["unknown"]
  assert result.returncode != 0
  assert "--dataset" in result.stderr and "synthetic-tiny" in result.stderr
  assert "ml-100k" in result.stderr


def test_filter_leaving_no_user_fails_with_counts(described):
  result = described["no_user"]
  assert result.returncode != 0
  assert "min_user_positives: 0 users" in result.stderr
