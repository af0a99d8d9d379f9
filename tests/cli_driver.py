"""Runs several command lines of one `experiments.<name>` main in one interpreter.

  python tests/cli_driver.py experiments.recommend CASES.json OUT.json

CASES.json maps a case name to its argument list; OUT.json gets, per case, what
`python -m experiments.<name> ARGS...` would have produced: {"returncode", "stdout", "stderr"}.
Each case goes through `experiments.run_cli.run` (flag parsing, validators, usage errors,
`main`) with the
flags reset to their defaults first, so the cases see the same behaviour as separate processes
while paying for the imports (jax, orbax) once. An uncaught exception is reported as Python
would: its traceback on stderr and return code 1.
"""

import contextlib
import importlib
import io
import json
import os
import sys
import traceback


def _run_case(module, args: list[str]) -> dict:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from experiments import run_cli  # pylint: disable=g-import-not-at-top
  flags.FLAGS.unparse_flags()
  out, err = io.StringIO(), io.StringIO()
  handler = logging.get_absl_handler().python_handler
  previous_stream = handler.stream
  code = 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    handler.stream = err
    try:
      run_cli.run(module.main, argv=[module.__name__, *args])
    except SystemExit as e:
      if e.code is None or isinstance(e.code, int):
        code = e.code or 0
      else:
        print(e.code, file=sys.stderr)
        code = 1
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      code = 1
    finally:
      handler.stream = previous_stream
  return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main(module_name: str, cases_path: str, out_path: str) -> None:
  sys.path.insert(0, os.getcwd())
  module = importlib.import_module(module_name)
  with open(cases_path, encoding="utf-8") as f:
    cases = json.load(f)
  results = {name: _run_case(module, args) for name, args in cases.items()}
  with open(out_path, "w", encoding="utf-8") as f:
    json.dump(results, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
