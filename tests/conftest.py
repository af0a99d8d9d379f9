"""Shared pytest fixtures for tripjax."""

import os
import pathlib

import pytest


@pytest.fixture(scope="session")
def data_dir():
  """The folder that holds real MovieLens releases (TRIPJAX_DATA_DIR); skips when absent."""
  path = os.environ.get("TRIPJAX_DATA_DIR")
  if not path or not (pathlib.Path(path) / "ml-100k" / "u.data").exists():
    pytest.skip("TRIPJAX_DATA_DIR does not point at a folder holding ml-100k/")
  return pathlib.Path(path)
