"""Why the fused CPU step cannot run: the kernels' own `TripjaxError`s."""

from tripjax import errors as tripjax_errors


class Unavailable(tripjax_errors.TripjaxError, RuntimeError):
  """The fused CPU step cannot run in this process (the message says why and what to do)."""


class KernelBuildError(Unavailable):
  """The fused CPU kernel could not be compiled or loaded (the message says why and how)."""


class UnsafeKernelCache(Unavailable):
  """The kernel cache holds a folder or library this user's build may not have written.

  Nothing from it is loaded; the one-line message names the path, the reason and what to do.
  """
