"""End-to-end tests of `python -m experiments.train` (subprocesses, smoke.cfg)."""

import json
import os
import pathlib
import subprocess
import sys

from tripjax.config import TrainConfig

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _train(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=_ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_smoke_config_end_to_end_and_rerun(tmp_path):
  done = _train("--flagfile=experiments/configs/smoke.cfg", f"--workdir={tmp_path}")
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert 0.5 < results["model"]["auc"] <= 1 and "auc" in results["popularity"]
  assert results["jax_version"] and results["device_kind"]
  config = TrainConfig.from_flagfile(tmp_path / "flags.txt")
  assert config.dataset == "synthetic-tiny" and config.epochs == 3
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
  assert "AUC" in done.stdout and "epoch 3/3" in done.stderr
  # flags.txt reproduces the run: same command from it resumes (finished) with equal metrics.
  again = _train(f"--flagfile={tmp_path / 'flags.txt'}", f"--workdir={tmp_path}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads((tmp_path / "results.json").read_text())["model"] == results["model"]
  # Other flags in the same workdir: refused, unless --overwrite.
  refused = _train("--flagfile=experiments/configs/smoke.cfg", f"--workdir={tmp_path}",
                   "--margin=0.25", "--epochs=1")
  assert refused.returncode != 0 and "--overwrite" in refused.stderr
  assert "margin" in refused.stderr


_BAD_FLAGS = [("--dim=0", "dim"), ("--margin=-0.1", "margin"), ("--batch_size=0", "batch_size"),
              ("--optimizer=adamw", "optimizer"), ("--dataset=ml-5", "dataset")]


def test_invalid_flags_fail_before_any_work(tmp_path):
  # One process per bad flag, run side by side (each costs an interpreter start).
  procs = []
  for flag, name in _BAD_FLAGS:
    workdir = tmp_path / name
    procs.append((name, workdir, subprocess.Popen(
        [sys.executable, "-m", "experiments.train", "--flagfile=experiments/configs/smoke.cfg",
         f"--workdir={workdir}", flag], cwd=_ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))))
  for name, workdir, proc in procs:
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0, name
    assert f"flag --{name}=" in stderr, stderr[-2000:]
    assert not workdir.exists()  # failed before any work


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
