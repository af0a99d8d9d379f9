"""Start-up and failure handling shared by every `experiments` script.

`run(main)` replaces `absl.app.run(main)`: flag errors (including non-finite float flags),
stray arguments and the library's expected failures (`tripjax.errors.TripjaxError`, file-system
errors, running out of memory) become ONE line on stderr, `<program>: <what to do>`, and a
non-zero exit. Anything else is a bug and keeps its traceback. `--verbosity=1` or
`TRIPJAX_TRACEBACK=1` shows the traceback of an expected failure too.
"""

from __future__ import annotations

import functools
import logging as std_logging
import math
import os
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from tripjax import errors

FLAGS = flags.FLAGS
_OUT_OF_MEMORY_ADVICE = ("lower --batch_size, --steps_per_dispatch or --eval_block_size "
                         "(--block_size), or use a smaller --dim")


def program_name(main: Callable) -> str:
  """`experiments.train` for `python -m experiments.train`'s main."""
  module = main.__module__
  if module == "__main__":
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = spec.name if spec else os.path.basename(sys.argv[0])
  return module


def _fail(program: str, message: str, code: int = 1):
  line = " ".join(str(message).split())  # one line, whatever the message held
  print(f"{program}: {line}", file=sys.stderr)
  sys.exit(code)


def _non_finite_float_flag() -> str | None:
  for name in FLAGS:
    value = FLAGS[name].value
    values = value if isinstance(value, list) else [value]
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
      return f"--{name}={FLAGS[name].serialize().split('=', 1)[-1]}"
  return None


def _parse_flags(program: str, argv: list[str]) -> list[str]:
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    _fail(program, f"Flags parsing error: {e}. Pass --helpfull to list the flags.")
  except UnicodeDecodeError as e:
    named = [a.split("=", 1)[-1] for a in argv[1:] if a.startswith(("--flagfile", "-flagfile"))]
    _fail(program, f"Flags parsing error: a --flagfile ({', '.join(named) or '?'}) is not "
          f"UTF-8 text ({e}); save it as UTF-8.")
  bad = _non_finite_float_flag()
  if bad:
    _fail(program, f"Flags parsing error: flag {bad}: must be a finite number.")
  return rest


def _show_tracebacks() -> bool:
  return (os.environ.get("TRIPJAX_TRACEBACK", "") not in ("", "0")
          or FLAGS["verbosity"].value >= 1)


def expected_failure(err: BaseException) -> str | None:
  """The one-line message for an expected failure, None for a bug."""
  if isinstance(err, (errors.TripjaxError, app.UsageError)):
    return str(err)
  if isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in str(err)[:2000]:
    return f"out of memory ({str(err).strip()[:200] or type(err).__name__}): " + \
        _OUT_OF_MEMORY_ADVICE + "."
  if isinstance(err, OSError) and (err.filename or err.strerror):
    where = f": {err.filename}" if err.filename else ""
    return (f"{err.strerror or err}{where}; check that the path exists, is a folder where "
            "one is expected, and is writable.")
  return None


def _quiet_logs() -> None:
  # The TPU-backend probe's INFO line ("Unable to initialize backend 'tpu'") is noise here.
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)


def guarded(main: Callable[[list[str]], object], program: str) -> Callable[[list[str]], object]:
  """`main` with stray arguments and expected failures turned into one line and exit 1."""

  @functools.wraps(main)
  def wrapped(argv):
    if len(argv) > 1:
      _fail(program, f"unexpected arguments {argv[1:]}; every input is a --flag.")
    _quiet_logs()
    try:
      return main(argv)
    except KeyboardInterrupt:
      if _show_tracebacks():
        raise
      _fail(program, "interrupted (Ctrl-C); what it had written before stays as it was.", 130)
    except (Exception, MemoryError) as err:  # pylint: disable=broad-except
      message = expected_failure(err)
      if message is None or _show_tracebacks():
        raise
      _fail(program, message, getattr(err, "exit_code", 1))

  return wrapped


def run(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
  """`absl.app.run(main)` with one-line flag errors and expected failures."""
  program = program_name(main)
  app.run(guarded(main, program), argv=argv,
          flags_parser=functools.partial(_parse_flags, program))


def quiet_checkpoint_logs() -> None:
  """Keeps the answer of a read-only CLI free of the checkpoint library's INFO lines."""
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
