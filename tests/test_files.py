"""Tests of tripjax.files: atomic writes."""

import json
import os

import pytest

from tripjax import files


def test_writes_text_and_bytes_creating_the_folder(tmp_path):
  path = tmp_path / "a" / "b" / "out.txt"
  assert files.write_atomic(path, "héllo\n") == path
  assert path.read_bytes() == "héllo\n".encode("utf-8")
  files.write_atomic(path, b"\x00\x01")  # replaces
  assert path.read_bytes() == b"\x00\x01"
  assert sorted(os.listdir(path.parent)) == ["out.txt"]


def test_new_files_get_the_umask_mode(tmp_path):
  umask = os.umask(0o027)
  try:
    files.write_atomic(tmp_path / "f", "x")
    (tmp_path / "g").write_text("x")
  finally:
    os.umask(umask)
  assert (tmp_path / "f").stat().st_mode & 0o777 == (tmp_path / "g").stat().st_mode & 0o777
  assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("fail_in", ["fsync", "replace"])
def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch, fail_in):
  path = tmp_path / "results.json"
  path.write_text("old")

  def boom(*args):
    raise OSError(f"disk full during {fail_in}")

  monkeypatch.setattr(os, fail_in, boom)
  with pytest.raises(OSError, match="disk full"):
    files.write_atomic(path, "new" * 1000)
  monkeypatch.undo()
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["results.json"]


def test_an_interrupted_write_leaves_no_temp_file(tmp_path, monkeypatch):
  real_fdopen = os.fdopen

  class Interrupting:
    def __init__(self, f):
      self._f = f

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._f.close()

    def write(self, data):
      self._f.write(data[:3])
      raise KeyboardInterrupt  # killed mid-write

  monkeypatch.setattr(os, "fdopen", lambda fd, mode: Interrupting(real_fdopen(fd, mode)))
  with pytest.raises(KeyboardInterrupt):
    files.write_atomic(tmp_path / "x.txt", "abcdef")
  monkeypatch.undo()
  assert os.listdir(tmp_path) == []


def test_write_json_atomic(tmp_path):
  path = tmp_path / "r.json"
  files.write_json_atomic(path, {"auc": 0.9, "k": [1, 2]})
  assert json.loads(path.read_text()) == {"auc": 0.9, "k": [1, 2]}
  assert path.read_text().endswith("}\n")
  with pytest.raises(TypeError):
    files.write_json_atomic(path, {"bad": object()})
  assert json.loads(path.read_text()) == {"auc": 0.9, "k": [1, 2]}  # untouched


def test_rejects_other_data(tmp_path):
  with pytest.raises(TypeError, match="data must be str or bytes, got dict"):
    files.write_atomic(tmp_path / "x", {"a": 1})
  assert os.listdir(tmp_path) == []


def test_a_destination_it_cannot_write_is_named_not_its_temporary(tmp_path):
  (tmp_path / "folder").mkdir()
  (tmp_path / "a_file").write_text("kept")
  for path, error in ((tmp_path / "folder", IsADirectoryError),
                      (tmp_path / "a_file" / "x.json", NotADirectoryError)):
    with pytest.raises(error) as raised:
      files.write_atomic(path, "x")
    assert raised.value.filename == str(path)
    with pytest.raises(error):
      files.check_writable(path)
  assert (tmp_path / "a_file").read_text() == "kept"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder"]
  files.check_writable(tmp_path / "new" / "deeper" / "x.json")  # folders to be created: fine
