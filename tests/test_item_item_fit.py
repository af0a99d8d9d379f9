"""Smoke test of benchmarks/item_item_fit.py at a tiny shape (the real run is ML-20M's)."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_tiny_run_writes_times_and_peak_memory(tmp_path):
  out = tmp_path / "fit.json"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [sys.executable, "-m", "benchmarks.item_item_fit", "--users=300", "--items=200",
       "--positives=3000", "--repeats=2", f"--out_json={out}"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  d = json.loads(out.read_text())
  assert d["command"] == ("python -m benchmarks.item_item_fit --users=300 --items=200 "
                          f"--positives=3000 --repeats=2 --out_json={out}")
  assert (d["shape"]["users"], d["shape"]["items"]) == (300, 200)
  assert 2900 <= d["shape"]["positives"] <= 3000
  assert d["baseline"]["peak_rss_mib"] > 0
  assert [m["model"] for m in d["models"]] == ["ease", "rp3beta", "itemknn"]
  for m in d["models"]:
    assert "error" not in m, m
    assert len(m["runs_s"]) == 2 and all(t > 0 for t in m["runs_s"]) and m["fit_s"] > 0
    assert m["peak_rss_mib"] > 0 and m["peak_rss_mib"] >= d["baseline"]["peak_rss_mib"] * 0.9
    assert m["fit_rss_mib"] == m["peak_rss_mib"] - d["baseline"]["peak_rss_mib"]
  ease = d["models"][0]
  assert ease["settings"] == "lambda 1000" and ease["ease_needs_bytes"] == 4 * 4 * 200**2
  assert "alpha 0.75, beta 0.7" in d["models"][1]["settings"]


def test_ease_over_its_memory_limit_is_recorded_not_raised(tmp_path):
  out = tmp_path / "fit.json"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [sys.executable, "-m", "benchmarks.item_item_fit", "--users=50", "--items=40",
       "--positives=400", "--models=ease", "--ease_memory_limit_gib=0.00001",
       f"--out_json={out}"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  (ease,) = json.loads(out.read_text())["models"]
  assert ease["fit_s"] is None and ease["runs_s"] == []
  assert ease["error"].startswith("ResourceExhausted: --model=ease: 40 items need")
  assert "\n" not in ease["error"]
  assert ease["ease_needs_bytes"] == 4 * 4 * 40**2
  assert ease["ease_memory_limit_bytes"] == int(0.00001 * 2**30)


def test_merge_replaces_the_rows_of_the_other_runs_models(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")

  def run(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.item_item_fit", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600, check=False)

  base, new = tmp_path / "base.json", tmp_path / "new.json"
  shape = ["--users=60", "--items=30", "--positives=300"]
  # The base run's EASE is refused (its limit); the new run's fits.
  for out, extra in ((base, ["--models=rp3beta,ease", "--ease_memory_limit_gib=0.00001"]),
                     (new, ["--models=ease"])):
    done = run(*shape, *extra, f"--out_json={out}")
    assert done.returncode == 0, done.stderr[-3000:]
  before, after = json.loads(base.read_text()), json.loads(new.read_text())
  assert "error" in before["models"][1] and "error" not in after["models"][0]
  done = run(f"--merge={new}", f"--out_json={base}")
  assert done.returncode == 0, done.stderr[-3000:]
  merged = json.loads(base.read_text())
  assert [m["model"] for m in merged["models"]] == ["ease", "rp3beta"]  # MODELS' order
  assert merged["models"][0] == {**after["models"][0], "command": after["command"],
                                 "baseline": after["baseline"],
                                 "environment": after["environment"]}
  assert merged["models"][1] == before["models"][0]
  assert {k: v for k, v in merged.items() if k != "models"} == {
      k: v for k, v in before.items() if k != "models"}
  # Another shape is refused in one line, and the file is left as it was.
  other = tmp_path / "other.json"
  done = run("--users=61", "--items=30", "--positives=300", "--models=ease", f"--out_json={other}")
  assert done.returncode == 0, done.stderr[-3000:]
  done = run(f"--merge={other}", f"--out_json={base}")
  assert done.returncode != 0 and "cannot merge runs of different shapes" in done.stderr
  assert json.loads(base.read_text()) == merged
