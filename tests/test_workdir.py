"""Tests of tripjax.workdir: the run folder's lock, claim and replacement."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest

from tripjax import errors
from tripjax import workdir as workdir_lib
from tripjax.config import TrainConfig

_CONFIG = TrainConfig(dataset="synthetic-tiny", epochs=2)

_HOLD_LOCK = """
import pathlib, sys, time
from tripjax import workdir
with workdir.locked(pathlib.Path(sys.argv[1])):
  print("locked", flush=True)
  time.sleep(60)
"""


def _holder(folder):
  """A process holding the lock of `folder` (started, lock taken)."""
  proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder)],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  proc = _holder(tmp_path)
  try:
    with pytest.raises(workdir_lib.WorkdirLocked) as refused:
      with workdir_lib.locked(tmp_path):
        pass
    message = str(refused.value)
    assert f"process {proc.pid}" in message and str(tmp_path) in message
    assert "\n" not in message
  finally:
    proc.kill()
    proc.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  proc = _holder(tmp_path)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert (tmp_path / workdir_lib.LOCK_FILE).exists()  # the file stays, the lock does not
  with workdir_lib.locked(tmp_path):
    pass


def test_the_lock_excludes_within_one_process_too(tmp_path):
  with workdir_lib.locked(tmp_path):
    with pytest.raises(workdir_lib.WorkdirLocked, match=f"process {os.getpid()}"):
      with workdir_lib.locked(tmp_path):
        pass
  with workdir_lib.locked(tmp_path):  # released on exit
    pass


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / "run"
  path.write_text("not a folder")
  with pytest.raises(errors.WorkdirError, match="is a file"):
    with workdir_lib.locked(path):
      pass
  assert path.read_text() == "not a folder"


def test_claim_resumes_the_same_flags_and_refuses_others(tmp_path):
  assert workdir_lib.claim(_CONFIG, tmp_path, overwrite=False) is False  # fresh
  workdir_lib.write_config(_CONFIG, tmp_path)
  (tmp_path / workdir_lib.RESULTS_FILE).write_text("{}")
  # The same flags resume, with or without --overwrite: nothing is to be deleted.
  assert workdir_lib.claim(_CONFIG, tmp_path, overwrite=False) is False
  assert workdir_lib.claim(_CONFIG, tmp_path, overwrite=True) is False
  other = dataclasses.replace(_CONFIG, margin=0.25)
  with pytest.raises(workdir_lib.WorkdirConflict, match="margin=0.5 .now 0.25"):
    workdir_lib.claim(other, tmp_path, overwrite=False)
  assert workdir_lib.claim(other, tmp_path, overwrite=True) is True
  assert (tmp_path / workdir_lib.RESULTS_FILE).exists()  # claim itself deletes nothing


def test_claim_resumes_under_another_mesh_but_not_with_other_flags_beside_it(tmp_path):
  workdir_lib.write_config(_CONFIG, tmp_path)
  moved = dataclasses.replace(_CONFIG, mesh="data:2")
  assert workdir_lib.claim(moved, tmp_path, overwrite=False) is False
  with pytest.raises(workdir_lib.WorkdirConflict, match="margin=0.5 .now 0.25") as e:
    workdir_lib.claim(dataclasses.replace(moved, margin=0.25), tmp_path, overwrite=False)
  assert "--mesh" not in str(e.value)  # not a difference that refuses the run


def test_claim_of_another_run_under_another_mesh_names_its_flags(tmp_path):
  # The previous run's flags with the new mesh would be a refused pair (the fused step on two
  # devices); the claim still names the run's real differences.
  fused = dataclasses.replace(_CONFIG, optimizer="sparse_sgd", fused_cpu_step=True)
  workdir_lib.write_config(fused, tmp_path)
  other = dataclasses.replace(fused, fused_cpu_step=False, mesh="data:2")
  with pytest.raises(workdir_lib.WorkdirConflict, match="fused_cpu_step=True .now False"):
    workdir_lib.claim(other, tmp_path, overwrite=False)


def test_outputs_without_flags_are_refused_unless_overwrite(tmp_path):
  (tmp_path / workdir_lib.CHECKPOINT_DIR).mkdir()
  with pytest.raises(workdir_lib.WorkdirConflict, match="no flags.txt"):
    workdir_lib.claim(_CONFIG, tmp_path, overwrite=False)
  assert workdir_lib.claim(_CONFIG, tmp_path, overwrite=True) is True


def test_replace_run_deletes_the_run_files_only(tmp_path):
  workdir_lib.write_config(_CONFIG, tmp_path)
  workdir_lib.write_history(tmp_path, [{"epoch": 1}])
  (tmp_path / workdir_lib.CHECKPOINT_DIR / "1").mkdir(parents=True)
  (tmp_path / workdir_lib.DAMAGED_DIR).mkdir()
  (tmp_path / "notes.txt").write_text("mine")
  with workdir_lib.locked(tmp_path):
    workdir_lib.replace_run(tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == [workdir_lib.LOCK_FILE, "notes.txt"]


def test_history_round_trip(tmp_path):
  assert workdir_lib.read_history(tmp_path) == []
  history = [{"epoch": 1, "auc": 0.5}, {"epoch": 2, "auc": 0.75}]
  workdir_lib.write_history(tmp_path, history)
  assert workdir_lib.read_history(tmp_path) == history


def test_config_json_is_what_is_read_back_and_old_runs_have_flags_txt(tmp_path):
  workdir_lib.write_config(_CONFIG, tmp_path)
  assert TrainConfig.from_json(tmp_path / workdir_lib.CONFIG_FILE) == _CONFIG
  assert TrainConfig.from_flagfile(tmp_path / workdir_lib.FLAGS_FILE) == _CONFIG
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(
      dataclasses.replace(_CONFIG, epochs=7).to_json())
  assert workdir_lib.read_config(tmp_path).epochs == 7  # config.json wins
  (tmp_path / workdir_lib.CONFIG_FILE).unlink()  # a run written before config.json existed
  assert workdir_lib.read_config(tmp_path) == _CONFIG
  assert workdir_lib.claim(_CONFIG, tmp_path, overwrite=False) is False  # it resumes


def test_an_unreadable_config_json_is_refused_unless_overwrite(tmp_path):
  (tmp_path / workdir_lib.CONFIG_FILE).write_text("{not json")
  with pytest.raises(workdir_lib.WorkdirConflict, match="unreadable"):
    workdir_lib.claim(_CONFIG, tmp_path, overwrite=False)
  assert workdir_lib.claim(_CONFIG, tmp_path, overwrite=True) is True


def test_the_data_a_run_trained_on_is_recorded_and_checked(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import scipy.sparse as sp  # pylint: disable=g-import-not-at-top
  train = sp.csr_matrix(np.eye(4, 5, dtype=bool))
  test = sp.csr_matrix(np.eye(4, 5, k=1, dtype=bool))
  fingerprint = workdir_lib.data_fingerprint(train, test)
  workdir_lib.check_data(tmp_path, fingerprint)  # nothing recorded (an older run): not checked
  workdir_lib.write_data(tmp_path, fingerprint)
  workdir_lib.check_data(tmp_path, fingerprint)
  moved = test[[3, 2, 1, 0]]  # the same counts, other positives
  with pytest.raises(errors.WorkdirError, match="the same counts, other positives"):
    workdir_lib.check_data(tmp_path, workdir_lib.data_fingerprint(train, moved))
  with pytest.raises(errors.WorkdirError, match="users 4 -> 3"):
    workdir_lib.check_data(tmp_path, workdir_lib.data_fingerprint(train[:3], test[:3]))
  workdir_lib.write_data(tmp_path, workdir_lib.data_fingerprint(train, moved))  # once only
  workdir_lib.check_data(tmp_path, fingerprint)
  for text, message in (("[1]", "users None -> 4"), ("{", "is not JSON")):
    (tmp_path / workdir_lib.DATA_FILE).write_text(text)
    with pytest.raises(errors.WorkdirError, match=message):
      workdir_lib.check_data(tmp_path, fingerprint)
