"""SIGTERM and SIGINT as requests to stop at the next safe point (a pre-empted job resumes).

`StopRequests` is a context manager for the training loop: inside it the first SIGTERM or
SIGINT is recorded instead of killing the process, and the loop saves a checkpoint and stops at
its next epoch boundary; a second SIGINT (Ctrl-C again) stops at once. Outside the main thread
(where Python cannot install handlers) it records nothing and signals keep their defaults.
"""

from __future__ import annotations

import signal
import threading

from absl import logging

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
  """Records the first SIGTERM/SIGINT received while active (`signum`, None until then)."""

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  def __enter__(self) -> StopRequests:
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}
    return self

  def __exit__(self, *exc_info) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum is not None else ""

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    if self.signum is None:
      self.signum = signum
      logging.warning("%s received: saving a checkpoint at the end of this epoch, then "
                      "stopping (Ctrl-C again stops at once, losing the epoch).", self.name)
