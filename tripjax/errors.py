"""The library's expected failures: each message names the file or setting and what to do.

Every error a user can cause (a bad file, flag, folder, download or kernel cache) is a
`TripjaxError`; the scripts of `experiments/` print such an error as one line on stderr and exit
non-zero, while anything else (a bug) keeps its traceback. The subclasses also derive from the
built-in type that fits, so `except ValueError` keeps working for callers that used it.
"""


class TripjaxError(Exception):
  """An expected failure; its message says what went wrong and what to do."""
  exit_code = 1  # what a script exits with


class InvalidInput(TripjaxError, ValueError):
  """A setting or argument is out of range or inconsistent."""


class DataError(InvalidInput):
  """A data file is missing, malformed or inconsistent (the message names the file and line)."""


class WorkdirError(TripjaxError):
  """A run folder cannot be used as asked (another run's files, a lock, no checkpoint)."""


class ResourceExhausted(TripjaxError, MemoryError):
  """The device ran out of memory for the requested sizes."""


class Stopped(TripjaxError):
  """A run stopped on a signal after saving its state; rerunning resumes it."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum
