"""Where the benchmark scripts write: runs/benchmarks/ by default, never the committed results.

Each script runs in a subprocess (every one defines its own absl flags, several of them `--out`).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Every output flag of the benchmark scripts; None: the default path is made at run time and the
# flag's help names it.
OUTPUT_FLAGS = {
    "accuracy_table": ("out_json", "out_md"),
    "compare": ("compare_json", "compare_md"),
    "eval_speed": ("output",),
    "features_table": ("features_json", "features_md"),
    "ials_speed": ("out_json",),
    "time_to_auc": ("tta_out_json", "tta_out_md"),
    "end_to_end": ("e2e_out_json",),
    "item_item_fit": ("out_json",),
    "kernel_ab": ("out",),
    "parse_speed": ("out",),
    "pipeline_memory": ("output",),
    "score_blend": ("blend_json", "blend_md"),
    "step_profile": ("out",),
    "summarize": ("out",),
    "throughput": ("out",),
    "topk_speed": ("out",),
    "triplet_ablation": ("ablation_json", "ablation_md"),
}

_PROBE = """
import importlib, json, sys
from absl import flags
found = {}
for module, names in json.loads(sys.argv[1]).items():
  importlib.import_module("benchmarks." + module)
  found[module] = {n: [flags.FLAGS[n].default, flags.FLAGS[n].help] for n in names}
  for flag in list(flags.FLAGS.flags_by_module_dict()["benchmarks." + module]):
    delattr(flags.FLAGS, flag.name)  # the next script defines its own --out
print(json.dumps(found))
"""


def _run(args, cwd, timeout=300):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def _files(folder: pathlib.Path) -> list[str]:
  return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_every_writing_script_has_its_output_flags_listed():
  writes = ("write_atomic(", "write_json_atomic(", "outputs.write_report(")
  writers = {p.stem for p in (REPO / "benchmarks").glob("*.py")
             if p.stem != "outputs" and any(w in p.read_text() for w in writes)}
  assert writers == set(OUTPUT_FLAGS)


def test_default_outputs_are_under_runs_benchmarks():
  done = _run(["-c", _PROBE, json.dumps(OUTPUT_FLAGS)], cwd=REPO)
  found = json.loads(done.stdout.strip().splitlines()[-1])
  for module, names in OUTPUT_FLAGS.items():
    for name in names:
      default, help_text = found[module][name]
      where = default if default is not None else help_text
      assert "runs/benchmarks/" in where and "benchmarks/results" not in where, (module, name)
      if default is not None:
        assert default.startswith("runs/benchmarks/"), (module, name, default)


def test_parse_speed_writes_under_runs_by_default(tmp_path):
  _run(["-m", "benchmarks.parse_speed", "--lines=2000", "--repeats=3"], cwd=tmp_path)
  assert _files(tmp_path) == ["runs/benchmarks/parse_speed.json"]
  assert json.loads((tmp_path / "runs/benchmarks/parse_speed.json").read_text())["lines"] == 2000


def test_summarize_writes_under_runs_and_the_committed_page_is_current(tmp_path):
  before = (REPO / "benchmarks" / "RESULTS.md").stat().st_mtime_ns
  _run(["-m", "benchmarks.summarize"], cwd=tmp_path)
  assert _files(tmp_path) == ["runs/benchmarks/RESULTS.md"]
  text = (tmp_path / "runs/benchmarks/RESULTS.md").read_text()
  assert "Made by `python -m benchmarks.summarize` from `benchmarks/results/*.json`" in text
  assert "`python -m benchmarks.topk_speed --out=benchmarks/results/topk_speed.json`" in text
  assert (REPO / "benchmarks" / "RESULTS.md").stat().st_mtime_ns == before
  # The committed page is what `python -m benchmarks.summarize --out=benchmarks/RESULTS.md`
  # writes (regenerate it so when a file in benchmarks/results/ changes): the same page but
  # for the command it names.
  committed = (REPO / "benchmarks" / "RESULTS.md").read_text()
  assert "summarize --out=benchmarks/RESULTS.md`" in committed
  assert text == committed.replace("summarize --out=benchmarks/RESULTS.md`", "summarize`", 1)


def test_report_outputs_are_checked_before_anything_is_written(tmp_path):
  from benchmarks import outputs  # pylint: disable=g-import-not-at-top
  from tripjax import errors  # pylint: disable=g-import-not-at-top
  from tripjax import files  # pylint: disable=g-import-not-at-top
  old = tmp_path / "old.json"
  old.write_text('{"kept": true}\n')
  (tmp_path / "a_folder").mkdir()
  with pytest.raises(errors.InvalidInput, match="--markdown=.*a_folder: Is a directory"):
    outputs.write_report({"rows": []}, lambda r, c: "table", "benchmarks.x", str(old),
                         str(tmp_path / "a_folder"))
  assert old.read_text() == '{"kept": true}\n'
  with pytest.raises(errors.InvalidInput, match="--a_json and --a_md both name"):
    files.check_outputs({"a_json": str(tmp_path / "same"), "a_md": str(tmp_path / "same")})


@pytest.mark.parametrize("name, text, message", [
    ("eval_speed.json", '{"a": 1', "eval_speed.json: not JSON"),
    ("topk_speed.json", '{"foo": 1}', "topk_speed.json: not the results this page expects"),
    ("throughput_cpu.json", "[]", "throughput_cpu.json: not the results this page expects"),
])
def test_summarize_names_a_malformed_results_file(tmp_path, name, text, message):
  from benchmarks import summarize  # pylint: disable=g-import-not-at-top
  from tripjax import errors  # pylint: disable=g-import-not-at-top
  (tmp_path / name).write_text(text)
  with pytest.raises(errors.InvalidInput, match=message):
    summarize.summarize(tmp_path)
