"""Orbax checkpoints of a training run: parameters, optimizer state, step, and run metadata.

A checkpoint is written under a temporary name and renamed when complete (Orbax's atomic
commit), so a process killed mid-write leaves at worst a temporary folder that `latest_epoch`
ignores and the next manager start removes. Checkpoints are numbered by completed epochs.

Layout of one checkpoint (items of an Orbax composite):
  params: {"user": float32[U, D], "item": float32[I, D]}
  opt: {"step": int32[], "leaves": {"00000": ..., ...}} (the optimizer state's leaves, in
    `jax.tree.leaves` order; the tree structure comes from the optimizer at restore time, so
    optax's NamedTuples and empty states need no special handling)
  meta: JSON (epoch, sampler seed, anything the caller wants back)
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _leaves_dict(tree) -> dict:
  return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


def _host(tree):
  """Copies a pytree to host numpy arrays (the device buffers may be donated right after)."""
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


class Checkpoints:
  """A thin wrapper of `orbax.checkpoint.CheckpointManager` for one run's folder."""

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
    """Opens (creating if needed) the checkpoint folder.

    Args:
      directory: the folder holding numbered checkpoints.
      max_to_keep: how many of the latest checkpoints to keep.
    """
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True)
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
    opt = {"step": np.asarray(step), "leaves": _leaves_dict(opt_state)}
    self._manager.save(epoch, args=ocp.args.Composite(
        params=ocp.args.StandardSave(_host(params)),
        opt=ocp.args.StandardSave(_host(opt)),
        meta=ocp.args.JsonSave(dict(meta))))

  def restore(self, epoch: int, params_like, opt_state_like):
    """Restores a full training state.

    Args:
      epoch: the checkpoint number.
      params_like: a pytree of arrays or `ShapeDtypeStruct`s shaped like the params.
      opt_state_like: same for the optimizer state (its tree structure is reused).

    Returns:
      (params, opt_state, step, meta).
    """
    opt_like = {"step": jax.ShapeDtypeStruct((), np.int32),
                "leaves": _leaves_dict(_abstract(opt_state_like))}
    restored = self._manager.restore(epoch, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(params_like)),
        opt=ocp.args.StandardRestore(opt_like),
        meta=ocp.args.JsonRestore()))
    opt = restored["opt"]
    leaves = [opt["leaves"][k] for k in sorted(opt["leaves"])]
    opt_state = jax.tree.unflatten(jax.tree.structure(opt_state_like), leaves)
    return restored["params"], opt_state, opt["step"], dict(restored["meta"])

  def restore_params(self, epoch: int, params_like=None):
    """Restores only the parameters (and the metadata) of a checkpoint.

    Returns:
      (params, meta).
    """
    params_args = (ocp.args.StandardRestore(_abstract(params_like)) if params_like is not None
                   else ocp.args.StandardRestore())
    restored = self._manager.restore(epoch, args=ocp.args.Composite(
        params=params_args, meta=ocp.args.JsonRestore()))
    return restored["params"], dict(restored["meta"])

  def metadata(self, epoch: int) -> dict[str, Any]:
    """The run metadata saved with a checkpoint (nothing else is read)."""
    restored = self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def wait(self) -> None:
    """Blocks until pending saves are committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
