"""A training run's folder: the lock, the claim, and the files beside the checkpoints.

Layout of a workdir:
  .lock             held (flock) by the one process training into the folder
  flags.txt         the run's settings as a flagfile that a person reruns
  config.json       the same settings as the code reads them back (both written once the
                    run's data has loaded; runs written before config.json have flags.txt)
  metrics.jsonl     one JSON line per evaluation
  results.json      the finished run's results
  checkpoints/      Orbax checkpoints (`tripjax.checkpoint`)
  damaged_checkpoints/  checkpoints that failed to restore, kept for inspection

A run exists once its data has loaded: `claim` only decides whether the folder may be used
(and whether an older run in it must go), and `replace_run` deletes that run's files only after
the new run's data is known to be good.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
from typing import Iterator

import numpy as np

from tripjax import errors
from tripjax import files
from tripjax.config import PLACEMENT_FIELDS, TrainConfig

LOCK_FILE = ".lock"
FLAGS_FILE = "flags.txt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"
DATA_FILE = "data.json"
_RUN_FILES = (FLAGS_FILE, CONFIG_FILE, METRICS_FILE, RESULTS_FILE, CHECKPOINT_DIR, DAMAGED_DIR,
              DATA_FILE)


class WorkdirConflict(errors.WorkdirError, ValueError):
  """The workdir holds a run with other settings (pass overwrite=True to replace it)."""


class WorkdirLocked(errors.WorkdirError):
  """Another process is training into the workdir."""


@contextlib.contextmanager
def locked(workdir: pathlib.Path) -> Iterator[None]:
  """Holds an exclusive lock on `workdir` (created if needed) for the duration of the block.

  The lock is an `flock` on `workdir/.lock`, which the kernel releases when its process dies,
  so a killed run never blocks the next one. The holder's PID is written into the file for the
  refusal message.

  Raises:
    WorkdirLocked: another process holds the lock.
    errors.WorkdirError: `workdir` exists and is not a folder.
  """
  if workdir.exists() and not workdir.is_dir():
    raise errors.WorkdirError(f"--workdir {workdir} is a file, not a folder; pass the folder "
                              "a run should write to.")
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / LOCK_FILE
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
      raise WorkdirLocked(f"workdir {workdir} is in use by process {holder} (lock {path}); "
                          "wait for that run to finish or use another --workdir.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    try:
      yield
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)


def read_config(workdir: pathlib.Path) -> TrainConfig:
  """The config of the run in `workdir`: config.json, else (older runs) flags.txt.

  Raises:
    errors.InvalidInput: the file is unreadable or holds an invalid config.
    FileNotFoundError: the folder holds neither.
  """
  if (workdir / CONFIG_FILE).exists():
    return TrainConfig.from_json(workdir / CONFIG_FILE)
  if (workdir / FLAGS_FILE).exists():
    return TrainConfig.from_flagfile(workdir / FLAGS_FILE)
  raise FileNotFoundError(workdir / CONFIG_FILE)


def previous_config(workdir: pathlib.Path) -> TrainConfig | errors.InvalidInput | None:
  """The config recorded in `workdir` (None: none recorded; the error: unreadable)."""
  try:
    return read_config(workdir)
  except FileNotFoundError:
    return None
  except errors.InvalidInput as e:
    return e


def _changed_fields(previous: TrainConfig, config: TrainConfig) -> list[str]:
  """The fields that make `config` another run than `previous` (`PLACEMENT_FIELDS` never do)."""
  return [f.name for f in dataclasses.fields(config) if f.name not in PLACEMENT_FIELDS
          and getattr(previous, f.name) != getattr(config, f.name)]


def _differences(previous: TrainConfig, config: TrainConfig) -> str:
  return ", ".join(f"--{name}={getattr(previous, name)!r} (now {getattr(config, name)!r})"
                   for name in _changed_fields(previous, config))


def claim(config: TrainConfig, workdir: pathlib.Path, overwrite: bool) -> bool:
  """Decides whether a run of `config` may use `workdir`; writes nothing.

  The same settings resume (with or without `overwrite`; `--mesh` may differ, the new one is
  written); other settings, or run files without a flags.txt, are refused unless `overwrite`.

  Returns:
    True when an older run must be replaced (call `replace_run` once the new run's data has
    loaded), False when the folder is fresh or holds this very run.

  Raises:
    WorkdirConflict: the folder holds another run and `overwrite` is False.
  """
  previous = previous_config(workdir)
  if isinstance(previous, TrainConfig) and not _changed_fields(previous, config):
    return False
  if previous is None:
    if not holds_run_files(workdir):
      return False
    what = f"run outputs but no {FLAGS_FILE} or {CONFIG_FILE}"
  elif isinstance(previous, TrainConfig):
    what = f"a run with other flags ({_differences(previous, config)})"
  else:
    what = f"a run whose settings are unreadable ({previous})"
  if not overwrite:
    raise WorkdirConflict(f"workdir {workdir} holds {what}. Use another --workdir, or pass "
                          "--overwrite to replace that run.")
  return True


def holds_run_files(workdir: pathlib.Path) -> bool:
  """Whether `workdir` holds any file a run writes (the lock aside)."""
  return any((workdir / name).exists() or (workdir / name).is_symlink() for name in _RUN_FILES)


def holds_checkpoints(workdir: pathlib.Path) -> bool:
  """Whether the run in `workdir` has committed a checkpoint (Orbax names them by number)."""
  folder = workdir / CHECKPOINT_DIR
  return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


@contextlib.contextmanager
def taken_back_on_failure(workdir: pathlib.Path, fresh: bool) -> Iterator[None]:
  """When the block fails before the run in `workdir` committed a checkpoint, and `fresh` (the
  run found the folder empty, or replaced its older run), removes the run's files: nothing could
  resume from them, and the corrected command then starts anew without --overwrite. A run that
  found files keeps them."""
  try:
    yield
  except BaseException:
    if fresh and not holds_checkpoints(workdir):
      replace_run(workdir)
    raise


def replace_run(workdir: pathlib.Path) -> None:
  """Deletes the files of the run in `workdir` (the lock stays)."""
  for name in _RUN_FILES:
    path = workdir / name
    if path.is_dir() and not path.is_symlink():
      shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
      path.unlink()


def flagfile_text(config: TrainConfig) -> str:
  """flags.txt: a flagfile that reruns (and so resumes) the run."""
  return ("# Reproduce: python -m experiments.train --flagfile=<this file> "
          "--workdir=<its folder>\n" + config.to_flagfile())


def write_config(config: TrainConfig, workdir: pathlib.Path) -> None:
  """Writes config.json (what the code reads back) and flags.txt (what a person reruns)."""
  files.write_atomic(workdir / CONFIG_FILE, config.to_json())
  files.write_atomic(workdir / FLAGS_FILE, flagfile_text(config))


def data_fingerprint(train, test, low_ratings=None, high_ratings=None) -> dict:
  """What a run trains and is evaluated on: the split's shape, its counts and a SHA-256 of
  both matrices' positives (train, test: bool CSR [U, I] with sorted indices), of the low
  ratings it also trains on (`registry.load_low_ratings`) and of the training ratings it
  weighs more (`registry.training_high_ratings`); None: none, and the fingerprint of runs
  without them is unchanged."""
  digest = hashlib.sha256()
  matrices = [m for m in (train, test, low_ratings) if m is not None]
  if high_ratings is not None:  # after a None low_ratings too: the two cannot be confused
    digest.update(b"high")
    matrices.append(high_ratings)
  for matrix in matrices:
    for part in (matrix.shape, matrix.indptr, matrix.indices):
      digest.update(np.ascontiguousarray(part, np.int64).tobytes())
  counts = {"users": int(train.shape[0]), "items": int(train.shape[1]),
            "train_positives": int(train.nnz), "test_positives": int(test.nnz)}
  if low_ratings is not None:
    counts["low_ratings"] = int(low_ratings.nnz)
  if high_ratings is not None:
    counts["high_ratings"] = int(high_ratings.nnz)
  return {**counts, "sha256": digest.hexdigest()}


def check_data(workdir: pathlib.Path, fingerprint: dict, older: dict | None = None) -> None:
  """Raises WorkdirError when the run in `workdir` trained on other data than `fingerprint`
  (its data.json; runs written before data.json existed are not checked). `older`: the same
  data as runs written before data.json covered the high ratings recorded it (accepted from
  a data.json without "high_ratings")."""
  path = workdir / DATA_FILE
  if not path.exists():
    return
  try:
    recorded = json.loads(path.read_text())
  except ValueError as e:
    raise errors.WorkdirError(f"{path} is not JSON ({e}); restore it, or move {workdir} aside "
                              "to train anew.") from e
  if not isinstance(recorded, dict):
    recorded = {}
  if older is not None and "high_ratings" not in recorded and recorded == older:
    return
  if recorded != fingerprint:
    changed = [f"{k} {recorded.get(k)} -> {v}" for k, v in fingerprint.items()
               if recorded.get(k) != v and k != "sha256"] or ["the same counts, other positives"]
    raise errors.WorkdirError(
        f"the data of the run in {workdir} changed since it trained ({'; '.join(changed)}; "
        f"{path}): its checkpoints describe other rows. Restore the data it trained on, or move "
        f"{workdir} aside to train anew.")


def run_fingerprints(train, test, low_ratings, high_ratings) -> tuple[dict, dict | None]:
  """(`data_fingerprint` of a run's data, and the one runs written before it covered the high
  ratings recorded: None when the run weighs none), `check_data`'s arguments."""
  fingerprint = data_fingerprint(train, test, low_ratings, high_ratings)
  return fingerprint, (None if high_ratings is None
                       else data_fingerprint(train, test, low_ratings))


def write_data(workdir: pathlib.Path, fingerprint: dict) -> None:
  """Records the run's data (data.json), once, when the run starts."""
  if not (workdir / DATA_FILE).exists():
    files.write_json_atomic(workdir / DATA_FILE, fingerprint)


def read_history(workdir: pathlib.Path) -> list[dict]:
  """metrics.jsonl's entries (one dict per evaluation), [] when there is none."""
  path = workdir / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_history(workdir: pathlib.Path, history: list[dict]) -> None:
  files.write_atomic(workdir / METRICS_FILE, "".join(json.dumps(h) + "\n" for h in history))
