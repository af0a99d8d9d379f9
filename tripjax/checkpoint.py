"""Orbax checkpoints of a training run: parameters, optimizer state, step, and run metadata.

A checkpoint is written under a temporary name and renamed when complete (Orbax's atomic
commit), so a process killed mid-write leaves at worst a temporary folder that `latest_epoch`
ignores and the next manager start removes. Checkpoints are numbered by completed epochs.

Layout of one checkpoint (items of an Orbax composite):
  params: {"user": float32[U, D], "item": float32[I, D]}
  opt: {"step": int32[], "state": the optimizer state pytree}, restored into the abstract
    tree of the run's optimizer (`jax.eval_shape` of its init); checkpoints written before
    this layout hold {"step", "leaves": {"00000": ...}} (the state's leaves in order) and are
    read back into the same tree
  meta: JSON (epoch, sampler seed, anything the caller wants back)

Once Orbax has committed a checkpoint, the writer seals it (at the end of the next epoch, or
when it waits for its saves): `CHECKSUMS` in its folder records every file's size and SHA-256.
A checkpoint whose files differ from its record (a truncated file, a flipped bit Orbax would
restore silently) is damaged; one without a record (written before seals, or by a process
killed before it sealed it) is only checked by restoring it. A damaged checkpoint
is skipped for the newest one that restores (`restore_newest`), and moved aside for inspection
when the caller asks.
`Every` is the saving schedule (every N epochs or every N minutes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging as std_logging
import os
import re
import shutil
import sys
import time
from typing import Any, NamedTuple

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from tripjax import errors

_EVERY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|e|epochs?|m|min|minutes?|h|hours?)\s*$")


@dataclasses.dataclass(frozen=True)
class Every:
  """When to save: every `epochs` epochs, or once `minutes` have passed since the last save."""
  epochs: int | None = None
  minutes: float | None = None

  @classmethod
  def parse(cls, text: str) -> Every:
    """Reads `5` or `5epochs` (epochs), `10m`/`10min` (minutes) or `1h` (hours).

    Raises:
      errors.InvalidInput: naming `--checkpoint_every` and the accepted forms.
    """
    match = _EVERY_RE.match(str(text))
    number = float(match.group(1)) if match else 0.0
    if not match or number <= 0 or (match.group(2) in ("", "e", "epoch", "epochs")
                                    and number != int(number)):
      raise errors.InvalidInput(f"--checkpoint_every={text!r}: expected a positive number of "
                                "epochs (5) or minutes (10m, 10min) or hours (1h).")
    unit = match.group(2)
    if unit in ("", "e", "epoch", "epochs"):
      return cls(epochs=int(number))
    return cls(minutes=number * (60.0 if unit.startswith("h") else 1.0))

  def due(self, epochs_since_save: int, seconds_since_save: float) -> bool:
    """Whether a checkpoint is due after an epoch."""
    if self.epochs is not None:
      return epochs_since_save >= self.epochs
    return seconds_since_save >= 60.0 * self.minutes


class Restored(NamedTuple):
  """A checkpoint restored by `Checkpoints.restore_newest`."""
  epoch: int
  params: Any
  opt_state: Any  # None when only the parameters were restored
  step: Any  # int32[], or None when only the parameters were restored
  meta: dict[str, Any]


# Recorded in a checkpoint's meta when its optimizer state is saved as a tree.
_OPT_LAYOUT = "_opt_layout"


def _public(meta) -> dict[str, Any]:
  """The caller's metadata, without the layout record."""
  return {k: v for k, v in dict(meta).items() if k != _OPT_LAYOUT}


def _legacy_leaves(tree) -> dict:
  """The layout of checkpoints saved before the optimizer state was saved as a tree."""
  return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


def _host(tree):
  """Copies a pytree to host numpy arrays (the device buffers may be donated right after)."""
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


CHECKSUMS = "CHECKSUMS"
_PARTIAL = f".{CHECKSUMS}.partial"


def _files_of(folder: str) -> list[str]:
  """The files under `folder` (relative paths, sorted), the seal and its draft excluded."""
  found = []
  for root, _, names in os.walk(folder):
    for name in names:
      relative = os.path.relpath(os.path.join(root, name), folder)
      if relative not in (CHECKSUMS, _PARTIAL):
        found.append(relative)
  return sorted(found)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def seal(folder: str) -> None:
  """Writes `folder`'s CHECKSUMS ({relative path: [size, sha256]}) atomically."""
  record = {name: [os.path.getsize(os.path.join(folder, name)),
                   _sha256(os.path.join(folder, name))] for name in _files_of(folder)}
  partial = os.path.join(folder, _PARTIAL)
  with open(partial, "w") as f:
    json.dump(record, f, indent=0, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(partial, os.path.join(folder, CHECKSUMS))


def seal_mismatch(folder: str) -> str | None:
  """How `folder`'s files differ from its CHECKSUMS, or None when they match or it has none."""
  try:
    with open(os.path.join(folder, CHECKSUMS)) as f:
      record = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    return f"its {CHECKSUMS} does not read ({e})"
  if not (isinstance(record, dict) and all(
      isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], str)
      for v in record.values())):
    return f"its {CHECKSUMS} is not a record of sizes and checksums"
  missing = sorted(set(record) - set(_files_of(folder)))
  if missing:
    return f"{missing[0]} is missing"
  for name, (size, sha) in sorted(record.items()):
    path = os.path.join(folder, name)
    try:
      if os.path.getsize(path) != size:
        return f"{name} holds {os.path.getsize(path)} bytes, {size} when saved"
      if _sha256(path) != sha:
        return f"{name} differs from its checksum at saving"
    except OSError as e:  # removed or unreadable since it was listed
      return f"{name} does not read ({e.strerror or e})"
  return None


def _late_callback_of_a_failed_restore(unraisable) -> bool:
  return (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed")


class _UnretrievedReadsOf(std_logging.Filter):
  """Drops asyncio's "Task/Future exception was never retrieved" for checkpoints' failed reads.

  When one of a restore's reads fails, the others can fail too; nobody awaits them, and asyncio
  logs each one when it is collected (sometimes before the restore's error reaches us), a
  traceback after the one-line warning. `folders` holds the checkpoint folders being restored;
  a record about any other failure passes.
  """

  def __init__(self):
    super().__init__()
    self.folders: set[str] = set()

  def filter(self, record: std_logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith(("Task exception was never retrieved",
                                    "Future exception was never retrieved"))
                and any(folder in message for folder in self.folders))


_UNRETRIEVED = _UnretrievedReadsOf()


def _quiet_unretrieved_reads_of(folder: str) -> str:
  """Called before restoring the checkpoint in `folder`: failed reads of it that nobody awaits
  are not logged by asyncio (the restore's own error is reported, in one line).

  Returns the key to `discard` from `_UNRETRIEVED.folders` once the restore has succeeded (a
  damaged checkpoint's stays: its reads may be collected later).
  """
  key = os.path.join(os.fspath(folder), "")
  _UNRETRIEVED.folders.add(key)
  asyncio_logger = std_logging.getLogger("asyncio")
  if _UNRETRIEVED not in asyncio_logger.filters:
    asyncio_logger.addFilter(_UNRETRIEVED)
  return key


def _ignore_late_callbacks_of_failed_restores() -> None:
  """Drops the 'Event loop is closed' errors a failed restore's reads report later.

  When a restore fails, Orbax closes its event loop while TensorStore still completes the
  other reads; their callbacks then fail in the background (at times before the restore's
  error reaches us) and Python prints each as a traceback after the one-line warning.
  Installed before a restore; only that error is dropped.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_tripjax_filter", False):
    return

  def hook(unraisable):
    if not _late_callback_of_a_failed_restore(unraisable):
      previous(unraisable)

  hook._tripjax_filter = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


class Checkpoints:
  """A thin wrapper of `orbax.checkpoint.CheckpointManager` for one run's folder."""

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2,
               read_only: bool = False):
    """Opens (creating if needed) the checkpoint folder.

    Under `jax.distributed` each process opens its own manager over itself alone: the run's
    writer (process 0) saves host copies of the arrays, the others only read (`read_only`).

    Args:
      directory: the folder holding numbered checkpoints.
      max_to_keep: how many of the latest checkpoints to keep.
      read_only: never create the folder nor clear a temporary checkpoint (another process
        may be writing it); for readers of a run's checkpoints.
    """
    self.directory = os.path.abspath(os.fspath(directory))
    self._unsealed: list[int] = []  # saved by this manager, not sealed yet
    alone = {}
    if jax.process_count() > 1:
      this = jax.process_index()
      alone = dict(multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=this, active_processes={this}))
      if not read_only:
        os.makedirs(self.directory, exist_ok=True)  # Orbax does not, for a subset of processes
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only and not alone,
        cleanup_tmp_directories=not read_only, **alone)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_epoch(self) -> int | None:
    """The number of the latest complete checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, epoch: int, params, opt_state, step, meta: dict[str, Any]) -> None:
    """Starts an (asynchronous) save; `wait` or `close` before relying on it.

    Args:
      epoch: the checkpoint's number (epochs completed).
      params: the parameter pytree.
      opt_state: the optimizer state pytree.
      step: int32[], optimizer steps applied.
      meta: JSON-serialisable run metadata.
    """
    self.wait()
    opt = {"step": np.asarray(step), "state": opt_state}
    self._started(epoch, self._manager.save(epoch, args=ocp.args.Composite(
        params=ocp.args.StandardSave(_host(params)),
        opt=ocp.args.StandardSave(_host(opt)),
        meta=ocp.args.JsonSave({**meta, _OPT_LAYOUT: "tree"}))))

  def save_params(self, epoch: int, params, meta: dict[str, Any]) -> None:
    """Starts an (asynchronous) save of parameters alone (a model fitted in one go).

    `restore_params` and `restore_newest(params_like)` read it back.

    Args:
      epoch: the checkpoint's number.
      params: the parameter pytree.
      meta: JSON-serialisable run metadata.
    """
    self.wait()
    self._started(epoch, self._manager.save(epoch, args=ocp.args.Composite(
        params=ocp.args.StandardSave(_host(params)), meta=ocp.args.JsonSave(dict(meta)))))

  def _started(self, epoch: int, saving: bool) -> None:
    """Queues a save Orbax started for sealing (it skips a number it already holds: that
    checkpoint keeps the seal it has, or has none, and is never sealed again)."""
    if saving:
      self._unsealed.append(epoch)

  def restore(self, epoch: int, params_like, opt_state_like):
    """Restores a full training state.

    Args:
      epoch: the checkpoint number.
      params_like: a pytree of arrays or `ShapeDtypeStruct`s shaped like the params.
      opt_state_like: same for the optimizer state (its tree structure is reused).

    Returns:
      (params, opt_state, step, meta).
    """
    legacy = _OPT_LAYOUT not in self._raw_metadata(epoch)
    state_like = _abstract(opt_state_like)
    opt_like = {"step": jax.ShapeDtypeStruct((), np.int32),
                **({"leaves": _legacy_leaves(state_like)} if legacy else {"state": state_like})}
    restored = self._manager.restore(epoch, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(params_like)),
        opt=ocp.args.StandardRestore(opt_like),
        meta=ocp.args.JsonRestore()))
    opt = restored["opt"]
    opt_state = (jax.tree.unflatten(jax.tree.structure(opt_state_like),
                                    [opt["leaves"][k] for k in sorted(opt["leaves"])])
                 if legacy else opt["state"])
    return restored["params"], opt_state, opt["step"], _public(restored["meta"])

  def restore_params(self, epoch: int, params_like=None):
    """Restores only the parameters (and the metadata) of a checkpoint.

    Returns:
      (params, meta).
    """
    params_args = (ocp.args.StandardRestore(_abstract(params_like)) if params_like is not None
                   else ocp.args.StandardRestore())
    restored = self._manager.restore(epoch, args=ocp.args.Composite(
        params=params_args, meta=ocp.args.JsonRestore()))
    return restored["params"], _public(restored["meta"])

  def restore_newest(self, params_like, opt_state_like=None,
                     quarantine: str | os.PathLike | None = None) -> Restored | None:
    """Restores the newest checkpoint that restores, skipping damaged ones.

    Args:
      params_like: a pytree of arrays or `ShapeDtypeStruct`s shaped like the params.
      opt_state_like: same for the optimizer state; None restores only the parameters.
      quarantine: a folder to move damaged checkpoints into (kept for inspection); None leaves
        them in place (read-only use).

    Returns:
      The restored checkpoint, or None when there is none.

    Raises:
      errors.WorkdirError: checkpoints exist but none restores.
    """
    def restore(epoch: int) -> Restored:
      if opt_state_like is None:
        params, meta = self.restore_params(epoch, params_like)
        return Restored(epoch, params, None, None, meta)
      return Restored(epoch, *self.restore(epoch, params_like, opt_state_like))

    damaged = []
    for epoch in sorted(self._manager.all_steps(), reverse=True):
      folder = self._folder(epoch)
      mismatch = seal_mismatch(folder)
      if mismatch:
        damaged.append((epoch, mismatch))
        continue
      quieted = _quiet_unretrieved_reads_of(folder)
      _ignore_late_callbacks_of_failed_restores()
      try:
        restored = restore(epoch)
        _UNRETRIEVED.folders.discard(quieted)
      except Exception as e:  # pylint: disable=broad-except
        # Orbax and TensorStore raise many types for a damaged file; any failure here means
        # this checkpoint cannot be used, and an older one may still be good.
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        damaged.append((epoch, reason))
        continue
      _check_shapes(restored.params, params_like, folder)
      for bad, reason in damaged:
        self._warn_damaged(bad, reason, restored.epoch, quarantine)
      if damaged and quarantine is not None:
        self._manager.reload()
      return restored
    if damaged:
      epoch, reason = damaged[0]
      raise errors.WorkdirError(
          f"no checkpoint in {self.directory} restores (the newest, epoch {epoch}: {reason}); "
          f"move {self.directory} aside to start the run over.")
    return None

  def _warn_damaged(self, epoch: int, reason: str, used: int, quarantine) -> None:
    where = ""
    if quarantine is not None:
      target = os.path.join(os.fspath(quarantine), f"{epoch}-{time.strftime('%Y%m%d-%H%M%S')}")
      os.makedirs(os.fspath(quarantine), exist_ok=True)
      shutil.move(self._folder(epoch), target)
      where = f"; moved to {target}"
    logging.warning("Checkpoint %d in %s is damaged (%s)%s; using checkpoint %d.", epoch,
                    self.directory, reason, where, used)

  def metadata(self, epoch: int) -> dict[str, Any]:
    """The run metadata saved with a checkpoint (nothing else is read)."""
    return _public(self._raw_metadata(epoch))

  def _raw_metadata(self, epoch: int) -> dict[str, Any]:
    restored = self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def wait(self) -> None:
    """Blocks until pending saves are committed, and seals them."""
    self._manager.wait_until_finished()
    self._seal_queued()

  def seal_committed(self) -> None:
    """Seals the saves Orbax has committed, without waiting for one in progress (called after
    each epoch, so a hard kill leaves at most the save in flight unsealed)."""
    if self._unsealed and not self._manager.is_saving_in_progress():
      self._seal_queued()

  def _seal_queued(self) -> None:
    """Seals the queued saves; called with no save in flight, when each is committed, or gone
    (removed by `max_to_keep`, or failed)."""
    kept, queued, self._unsealed = set(self._manager.all_steps()), self._unsealed, []
    for epoch in queued:
      if epoch in kept and os.path.isdir(self._folder(epoch)):
        seal(self._folder(epoch))

  def _folder(self, epoch: int) -> str:
    """The folder of checkpoint `epoch`."""
    return os.path.join(self.directory, str(epoch))

  def close(self) -> None:
    """Waits for pending saves, seals them, and releases the manager."""
    self.wait()
    self._manager.close()


def _check_shapes(params, params_like, folder) -> None:
  """Raises WorkdirError when a restored table's shape is not the one the run's data gives
  (the data changed since training, or the checkpoint is another run's)."""
  got = jax.tree_util.tree_flatten_with_path(params)[0]
  want = dict(jax.tree_util.tree_flatten_with_path(params_like)[0])
  for path, leaf in got:
    expected = want.get(path)
    if expected is not None and np.shape(leaf) != np.shape(expected):
      name = jax.tree_util.keystr(path)
      raise errors.WorkdirError(
          f"checkpoint {folder} holds params{name} of shape {tuple(np.shape(leaf))}, but the "
          f"run's data and settings give {tuple(np.shape(expected))}: the data changed since "
          "the run trained, or the checkpoint is another run's. Restore the data it trained on, "
          f"or move {os.path.dirname(os.fspath(folder))} aside to train anew.")
