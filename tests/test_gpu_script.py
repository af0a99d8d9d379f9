"""benchmarks/gpu.sh, cheaply: its syntax, its python blocks, and its control flow run with a stub
python (no JAX, a second or two). The real dry run is the command in the script's header."""

import json
import os
import pathlib
import re
import stat
import subprocess

import pytest

from benchmarks import gpu_summary

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.sh"
STEPS = ["install", "devices", "tests", "throughput_large_batch", "eval_all_users", "topk",
         "throughput", "eval_speed"]

# Answers every call gpu.sh makes to $PYTHON: the devices block writes devices.json, the backend
# query prints $STUB_BACKEND, the summary prints {}, pip exits with $STUB_PIP_RC, everything else
# succeeds silently.
_STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_CALLS"
case "$1" in
  -) cat > /dev/null
     [[ "$2" == */devices.json ]] && echo '{"backend": "'"$STUB_BACKEND"'"}' > "$2" ;;
  -c) [[ "$2" == *json.load* ]] && echo "$STUB_BACKEND" ;;
  -m) [[ "$2" == benchmarks.gpu_summary ]] && echo '{}'
      [[ "$2" == pip ]] && exit "${STUB_PIP_RC:-0}" ;;
esac
exit 0
"""


def test_bash_syntax():
  done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr


def test_python_blocks_compile():
  blocks = re.findall(r"<<'PY'\n(.*?)\nPY\n", SCRIPT.read_text(), re.DOTALL)
  assert len(blocks) == 3  # devices, throughput at large batches, evaluation of every user
  for block in blocks:
    compile(block, "gpu.sh", "exec")


def test_the_script_writes_what_the_summary_reads():
  text = SCRIPT.read_text()
  for name, file in gpu_summary.FILES.items():
    stem = pathlib.Path(file).name
    assert stem in text or name == "pytest_log", file
  assert "logs/$name.log" in text and "run_step tests" in text  # logs/tests.log


def _run(tmp_path, backend, **env):
  stub = tmp_path / "python"
  stub.write_text(_STUB)
  stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
  out = tmp_path / "out"
  base = {k: v for k, v in os.environ.items()
          if k not in ("TRIPJAX_GPU_SH_ALLOW_CPU", "QUICK", "GPU_SH_BUDGET_S", "TESTS")}
  env = dict(base, PYTHON=str(stub), OUT=str(out), STUB_BACKEND=backend,
             STUB_CALLS=str(tmp_path / "calls"), **env)
  done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=60, check=False)
  return done, out, (tmp_path / "calls").read_text().splitlines()


def test_stops_in_one_line_when_the_backend_is_not_gpu(tmp_path):
  done, out, calls = _run(tmp_path, "cpu")
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [
      f"gpu.sh: JAX's default backend is cpu, not gpu (see {out}/logs/devices.log): run on a "
      "machine with JAX for CUDA, or set TRIPJAX_GPU_SH_ALLOW_CPU=1 for a CPU dry run"]
  assert not any(call.startswith("-m pytest") for call in calls)


@pytest.mark.parametrize("quick", ["0", "1"])
def test_every_step_runs_and_is_recorded(tmp_path, quick):
  # A failed install is recorded but not fatal: the steps import tripjax from the repository.
  done, out, calls = _run(tmp_path, "gpu", QUICK=quick, DATA_DIR=str(tmp_path), STUB_PIP_RC="1")
  assert done.returncode == 0, done.stdout + done.stderr
  steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
  assert [s["step"] for s in steps] == STEPS
  assert steps[0]["rc"] == 1
  assert all(s["rc"] == 0 and s["timeout_s"] > 0 for s in steps[1:])
  pytest_call = next(call for call in calls if call.startswith("-m pytest"))
  assert "-o addopts=" in pytest_call and f"--junitxml={out}/pytest_junit.xml" in pytest_call
  # The stub imports xdist: the whole suite on workers on a GPU, a few files in the dry run.
  if quick == "1":
    assert " -n " not in pytest_call and "tests/test_gpu_script.py" in pytest_call
  else:
    assert pytest_call.endswith(" tests") and "-n 8 --dist=loadfile" in pytest_call
  throughput = next(call for call in calls if call.startswith("-m benchmarks.throughput"))
  assert "--noimplicit" in throughput and f"--out={out}/throughput.json" in throughput
  assert ("--shapes=ml-20m" in throughput) == (quick == "0")
  assert (out / "gpu_summary.json").read_text().strip() == "{}"
  assert "[gpu.sh] total" in done.stdout


def test_steps_past_the_budget_are_skipped_and_fail_the_run(tmp_path):
  done, out, calls = _run(tmp_path, "cpu", TRIPJAX_GPU_SH_ALLOW_CPU="1", GPU_SH_BUDGET_S="12")
  assert done.returncode == 1
  steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
  assert [s["step"] for s in steps] == STEPS and all(s["skipped"] for s in steps)
  # Nothing ran but the quick queries (backend, xdist, sklearn) and the summary.
  assert [c.split()[1] for c in calls] == ["import", "import", "import", "benchmarks.gpu_summary"]
