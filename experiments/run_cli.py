"""Start-up shared by the CLIs that answer from a trained run (experiments.analyze, .recommend).

`answer_or_exit` checks for stray arguments, quiets the checkpoint library's INFO logs (unless
`--verbosity` is given) and turns a bad workdir or flag value into one line on stderr.
"""

import sys
from typing import Callable, TypeVar

from absl import app
from absl import flags
from absl import logging

T = TypeVar("T")


def answer_or_exit(argv: list[str], program: str, answer: Callable[[], T]) -> T:
  """Returns `answer()`; a ValueError or FileNotFoundError prints `program: error`, exits 1.

  Raises:
    app.UsageError: `argv` holds positional arguments.
  """
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # the answer, not the checkpoint library's chatter
  try:
    return answer()
  except (ValueError, FileNotFoundError) as err:
    print(f"{program}: {err}", file=sys.stderr)
    sys.exit(1)
