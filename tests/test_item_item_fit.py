"""Smoke test of benchmarks/item_item_fit.py at a tiny shape (the real run is ML-20M's)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import item_item_merge

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_tiny_run_writes_times_and_peak_memory_and_records_a_refused_fit(tmp_path):
  # EASE is held to a limit below its 4 [I, I] matrices: its row records the refusal (one
  # line) and the other model still runs, in its own child process (--models leaves out
  # itemknn, whose row is made the same way).
  out = tmp_path / "fit.json"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  flags = ["--users=300", "--items=200", "--positives=3000", "--repeats=1",
           "--models=ease,rp3beta", "--ease_memory_limit_gib=1e-05", f"--out_json={out}"]
  done = subprocess.run([sys.executable, "-m", "benchmarks.item_item_fit", *flags],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                        check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  d = json.loads(out.read_text())
  assert d["command"] == "python -m benchmarks.item_item_fit " + " ".join(flags)
  assert (d["shape"]["users"], d["shape"]["items"]) == (300, 200)
  assert 2900 <= d["shape"]["positives"] <= 3000
  assert d["baseline"]["peak_rss_mib"] > 0
  assert [m["model"] for m in d["models"]] == ["ease", "rp3beta"]
  ease, *fitted = d["models"]
  assert ease["fit_s"] is None and ease["runs_s"] == []
  assert ease["error"].startswith("ResourceExhausted: --model=ease: 200 items need")
  assert "\n" not in ease["error"]
  assert ease["ease_needs_bytes"] == 4 * 4 * 200**2
  assert ease["ease_memory_limit_bytes"] == int(0.00001 * 2**30)
  assert ease["settings"] == "lambda 1000"
  for m in fitted:
    assert "error" not in m, m
    assert len(m["runs_s"]) == 1 and all(t > 0 for t in m["runs_s"]) and m["fit_s"] > 0
    assert m["peak_rss_mib"] > 0 and m["peak_rss_mib"] >= d["baseline"]["peak_rss_mib"] * 0.9
    assert m["fit_rss_mib"] == m["peak_rss_mib"] - d["baseline"]["peak_rss_mib"]
  assert "alpha 0.75, beta 0.7" in fitted[0]["settings"]


def _payload(shape_users, rows, command):
  return {"command": command, "shape": {"users": shape_users, "items": 30},
          "baseline": {"peak_rss_mib": 100.0 + shape_users}, "environment": {"jax": command},
          "models": [dict(row) for row in rows]}


def test_merge_replaces_the_rows_of_the_other_runs_models(tmp_path):
  base = _payload(60, [{"model": "rp3beta", "fit_s": 1.0},
                       {"model": "ease", "fit_s": None, "error": "ResourceExhausted: ..."}], "a")
  new = _payload(60, [{"model": "ease", "fit_s": 2.0}], "b")
  merged = item_item_merge.merge(base, new)
  assert [m["model"] for m in merged["models"]] == ["ease", "rp3beta"]  # MODELS' order
  assert merged["models"][0] == {"model": "ease", "fit_s": 2.0, "command": "b",
                                 "baseline": new["baseline"], "environment": new["environment"]}
  assert merged["models"][1] == base["models"][0]
  assert {k: v for k, v in merged.items() if k != "models"} == {
      k: v for k, v in base.items() if k != "models"}
  with pytest.raises(ValueError, match="cannot merge runs of different shapes"):
    item_item_merge.merge(base, _payload(61, [], "c"))
  # Through the flag: the file is rewritten, and a bad merge leaves it as it was.
  out, other = tmp_path / "base.json", tmp_path / "other.json"
  out.write_text(json.dumps(base))
  other.write_text(json.dumps(new))
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  run = lambda: subprocess.run([sys.executable, "-m", "benchmarks.item_item_fit",
                                f"--merge={other}", f"--out_json={out}"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300, check=False)
  assert run().returncode == 0
  assert json.loads(out.read_text()) == merged
  other.write_text(json.dumps(_payload(61, [], "c")))
  done = run()
  assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr[-3000:]
  assert done.stderr.startswith("benchmarks.item_item_fit: --merge=") and (
      "different shapes" in done.stderr)
  assert json.loads(out.read_text()) == merged
