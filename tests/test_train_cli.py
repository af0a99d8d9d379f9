"""End-to-end tests of `python -m experiments.train` (smoke.cfg; the session's smoke run)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tripjax.config import TrainConfig

_ROOT = pathlib.Path(__file__).resolve().parents[1]

_BAD_FLAGS = [("--dim=0", "dim"), ("--margin=-0.1", "margin"), ("--batch_size=0", "batch_size"),
              ("--optimizer=adamw", "optimizer"), ("--dataset=ml-5", "dataset"),
              ("--min_user_positives=0", "min_user_positives")]


@pytest.fixture(scope="module")
def reruns(smoke_run, run_cli, tmp_path_factory):
  """A copy of the smoke run, then (one interpreter) the commands that reuse or refuse it."""
  workdir = tmp_path_factory.mktemp("rerun") / "run"
  shutil.copytree(smoke_run[0], workdir)
  before = json.loads((workdir / "results.json").read_text())
  bad_root = tmp_path_factory.mktemp("bad_flags")
  smoke = "--flagfile=experiments/configs/smoke.cfg"
  cases = {
      "rerun": [f"--flagfile={workdir / 'flags.txt'}", f"--workdir={workdir}"],
      "other_flags": [smoke, f"--workdir={workdir}", "--margin=0.25", "--epochs=1"],
  }
  cases.update({name: [smoke, f"--workdir={bad_root / name}", flag] for flag, name in _BAD_FLAGS})
  cases["fused_with_adam"] = [smoke, f"--workdir={bad_root / 'fused_with_adam'}",
                              "--fused_cpu_step", "--optimizer=adam"]
  cases["fused"] = [smoke, f"--workdir={bad_root / 'fused'}", "--fused_cpu_step",
                    "--optimizer=sparse_sgd", "--learning_rate=2.0"]
  return workdir, before, bad_root, run_cli("experiments.train", cases)


def test_smoke_config_end_to_end(smoke_run):
  workdir, done = smoke_run
  results = json.loads((workdir / "results.json").read_text())
  assert 0.5 < results["model"]["auc"] <= 1 and "auc" in results["popularity"]
  assert results["jax_version"] and results["device_kind"]
  config = TrainConfig.from_flagfile(workdir / "flags.txt")
  assert config.dataset == "synthetic-tiny" and config.epochs == 3
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
  assert "AUC" in done.stdout and "epoch 3/3" in done.stderr


def test_flags_txt_reruns_the_finished_run(reruns):
  # flags.txt reproduces the run: the same command from it resumes (finished) with equal metrics.
  workdir, before, _, results = reruns
  again = results["rerun"]
  assert again.returncode == 0, again.stderr[-3000:]
  assert "AUC" in again.stdout
  assert json.loads((workdir / "results.json").read_text())["model"] == before["model"]


def test_other_flags_in_the_same_workdir_are_refused(reruns):
  workdir, _, _, results = reruns
  refused = results["other_flags"]
  assert refused.returncode != 0 and "--overwrite" in refused.stderr
  assert "margin" in refused.stderr
  assert TrainConfig.from_flagfile(workdir / "flags.txt").margin == 0.5  # untouched


@pytest.mark.parametrize("flag,name", _BAD_FLAGS)
def test_invalid_flags_fail_before_any_work(reruns, flag, name):
  _, _, bad_root, results = reruns
  done = results[name]
  assert done.returncode != 0, flag
  assert f"flag --{name}=" in done.stderr, done.stderr[-2000:]
  assert not (bad_root / name).exists()  # failed before any work


def test_fused_cpu_step_from_the_command_line(reruns):
  _, _, bad_root, results = reruns
  refused = results["fused_with_adam"]
  assert refused.returncode != 0 and "--optimizer=sparse_sgd" in refused.stderr
  assert "Flags parsing error" in refused.stderr and "Traceback" not in refused.stderr
  assert not (bad_root / "fused_with_adam").exists()
  done = results["fused"]
  assert done.returncode == 0, done.stderr[-3000:]
  run = json.loads((bad_root / "fused" / "results.json").read_text())
  assert run["config"]["fused_cpu_step"] and run["config"]["optimizer"] == "sparse_sgd"
  assert run["model"]["auc"] > 0.7


def test_a_kernel_that_cannot_build_is_a_one_line_error(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", CXX="no-such-cxx-xyz",
             TRIPJAX_CACHE_DIR=str(tmp_path / "kernels"))
  done = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--flagfile=experiments/configs/smoke.cfg",
       f"--workdir={tmp_path / 'run'}", "--fused_cpu_step", "--optimizer=sparse_sgd"],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode != 0
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("experiments.train: ") and "no-such-cxx-xyz" in last, last
  assert "Traceback" not in done.stderr


def test_every_config_parses(tmp_path):
  configs = {}
  for path in sorted((_ROOT / "experiments" / "configs").glob("*.cfg")):
    lines = [l for l in path.read_text().splitlines() if not l.startswith("--workdir=")]
    (tmp_path / path.name).write_text("\n".join(lines) + "\n")
    configs[path.stem] = TrainConfig.from_flagfile(tmp_path / path.name)
  assert {"quickstart", "smoke", "ml100k", "ml1m_lab", "ml1m", "ml10m", "ml20m"} <= set(configs)
  lab = configs["ml1m_lab"]
  assert (lab.dataset, lab.dim, lab.margin, lab.optimizer, lab.learning_rate, lab.batch_size,
          lab.epochs) == ("ml-1m", 64, 0.5, "adam", 0.001, 64, 3)
  assert configs["smoke"].dataset == "synthetic-tiny"
