"""End-to-end tests of `python -m experiments.evaluate`."""

import json
import subprocess
import sys


def _run(*args, cwd):
  return subprocess.run([sys.executable, "-m", "experiments.evaluate", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def test_cli_writes_results_json_on_synthetic_tiny(tmp_path):
  out = tmp_path / "out"
  proc = _run("--dataset=synthetic-tiny", "--model=random", "--model=popularity", "--k=5",
              "--test_per_user=3", "--block_size=64", f"--output_dir={out}", cwd=None)
  assert proc.returncode == 0, proc.stderr
  assert "popularity" in proc.stdout and "auc" in proc.stdout
  res = json.loads((out / "results.json").read_text())
  assert set(res["models"]) == {"random", "popularity"}
  for model in res["models"].values():
    assert set(model["means"]) == {"auc", "precision@5", "recall@5", "ndcg@5", "hit_rate@5"}
    assert model["users_evaluated"] + model["users_skipped"] == res["num_users"]
    assert model["users_evaluated"] > 0
  assert res["models"]["popularity"]["means"]["auc"] > res["models"]["random"]["means"]["auc"]
  assert not list(out.glob("*.tmp"))


def test_cli_bad_flags_name_the_flag(run_cli, tmp_path):
  done = run_cli("experiments.evaluate", {
      flag: ["--dataset=synthetic-tiny", f"--{flag}={value}", f"--output_dir={tmp_path}"]
      for flag, value in (("model", "svd"), ("block_size", 0), ("k", 100000))})
  assert done["model"].returncode != 0 and "--model" in done["model"].stderr
  assert done["block_size"].returncode != 0 and "--block_size" in done["block_size"].stderr
  assert done["k"].returncode != 0 and "--k=100000" in done["k"].stderr
  assert not (tmp_path / "results.json").exists()
