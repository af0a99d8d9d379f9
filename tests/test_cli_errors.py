"""Every script's expected failures: one line on stderr naming the flag or file, exit non-zero.

The cases of each script run in one interpreter (`run_cli`); lines of absl's log (the training's
own INFO lines before it fails) are not the failure and are left out of the count.
"""

import ast
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tripjax import checkpoint
from tripjax import errors

_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")
_SMOKE = "--flagfile=experiments/configs/smoke.cfg"
_REPO = pathlib.Path(__file__).resolve().parents[1]


def _failure_line(done, program: str) -> str:
  """The one line a failed command printed, after checking there is exactly one."""
  assert done.returncode != 0, done.stdout[-2000:]
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  lines = [l for l in done.stderr.splitlines() if l.strip() and not _LOG_LINE.match(l)]
  assert len(lines) == 1, done.stderr[-3000:]
  assert lines[0].startswith(f"{program}: "), lines[0]
  return lines[0]


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
  """A data folder whose ml-100k/u.data has a malformed line 3."""
  root = tmp_path_factory.mktemp("bad_data")
  release = root / "ml-100k"
  release.mkdir()
  (release / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t4\t881250949\n1\tx\t4\t1\n")
  (release / "u.item").write_text("1|A (1995)|||" + "|0" * 19 + "\n2|B (1995)|||" + "|0" * 19
                                  + "\n", encoding="latin-1")
  return root


@pytest.fixture(scope="module")
def train_failures(run_cli, tmp_path_factory, bad_data):
  root = tmp_path_factory.mktemp("train_failures")
  a_file = root / "a_file"
  a_file.write_text("not a folder")
  locked = root / "locked"
  holder = subprocess.Popen(
      [sys.executable, "-c", "import pathlib, sys, time\nfrom tripjax import workdir\n"
       "with workdir.locked(pathlib.Path(sys.argv[1])):\n  print('locked', flush=True)\n"
       "  time.sleep(120)\n", str(locked)], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "locked"
  cases = {
      "workdir_is_a_file": [_SMOKE, f"--workdir={a_file}"],
      "workdir_under_a_file": [_SMOKE, f"--workdir={a_file}/run"],
      "locked": [_SMOKE, f"--workdir={locked}"],
  }
  flags = {
      "test_per_user": ["--test_per_user=1000"],
      "threshold_nan": ["--threshold=nan"],
      "learning_rate_inf": ["--learning_rate=inf"],
      "margin_inf": ["--margin=inf"],
      "init_scale_inf": ["--init_scale=inf"],
      "l2_inf": ["--l2=inf"],
      "checkpoint_every": ["--checkpoint_every=5s"],
      "stray_argument": ["extra"],
      "bad_data_file": ["--dataset=ml-100k", f"--data_dir={bad_data}", "--download=false"],
      "out_of_memory": ["--batch_size=2000000000"],
      "item_features": ["--item_features=colour"],
      "user_features": ["--user_features=age"],
      "cold_fraction": ["--cold_item_fraction=1"],
      "cold_too_few": ["--cold_item_fraction=0.01"],
      "mesh": ["--mesh=data:3"],
      "mesh_syntax": ["--mesh=rows:2"],
      "no_coordinator": ["--num_processes=2"],
      "process_id": ["--num_processes=2", "--process_id=2", "--coordinator_address=127.0.0.1:1"],
      "negatives_memory": ["--num_negatives=10000000000"],
  }
  cases.update({name: [_SMOKE, f"--workdir={root / name}", *args]  # a folder named as its case
                for name, args in flags.items()})
  try:
    results = run_cli("experiments.train", cases)
  finally:
    holder.kill()
    holder.wait()
  return root, holder.pid, results


@pytest.mark.parametrize("case,needles", [
    ("workdir_is_a_file", ["is a file"]),
    ("workdir_under_a_file", ["Not a directory", "a_file"]),
    ("test_per_user", ["--test_per_user=1000"]),
    ("threshold_nan", ["--threshold=nan", "finite"]),
    ("learning_rate_inf", ["--learning_rate=inf", "finite"]),
    ("margin_inf", ["--margin=inf", "finite"]),
    ("init_scale_inf", ["--init_scale=inf", "finite"]),
    ("l2_inf", ["--l2=inf", "finite"]),
    ("checkpoint_every", ["--checkpoint_every"]),
    ("stray_argument", ["extra"]),
    ("bad_data_file", ["u.data", "3"]),
    ("out_of_memory", ["out of memory", "--batch_size"]),
    ("item_features", ["--item_features", "colour", "genres"]),
    ("user_features", ["--user_features", "no user features"]),
    ("cold_fraction", ["--cold_item_fraction"]),
    ("cold_too_few", ["--cold_item_fraction=0.01", "at least 20"]),
    ("mesh", ["--mesh=data:3", "3 devices", "there are 1"]),
    ("mesh_syntax", ["--mesh=rows:2"]),
    ("no_coordinator", ["--num_processes=2", "need --coordinator_address"]),
    ("process_id", ["--process_id=2 is out of range", "--num_processes=2"]),
    ("negatives_memory", ["--num_negatives=10000000000", "GiB of memory, more than the"]),
])
def test_train_failures_are_one_line(train_failures, case, needles):
  root, _, results = train_failures
  line = _failure_line(results[case], "experiments.train")
  for needle in needles:
    assert needle in line, line
  if case not in ("workdir_is_a_file", "workdir_under_a_file", "locked"):
    assert not (root / case / "flags.txt").exists(), case


def test_a_locked_workdir_names_the_process_holding_it(train_failures):
  _, pid, results = train_failures
  line = _failure_line(results["locked"], "experiments.train")
  assert f"in use by process {pid}" in line


def test_the_tpu_probe_is_not_printed(smoke_run):
  _, done = smoke_run
  assert "libtpu" not in done.stderr and "backend 'tpu'" not in done.stderr


def test_describe_and_evaluate_failures_are_one_line(run_cli, bad_data, smoke_run, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  not_utf8 = tmp_path / "latin.cfg"
  not_utf8.write_bytes(b"\xff\xfe--dataset=synthetic-tiny\n")
  results = (smoke_run[0] / "results.json").read_bytes()
  described = run_cli("experiments.describe", {
      "nan": ["--dataset=synthetic-tiny", "--threshold=nan"],
      "bad_data_file": ["--dataset=ml-100k", f"--data_dir={bad_data}", "--download=false"],
      "stray": ["--dataset=synthetic-tiny", "extra"],
      "unknown_dataset": ["--dataset=ml-5"],
  })
  assert "--threshold=nan" in _failure_line(described["nan"], "experiments.describe")
  assert "u.data" in _failure_line(described["bad_data_file"], "experiments.describe")
  assert "extra" in _failure_line(described["stray"], "experiments.describe")
  assert "--dataset" in _failure_line(described["unknown_dataset"], "experiments.describe")
  evaluated = run_cli("experiments.evaluate", {
      "test_per_user": ["--dataset=synthetic-tiny", "--test_per_user=1000",
                        f"--output_dir={tmp_path / 'out'}"],
      "output_dir_is_a_file": ["--dataset=synthetic-tiny", f"--output_dir={a_file}"],
      "into_a_run": ["--dataset=synthetic-tiny", f"--output_dir={smoke_run[0]}"],
      "not_utf8": [f"--flagfile={not_utf8}"],
      "negative_seed": ["--dataset=synthetic-tiny", "--random_seed=-1"],
  })
  assert "--test_per_user=1000" in _failure_line(evaluated["test_per_user"], "experiments.evaluate")
  assert "a_file" in _failure_line(evaluated["output_dir_is_a_file"], "experiments.evaluate")
  assert "holds a training run" in _failure_line(evaluated["into_a_run"], "experiments.evaluate")
  assert (smoke_run[0] / "results.json").read_bytes() == results
  assert "not UTF-8" in _failure_line(evaluated["not_utf8"], "experiments.evaluate")
  assert "--random_seed=-1" in _failure_line(evaluated["negative_seed"], "experiments.evaluate")


def test_tune_failures_are_one_line(run_cli, tmp_path):
  # Among them, outputs that would overwrite work: refused before any trial.
  base = tmp_path / "base.cfg"
  base.write_text("--dataset=synthetic-tiny\n--epochs=1\n")
  earlier = tmp_path / "earlier.json"
  earlier.write_text('{"trials": []}\n')
  tuned = run_cli("experiments.tune", {
      "no_base": ["--base_flagfile=/no/such.cfg", f"--out_json={tmp_path / 't.json'}"],
      "bad_space": ["--dataset=synthetic-tiny", "--search_margin=abc",
                    f"--out_json={tmp_path / 't.json'}"],
      "out_is_base": [f"--base_flagfile={base}", f"--out_flagfile={base}",
                      f"--out_json={tmp_path / 't.json'}"],
      "earlier_search": [f"--base_flagfile={base}", f"--out_json={earlier}",
                         f"--out_flagfile={tmp_path / 'b.cfg'}"],
      "resume_and_overwrite": [f"--base_flagfile={base}", f"--out_json={earlier}", "--resume",
                               "--overwrite"],
      "negative_seed": [f"--base_flagfile={base}", "--validation_seeds=-1",
                        f"--out_json={tmp_path / 't.json'}"],
      "base_is_a_folder": [f"--base_flagfile={tmp_path}", f"--out_json={tmp_path / 't.json'}"],
      "no_batches": [f"--base_flagfile={base}", "--steps_per_dispatch=0",
                     f"--out_json={tmp_path / 't.json'}"],
  })
  assert "/no/such.cfg" in _failure_line(tuned["no_base"], "experiments.tune")
  assert "margin" in _failure_line(tuned["bad_space"], "experiments.tune")
  assert "would overwrite the --base_flagfile" in _failure_line(tuned["out_is_base"],
                                                                 "experiments.tune")
  assert "--overwrite to replace it" in _failure_line(tuned["earlier_search"], "experiments.tune")
  assert "pass one of them" in _failure_line(tuned["resume_and_overwrite"], "experiments.tune")
  assert "[0, 2**32)" in _failure_line(tuned["negative_seed"], "experiments.tune")
  assert "is a folder, not a file" in _failure_line(tuned["base_is_a_folder"],
                                                    "experiments.tune")
  assert "--steps_per_dispatch=0" in _failure_line(tuned["no_batches"], "experiments.tune")
  assert base.read_text() == "--dataset=synthetic-tiny\n--epochs=1\n"
  assert earlier.read_text() == '{"trials": []}\n'
  assert not (tmp_path / "t.json").exists() and not (tmp_path / "b.cfg").exists()


def test_analyze_without_a_checkpoint_is_one_line_to_the_end(smoke_run, tmp_path):
  # A real process: Orbax's shutdown traceback came at interpreter exit, after the message.
  no_checkpoint = tmp_path / "no_checkpoint"
  (no_checkpoint / "checkpoints").mkdir(parents=True)
  shutil.copy(smoke_run[0] / "flags.txt", no_checkpoint / "flags.txt")
  done = subprocess.run([sys.executable, "-m", "experiments.analyze",
                         f"--workdir={no_checkpoint}"], cwd=_REPO, capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.stderr.count("\n") == 1, done.stderr[-3000:]
  assert "no finished checkpoint" in _failure_line(done, "experiments.analyze")
  assert sorted(p.name for p in no_checkpoint.rglob("*")) == ["checkpoints", "flags.txt"]


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "unsealed"])
def test_a_damaged_checkpoint_is_one_warning_line(smoke_run, tmp_path, sealed):
  # A real process: a failed Orbax restore's late TensorStore callbacks printed tracebacks
  # after it. A sealed checkpoint's damage is found before Orbax reads it; an unsealed one
  # (older, or its writer killed before the seal) goes through Orbax's failure.
  # The smoke run (saved every epoch), its last checkpoint damaged and its results gone: the
  # run resumes from checkpoint 2 and ends where it had.
  workdir = tmp_path / "run"
  shutil.copytree(smoke_run[0], workdir)
  if not sealed:
    (workdir / "checkpoints" / "3" / checkpoint.CHECKSUMS).unlink()
  for chunk in (workdir / "checkpoints" / "3").rglob("*"):  # truncate its array data
    if chunk.is_file() and chunk.parent.name == "d" and chunk.stat().st_size > 1000:
      with open(chunk, "r+b") as f:
        f.truncate(16)
  finished = json.loads((workdir / "results.json").read_text())
  (workdir / "results.json").unlink()
  again = subprocess.run([sys.executable, "-m", "experiments.train", _SMOKE,
                          f"--workdir={workdir}", "--checkpoint_every=1"], cwd=_REPO,
                         capture_output=True, text=True, timeout=300, check=False)
  assert again.returncode == 0, again.stderr[-3000:]
  assert [l for l in again.stderr.splitlines() if not _LOG_LINE.match(l)] == [], again.stderr
  warnings = [l for l in again.stderr.splitlines() if l.startswith("W")]
  assert len(warnings) == 1 and "Checkpoint 3" in warnings[0] and "using checkpoint 2" in (
      warnings[0])
  assert ("holds 16 bytes" in warnings[0]) == sealed
  assert json.loads((workdir / "results.json").read_text())["model"] == finished["model"]


def _raises(err):
  def main(argv):
    del argv
    raise err
  return main


@pytest.mark.parametrize("err,code", [
    (errors.DataError("u.data:3: bad line"), 1),
    (NotADirectoryError(20, "Not a directory", "/a/file/run"), 1),
    (MemoryError(), 1),
    (errors.Stopped("stopped by SIGTERM", 15), 143),
    (KeyboardInterrupt(), 130)])
def test_expected_failures_exit_with_one_line_unless_tracebacks_are_asked_for(
    err, code, capsys, monkeypatch):
  from experiments import run_cli  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("TRIPJAX_TRACEBACK", raising=False)
  with pytest.raises(SystemExit) as exited:
    run_cli.guarded(_raises(err), "prog")(["prog"])
  assert exited.value.code == code
  line = capsys.readouterr().err
  assert line.count("\n") == 1 and line.startswith("prog: ")
  monkeypatch.setenv("TRIPJAX_TRACEBACK", "1")
  with pytest.raises(type(err)):
    run_cli.guarded(_raises(err), "prog")(["prog"])


def test_bugs_keep_their_traceback(monkeypatch):
  from experiments import run_cli  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("TRIPJAX_TRACEBACK", raising=False)
  for bug in (ValueError("inside jax"), KeyError("x"), TypeError("y")):
    with pytest.raises(type(bug)):
      run_cli.guarded(_raises(bug), "prog")(["prog"])


def test_every_script_runs_through_run_cli():
  # absl's app.run answers a bad flag or a UsageError with the whole usage text (77 lines for
  # benchmarks.item_item_fit); run_cli.run with one line.
  scripts = sorted([*(_REPO / "experiments").glob("*.py"), *(_REPO / "benchmarks").glob("*.py")])
  checked = []
  for path in scripts:
    tree = ast.parse(path.read_text(), str(path))
    blocks = [node for node in tree.body
              if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    if blocks:
      calls = {ast.unparse(n.func) for n in ast.walk(blocks[0]) if isinstance(n, ast.Call)}
      assert "run_cli.run" in calls, f"{path.name}: {sorted(calls)}"
      checked.append(path.stem)
  assert {"train", "item_item_fit", "throughput", "compare"} <= set(checked)


@pytest.mark.parametrize("module,args,needs", [
    ("benchmarks.item_item_fit", ["--child=ease"], "--matrix"),
    ("benchmarks.pipeline_memory", ["--child=pipeline"], "--workdir")])
def test_a_benchmarks_internal_child_flag_alone_is_one_line(run_cli, module, args, needs):
  """`--child` is how these benchmarks start their own measuring processes; given by hand
  without the input they pass along, it is refused in one line (it was a TypeError)."""
  line = _failure_line(run_cli(module, {"alone": args})["alone"], module)
  assert "--child is internal" in line and needs in line
