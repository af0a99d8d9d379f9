"""Tests for tripjax.data.movielens_users: u.user, users.dat, lookup, bad lines, real ML-100K."""

import codecs
import pathlib

import numpy as np
import pytest

from tripjax import errors
from tripjax.data import movielens
from tripjax.data import movielens_users

U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n\n3|23|M|writer|32067\n"
USERS_DAT = ("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n"
             "4::M::45::7::02460\n5::M::25::20::55455\n")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
  """Keeps every test away from the real cache, $TRIPJAX_DATA_DIR and the network."""
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setenv("TRIPJAX_DATA_DIR", str(tmp_path / "no-env-data"))
  monkeypatch.setenv("TRIPJAX_MOVIELENS_URL", "http://127.0.0.1:9")


def _write(path: pathlib.Path, text: str | bytes) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(text if isinstance(text, bytes) else text.encode())
  return path


def _release(root: pathlib.Path, name: str, users: str | None) -> pathlib.Path:
  """A release folder with one-line ratings and items files (and the users file when given)."""
  spec = movielens.DATASETS[name]
  folder = root / spec.folder
  sep = {"100k": "\t", "dat": "::", "csv": ","}[spec.layout]
  ratings = sep.join(["1", "1", "5", "881250949"]) + "\n"
  if spec.layout == "csv":
    ratings = "userId,movieId,rating,timestamp\n" + ratings
  _write(folder / spec.files[0], ratings)
  _write(folder / spec.files[1], "")
  if users is not None:
    _write(folder / movielens_users.USER_FILES[name][0], users)
  return folder


def _check_dtypes(frame):
  assert list(frame.columns) == list(movielens_users.USER_COLUMNS)
  assert frame["user_id"].dtype == np.int64
  assert frame["age"].dtype == np.int64
  assert all(isinstance(v, str) for v in frame["gender"])
  assert all(isinstance(v, str) for v in frame["occupation"])


def test_u_user_layout(tmp_path):
  frame = movielens_users.read_users(_write(tmp_path / "u.user", U_USER), "100k")
  _check_dtypes(frame)
  assert frame["user_id"].tolist() == [1, 2, 3]
  assert frame["age"].tolist() == [24, 53, 23]
  assert frame["gender"].tolist() == ["M", "F", "M"]
  assert frame["occupation"].tolist() == ["technician", "other", "writer"]


def test_users_dat_layout_maps_codes_to_names(tmp_path):
  frame = movielens_users.read_users(_write(tmp_path / "users.dat", USERS_DAT), "dat")
  _check_dtypes(frame)
  assert frame["user_id"].tolist() == [1, 2, 3, 4, 5]
  assert frame["age"].tolist() == [1, 56, 25, 45, 25]
  assert frame["gender"].tolist() == ["F", "M", "M", "M", "M"]
  assert frame["occupation"].tolist() == [
      "K-12 student", "self-employed", "scientist", "executive/managerial", "writer"]


def test_ml1m_occupation_names_follow_the_readme():
  assert len(movielens_users.ML_1M_OCCUPATIONS) == 21
  assert movielens_users.ML_1M_OCCUPATIONS[0] == "other"
  assert movielens_users.ML_1M_OCCUPATIONS[17] == "technician/engineer"


def test_bom_and_crlf(tmp_path):
  path = _write(tmp_path / "u.user", codecs.BOM_UTF8 + U_USER.replace("\n", "\r\n").encode())
  frame = movielens_users.read_users(path, "100k")
  assert frame["user_id"].tolist() == [1, 2, 3]
  assert frame["occupation"].tolist() == ["technician", "other", "writer"]


@pytest.mark.parametrize("layout, text, line, message", [
    ("100k", "1|24|M|technician|85711\n2|53|F|other\n", 2, "expected 5 fields separated by '|'"),
    ("100k", "1|24|M|technician|85711\n2|5x|F|other|1\n", 2, "age '5x' is not an integer"),
    ("100k", "1|24|M|technician|85711\n\n2|200|F|other|1\n", 3, "age 200 is outside [0, 150)"),
    ("100k", "1|24|X|technician|85711\n", 1, "gender 'X' is not one of F, M"),
    ("100k", "1.0|24|M|technician|85711\n", 1, "user id '1.0' is not an integer"),
    ("100k", "1|24|M| |85711\n", 1, "the occupation is empty"),
    ("dat", "1::F::1::10::48067\n2::M::30::16::70072\n", 2, "age code 30 is not one of"),
    ("dat", "1::F::1::21::48067\n", 1, "occupation code 21 is outside [0, 21)"),
    ("dat", "1|F|1|10|48067\n", 1, "expected 5 fields separated by '::'"),
])
def test_bad_line_names_file_and_line(tmp_path, layout, text, line, message):
  path = _write(tmp_path / "users", text)
  with pytest.raises(errors.DataError) as info:
    movielens_users.read_users(path, layout)
  text = str(info.value)
  assert text.startswith(f"{path}, line {line}: ")
  assert message in text
  assert "\n" not in text


def test_duplicate_user_names_both_lines(tmp_path):
  path = _write(tmp_path / "u.user", U_USER + "2|30|M|artist|1\n")
  with pytest.raises(errors.DataError, match=r"line 5: user id 2 is already listed on line 2"):
    movielens_users.read_users(path, "100k")


def test_empty_file_and_unknown_layout(tmp_path):
  path = _write(tmp_path / "u.user", "\n \n")
  with pytest.raises(errors.DataError, match="users file is empty"):
    movielens_users.read_users(path, "100k")
  with pytest.raises(errors.InvalidInput, match="unknown MovieLens users layout 'csv'"):
    movielens_users.read_users(path, "csv")


@pytest.mark.parametrize("name, text, count", [("ml-100k", U_USER, 3), ("ml-1m", USERS_DAT, 5)])
def test_load_users_from_data_dir(tmp_path, name, text, count):
  _release(tmp_path, name, text)
  frame = movielens_users.load_users(name, data_dir=tmp_path, download=False)
  assert frame["user_id"].tolist() == list(range(1, count + 1))


def test_load_users_searches_like_load_movielens(tmp_path, monkeypatch):
  # $TRIPJAX_DATA_DIR holds the release (ratings and items) without its users file, the cache a
  # complete copy: the users must come from the folder the ratings are read from, so it fails.
  _release(tmp_path / "env", "ml-100k", None)
  _release(tmp_path / "cache", "ml-100k", U_USER)
  monkeypatch.setenv("TRIPJAX_DATA_DIR", str(tmp_path / "env"))
  with pytest.raises(movielens.ReleaseNotFound, match=r"env/ml-100k/u.user is missing.*"
                     r"--user_features"):
    movielens_users.load_users("ml-100k")
  _write(tmp_path / "env" / "ml-100k" / "u.user", "7|30|F|artist|1\n")
  assert movielens_users.load_users("ml-100k")["user_id"].tolist() == [7]


def test_load_users_missing_file_in_data_dir(tmp_path):
  _release(tmp_path, "ml-1m", None)
  with pytest.raises(movielens.ReleaseNotFound, match=r"ml-1m/users.dat is missing"):
    movielens_users.load_users("ml-1m", data_dir=tmp_path)


def test_load_users_absent_release_without_download(tmp_path):
  with pytest.raises(movielens.ReleaseNotFound, match=r"download=False.*u.user"):
    movielens_users.load_users("ml-100k", download=False)


@pytest.mark.parametrize("name", ["ml-10m", "ml-20m", "ml-25m", "ml-latest-small",
                                  "synthetic-tiny"])
def test_datasets_without_users_are_refused(name):
  with pytest.raises(errors.InvalidInput) as info:
    movielens_users.load_users(name)
  assert str(info.value).startswith("--user_features: dataset ")
  assert "has no user features" in str(info.value)
  assert not isinstance(info.value, errors.DataError)


@pytest.mark.parametrize("name", ["ml-5k", None, 3])
def test_unknown_name(name):
  with pytest.raises(errors.InvalidInput, match="unknown MovieLens dataset"):
    movielens_users.load_users(name)


def test_real_ml100k(data_dir):
  frame = movielens_users.load_users("ml-100k", data_dir=data_dir, download=False)
  _check_dtypes(frame)
  assert len(frame) == 943
  assert frame["user_id"].tolist() == list(range(1, 944))
  first = frame.iloc[0]
  assert (first["age"], first["gender"], first["occupation"]) == (24, "M", "technician")
  assert frame["occupation"].nunique() == 21
  assert set(frame["gender"]) == {"F", "M"}
  assert (frame["age"].min(), frame["age"].max()) == (7, 73)
