"""benchmarks.kernel_ab: two builds of a CPU kernel (the fused step, the negatives' search)
timed side by side in one process."""

import json
import pathlib

import jax
import pytest

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU kernel")


_KERNELS = pathlib.Path(__file__).resolve().parents[1] / "tripjax/kernels"
_SOURCE = _KERNELS / "triplet_sgd_cpu.cc"
_HINGE = "std::max(cos_n - cos_p + margin, 0.0f)"
_SEARCH = _KERNELS / "missing_items_cpu.cc"
_ITEM = "out[q] = x + static_cast<int32_t>(count);"  # the uniform draw's item
_SHUFFLE = _KERNELS / "shuffle_cpu.cc"
_SWAP = "const int64_t r = (word * static_cast<uint64_t>(j + 1)) >> 32;"  # Fisher-Yates' pick


def _variant(tmp_path, source: pathlib.Path, old: str, new: str) -> pathlib.Path:
  """A copy of the kernel `source` in tmp_path/other/ with its one `old` replaced by `new`."""
  text = source.read_text()
  assert text.count(old) == 1
  path = tmp_path / "other" / source.name
  path.parent.mkdir()
  path.write_text(text.replace(old, new))
  return path


def _assert_one_line_each(done: dict, says: dict) -> None:
  """Each named run failed with one line on stderr, from kernel_ab, holding its text."""
  for case, text in says.items():
    failed = done[case]
    assert failed.returncode != 0 and failed.stderr.count("\n") == 1, failed.stderr[-2000:]
    assert failed.stderr.startswith("benchmarks.kernel_ab: ") and text in failed.stderr, case


def test_the_same_kernel_twice_trains_the_same_tables(run_cli, tmp_path):
  """The working tree's kernel as its own baseline: two libraries, the same arithmetic, so the
  tables after the same epochs agree exactly; a baseline whose hinge differs trains other
  tables (the two builds are not mixed up); bad baselines are one line."""
  out, other_out = tmp_path / "ab.json", tmp_path / "other.json"
  other = _variant(tmp_path, _SOURCE, _HINGE, "std::max(cos_n - cos_p + 0.5f * margin, 0.0f)")
  (tmp_path / "no_handler.cc").write_text("int not_a_kernel = 1;\n")
  (tmp_path / "broken.cc").write_text("this is not C++\n")
  done = run_cli("benchmarks.kernel_ab", {
      "broken": [f"--baseline_source={tmp_path / 'broken.cc'}", "--shapes=ml-100k"],
      "same": [f"--baseline_source={_SOURCE}", "--shapes=ml-100k",
               "--margins=0.5,0.1", "--reps=1", f"--out={out}"],
      "other": [f"--baseline_source={other}", "--shapes=ml-100k", "--margins=0.5", "--reps=1",
                f"--out={other_out}"],
      "no_handler": [f"--baseline_source={tmp_path / 'no_handler.cc'}", "--shapes=ml-100k"],
      "no_baseline": ["--shapes=ml-100k"],
      "bad_rev": ["--baseline_rev=no-such-revision", "--shapes=ml-100k"],
      "bad_shape": ["--baseline_rev=HEAD", "--shapes=ml-5k"]})
  assert done["same"].returncode == 0, done["same"].stderr[-3000:]
  result = json.loads(out.read_text())
  assert [(r["shape"], r["margin"]) for r in result["results"]] == [("ml-100k", 0.5),
                                                                   ("ml-100k", 0.1)]
  for row in result["results"]:
    assert row["max_table_difference"] == 0.0
    assert 0.0 < row["active"] <= 1.0 and row["baseline_s"] > 0 and row["candidate_s"] > 0
  lower_margin = result["results"][1]["active"]
  assert lower_margin < result["results"][0]["active"]  # the margin sets the active share
  assert done["other"].returncode == 0, done["other"].stderr[-3000:]
  assert json.loads(other_out.read_text())["results"][0]["max_table_difference"] > 1e-4
  _assert_one_line_each(done, {"no_baseline": "--baseline_rev", "bad_rev": "no-such-revision",
                              "bad_shape": "ml-5k", "no_handler": "no TripletSgdUpdate",
                              "broken": "failed"})


def test_the_search_kernel_against_itself_and_another(run_cli, tmp_path):
  """--kernel=missing_items: the working tree's search as its own baseline draws the same
  negatives, uniform and weighted; a baseline whose uniform draw is off by one item does not
  (the builds are not mixed up); a library without the search's handlers is one line."""
  out, other_out = tmp_path / "ab.json", tmp_path / "other.json"
  other = _variant(tmp_path, _SEARCH, _ITEM, "out[q] = x + static_cast<int32_t>(count) + 1;")
  (tmp_path / "no_handler.cc").write_text("int not_a_kernel = 1;\n")
  done = run_cli("benchmarks.kernel_ab", {
      "same": ["--kernel=missing_items", f"--baseline_source={_SEARCH}", "--shapes=ml-100k",
               "--exponents=0,0.5", "--reps=1", f"--out={out}"],
      "other": ["--kernel=missing_items", f"--baseline_source={other}", "--shapes=ml-100k",
                "--exponents=0", "--reps=1", f"--out={other_out}"],
      "no_handler": ["--kernel=missing_items",
                     f"--baseline_source={tmp_path / 'no_handler.cc'}", "--shapes=ml-100k"],
      "bad_exponent": ["--kernel=missing_items", "--baseline_rev=HEAD", "--exponents=x"],
      "no_exponent": ["--kernel=missing_items", "--baseline_rev=HEAD", "--exponents="],
      "step_flag": ["--kernel=missing_items", "--baseline_rev=HEAD", "--margins=0.5"],
      "no_shape": ["--kernel=missing_items", "--baseline_rev=HEAD", "--shapes="]})
  assert done["same"].returncode == 0, done["same"].stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["kernel"] == "missing_items" and "--kernel=missing_items" in result["command"]
  assert [(r["shape"], r["exponent"], r["same_items"]) for r in result["results"]] == [
      ("ml-100k", 0.0, True), ("ml-100k", 0.5, True)]
  for row in result["results"]:
    assert row["searches"] > 0 and row["baseline_s"] > 0 and row["candidate_s"] > 0
  assert done["other"].returncode == 0, done["other"].stderr[-3000:]
  assert json.loads(other_out.read_text())["results"][0]["same_items"] is False
  _assert_one_line_each(done, {"no_handler": "no MissingItems handler",
                              "bad_exponent": "--exponents=x",
                              "no_exponent": "--exponents is empty",
                              "step_flag": "--margins is not used", "no_shape": "--shapes: empty"})


def test_the_shuffle_kernel_against_itself_and_another(run_cli, tmp_path):
  """--kernel=shuffle: the working tree's shuffle as its own baseline lays out the same batches
  at every layout timed; a baseline whose swaps differ does not."""
  out, other_out = tmp_path / "ab.json", tmp_path / "other.json"
  other = _variant(tmp_path, _SHUFFLE, _SWAP,
                   "const int64_t r = (word * static_cast<uint64_t>(j)) >> 32;")
  done = run_cli("benchmarks.kernel_ab", {
      "same": ["--kernel=shuffle", f"--baseline_source={_SHUFFLE}", "--shapes=ml-100k",
               "--negatives=1,3", "--reps=1", f"--out={out}"],
      "other": ["--kernel=shuffle", f"--baseline_source={other}", "--shapes=ml-100k",
                "--negatives=1", "--reps=1", f"--out={other_out}"],
      "no_negatives": ["--kernel=shuffle", "--baseline_rev=HEAD", "--negatives=0"]})
  assert done["same"].returncode == 0, done["same"].stderr[-3000:]
  result = json.loads(out.read_text())
  assert [(r["negatives"], r["same_triplets"]) for r in result["results"]] == [(1, True),
                                                                             (3, True)]
  assert done["other"].returncode == 0, done["other"].stderr[-3000:]
  assert json.loads(other_out.read_text())["results"][0]["same_triplets"] is False
  _assert_one_line_each(done, {"no_negatives": "--negatives=0"})
