"""Tests for tripjax.data.movielens: native layouts, lookup order, bad input, real ML-100K."""

import codecs
import pathlib

import numpy as np
import pandas as pd
import pytest

from tripjax import errors
from tripjax.data import movielens
from tripjax.data import registry

RATING_DTYPES = {"user_id": np.int64, "item_id": np.int64, "rating": np.float32,
                 "timestamp": np.int64}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
  """Keeps every test away from the real cache, $TRIPJAX_DATA_DIR and the network."""
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setenv("TRIPJAX_DATA_DIR", str(tmp_path / "no-env-data"))
  # Port 9 (discard) on loopback refuses connections: a stray download fails at once.
  monkeypatch.setenv("TRIPJAX_MOVIELENS_URL", "http://127.0.0.1:9")


def _write(path: pathlib.Path, text: str, encoding: str = "utf-8") -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(text.encode(encoding))


def _flags(*genres):
  return "|".join("1" if g in genres else "0" for g in movielens.ML_100K_GENRES)


def write_ml100k(root: pathlib.Path) -> None:
  folder = root / "ml-100k"
  _write(folder / "u.data", "196\t242\t3\t881250949\n186\t302\t5\t891717742\n22\t1\t1\t878887116\n")
  toy_story = _flags("Animation", "Children's", "Comedy")
  _write(folder / "u.item",
         f"1|Toy Story (1995)|01-Jan-1995||http://x|{toy_story}\n"
         f"242|Misérables, Les (1995)|01-Jan-1995||http://x|{_flags('Drama', 'War')}\n"
         f"302|unknown||||{_flags()}\n",
         encoding="latin-1")


def write_ml1m(root: pathlib.Path, folder: str = "ml-1m", ratings: str | None = None) -> None:
  folder = root / folder
  _write(folder / "ratings.dat", ratings or "1::1193::5::978300760\n1::661::3::978302109\n"
         "6040::1::4::956703932\n")
  _write(folder / "movies.dat",
         "1::Toy Story (1995)::Animation|Children's|Comedy\n"
         "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
         "1193::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n",
         encoding="latin-1")


def write_ml10m(root: pathlib.Path) -> None:
  folder = root / "ml-10M100K"
  _write(folder / "ratings.dat", "1::122::5::838985046\n1::185::4.5::838983525\n"
         "71567::2::0.5::912580553\n")
  _write(folder / "movies.dat",
         "2::Jumanji (1995)::Adventure|Children|Fantasy\n"
         "122::Boomerang (1992)::Comedy|Romance\n"
         "185::Net, The (1995)::(no genres listed)\n")


CSV_RATINGS = ("userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,0.5,1112484676\n"
               "138493,2,5.0,1260209720\n")
CSV_MOVIES = ('movieId,title,genres\n'
              '2,Jumanji (1995),Adventure|Children|Fantasy\n'
              '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",'
              'Adventure|Drama|Fantasy|Mystery|Sci-Fi\n'
              '131262,"Innocence ""Uncut"", Part 2 (2014)",(no genres listed)\n')


def write_csv_release(root: pathlib.Path, folder: str) -> None:
  _write(root / folder / "ratings.csv", CSV_RATINGS)
  _write(root / folder / "movies.csv", CSV_MOVIES)


def _check_frames(ratings: pd.DataFrame, items: pd.DataFrame) -> None:
  assert list(ratings.columns) == list(RATING_DTYPES)
  for column, dtype in RATING_DTYPES.items():
    assert ratings[column].dtype == dtype, column
  assert list(items.columns) == ["item_id", "title", "genres"]
  assert items["item_id"].dtype == np.int64
  assert all(isinstance(t, str) for t in items["title"])
  assert all(isinstance(g, list) and all(isinstance(x, str) for x in g) for g in items["genres"])


def _genres(items, item_id):
  return items.set_index("item_id").loc[item_id, "genres"]


def _title(items, item_id):
  return items.set_index("item_id").loc[item_id, "title"]


def test_ml100k_layout(tmp_path):
  write_ml100k(tmp_path)
  ratings, items = movielens.load_movielens("ml-100k", data_dir=tmp_path, download=False)
  _check_frames(ratings, items)
  np.testing.assert_array_equal(ratings["user_id"], [196, 186, 22])
  np.testing.assert_array_equal(ratings["item_id"], [242, 302, 1])
  np.testing.assert_array_equal(ratings["rating"], [3, 5, 1])
  np.testing.assert_array_equal(ratings["timestamp"], [881250949, 891717742, 878887116])
  assert _genres(items, 1) == ["Animation", "Children's", "Comedy"]
  assert _title(items, 242) == "Misérables, Les (1995)"  # latin-1 decoded
  assert _genres(items, 242) == ["Drama", "War"]
  assert _genres(items, 302) == []


def test_ml100k_genre_flags_follow_the_documented_order(tmp_path):
  write_ml100k(tmp_path)
  line = "7|All (1999)||||" + "|".join(["1"] * 19) + "\n"
  _write(tmp_path / "ml-100k" / "u.item", line)
  _, items = movielens.load_movielens("ml-100k", data_dir=tmp_path, download=False)
  assert _genres(items, 7) == list(movielens.ML_100K_GENRES)
  assert movielens.ML_100K_GENRES[0] == "unknown" and movielens.ML_100K_GENRES[-1] == "Western"


def test_ml1m_layout_latin1(tmp_path):
  write_ml1m(tmp_path)
  ratings, items = movielens.load_movielens("ml-1m", data_dir=tmp_path, download=False)
  _check_frames(ratings, items)
  np.testing.assert_array_equal(ratings["user_id"], [1, 1, 6040])
  np.testing.assert_array_equal(ratings["item_id"], [1193, 661, 1])
  np.testing.assert_array_equal(ratings["rating"], [5, 3, 4])
  np.testing.assert_array_equal(ratings["timestamp"], [978300760, 978302109, 956703932])
  assert _title(items, 1193) == "Cité des enfants perdus, La (1995)"
  assert _genres(items, 1193) == ["Adventure", "Sci-Fi"]
  assert _genres(items, 1) == ["Animation", "Children's", "Comedy"]


def test_ml10m_layout_half_stars_and_folder(tmp_path):
  write_ml10m(tmp_path)
  ratings, items = movielens.load_movielens("ml-10m", data_dir=tmp_path, download=False)
  _check_frames(ratings, items)
  np.testing.assert_array_equal(ratings["rating"], np.array([5, 4.5, 0.5], np.float32))
  np.testing.assert_array_equal(ratings["user_id"], [1, 1, 71567])
  assert _genres(items, 185) == []
  assert _title(items, 185) == "Net, The (1995)"
  assert _genres(items, 2) == ["Adventure", "Children", "Fantasy"]


def test_ml10m_latin1_movies_fall_back(tmp_path):
  write_ml10m(tmp_path)
  _write(tmp_path / "ml-10M100K" / "movies.dat", "2::Amélie (2001)::Comedy\n", encoding="latin-1")
  _, items = movielens.load_movielens("ml-10m", data_dir=tmp_path, download=False)
  assert _title(items, 2) == "Amélie (2001)"


@pytest.mark.parametrize("name", ["ml-20m", "ml-25m", "ml-latest-small", "ml-latest"])
def test_csv_layouts(tmp_path, name):
  write_csv_release(tmp_path, name)
  ratings, items = movielens.load_movielens(name, data_dir=tmp_path, download=False)
  _check_frames(ratings, items)
  np.testing.assert_array_equal(ratings["user_id"], [1, 1, 138493])
  np.testing.assert_array_equal(ratings["item_id"], [2, 29, 2])
  np.testing.assert_array_equal(ratings["rating"], np.array([3.5, 0.5, 5.0], np.float32))
  np.testing.assert_array_equal(ratings["timestamp"], [1112486027, 1112484676, 1260209720])
  assert _title(items, 29) == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
  assert _genres(items, 29) == ["Adventure", "Drama", "Fantasy", "Mystery", "Sci-Fi"]
  assert _title(items, 131262) == 'Innocence "Uncut", Part 2 (2014)'
  assert _genres(items, 131262) == []
  assert len(items) == 3


def test_latin1_title_with_next_line_byte_stays_one_line(tmp_path):
  # 0x85 decodes to U+0085, which str.splitlines() would treat as a line break.
  write_ml1m(tmp_path)
  _write(tmp_path / "ml-1m" / "movies.dat", "5::A\x85B (1990)::Drama\n", encoding="latin-1")
  _, items = movielens.load_movielens("ml-1m", data_dir=tmp_path, download=False)
  assert _title(items, 5) == "A\x85B (1990)"


def test_unknown_name_lists_known_names():
  with pytest.raises(errors.InvalidInput, match="unknown MovieLens dataset 'ml-2m'") as info:
    movielens.load_movielens("ml-2m")
  for name in movielens.DATASETS:
    assert name in str(info.value)
  with pytest.raises(errors.InvalidInput, match="Unknown dataset 'ml-2m'"):
    registry.load_dataset("ml-2m")


def test_datasets_registry():
  assert set(movielens.DATASETS) == {"ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m",
                                     "ml-latest-small", "ml-latest"}
  assert movielens.DATASETS["ml-10m"].folder == "ml-10M100K"
  assert movielens.DATASETS["ml-1m"].url.startswith("http://127.0.0.1:9/")  # env override
  for spec in movielens.DATASETS.values():
    assert spec.md5 is None or len(spec.md5) == 32


def test_default_url_is_grouplens(monkeypatch):
  monkeypatch.delenv("TRIPJAX_MOVIELENS_URL")
  assert (movielens.archive_url("ml-1m")
          == "https://files.grouplens.org/datasets/movielens/ml-1m.zip")


def test_lookup_order_env_then_cache(tmp_path, monkeypatch):
  env, cache = tmp_path / "env", tmp_path / "cache"
  write_ml1m(env, ratings="2::1::2::2\n")
  write_ml1m(cache, ratings="3::1::3::3\n")
  monkeypatch.setenv("TRIPJAX_DATA_DIR", str(env))
  load = lambda: movielens.load_movielens("ml-1m", download=False)[0]
  assert load()["user_id"].tolist() == [2]
  (env / "ml-1m" / "ratings.dat").unlink()
  assert load()["user_id"].tolist() == [3]
  (cache / "ml-1m" / "ratings.dat").unlink()
  with pytest.raises(FileNotFoundError, match="ml-1m.zip"):
    load()


def test_cache_dir_argument_overrides_env(tmp_path):
  write_ml1m(tmp_path / "mycache")
  ratings, _ = movielens.load_movielens("ml-1m", download=False, cache_dir=tmp_path / "mycache")
  assert len(ratings) == 3


def test_missing_without_download_says_where_to_put_files(tmp_path):
  with pytest.raises(movielens.ReleaseNotFound) as info:
    movielens.load_movielens("ml-100k", download=False)
  message = str(info.value)
  assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, errors.DataError)
  assert "http://127.0.0.1:9/ml-100k.zip" in message
  assert str(tmp_path / "no-env-data" / "ml-100k") in message
  assert str(tmp_path / "cache" / "ml-100k") in message
  assert "u.data" in message
  assert "\n" not in message


# --- an explicit data_dir is used or refused, never replaced ----------------------------------


@pytest.fixture
def releases_elsewhere(tmp_path, monkeypatch):
  """Good ml-100k releases in $TRIPJAX_DATA_DIR and the cache, which must not stand in for an
  explicit data_dir (nor may a download: its URL refuses connections)."""
  for root in (tmp_path / "env", tmp_path / "cache"):
    write_ml100k(root)
  monkeypatch.setenv("TRIPJAX_DATA_DIR", str(tmp_path / "env"))


def _missing_u_item(tmp_path):
  write_ml100k(tmp_path / "mine")
  (tmp_path / "mine" / "ml-100k" / "u.item").unlink()
  return tmp_path / "mine", [str(tmp_path / "mine" / "ml-100k" / "u.item")]


def _missing_both(tmp_path):
  (tmp_path / "mine").mkdir()
  folder = tmp_path / "mine" / "ml-100k"
  return tmp_path / "mine", [str(folder / "u.data"), str(folder / "u.item")]


def _missing_folder(tmp_path):
  return tmp_path / "nowhere", [str(tmp_path / "nowhere"), "does not exist"]


def _regular_file(tmp_path):
  _write(tmp_path / "afile", "x")
  return tmp_path / "afile", [str(tmp_path / "afile"), "is not a folder"]


def _release_folder_missing_u_data(tmp_path):
  write_ml100k(tmp_path / "mine")
  (tmp_path / "mine" / "ml-100k" / "u.data").unlink()
  return tmp_path / "mine" / "ml-100k", [str(tmp_path / "mine" / "ml-100k" / "u.data")]


def _folder_of_another_release(tmp_path):
  write_ml100k(tmp_path / "mine")
  return tmp_path / "mine" / "ml-100k", ["the folder of MovieLens ml-100k, not ml-1m"]


@pytest.mark.parametrize("case", [_missing_u_item, _missing_both, _missing_folder, _regular_file,
                                  _release_folder_missing_u_data, _folder_of_another_release])
@pytest.mark.parametrize("loader", ["load_movielens", "load_dataset", "prepare"])
def test_explicit_data_dir_without_the_release_fails_naming_what_is_missing(
    tmp_path, releases_elsewhere, case, loader):
  data_dir, expected = case(tmp_path)
  name = "ml-1m" if case is _folder_of_another_release else "ml-100k"
  load = {"load_movielens": movielens.load_movielens, "load_dataset": registry.load_dataset,
          "prepare": registry.prepare}[loader]
  with pytest.raises(errors.DataError) as info:
    load(name, data_dir=data_dir, download=True)
  message = str(info.value)
  assert isinstance(info.value, FileNotFoundError)
  for part in expected:
    assert part in message
  assert "\n" not in message


@pytest.mark.parametrize("where", ["ml-100k", "holds-the-files"])
def test_explicit_data_dir_may_be_the_release_folder_itself(tmp_path, releases_elsewhere, where):
  write_ml100k(tmp_path / "mine")
  folder = tmp_path / "mine" / "ml-100k"
  if where != "ml-100k":
    folder = folder.rename(tmp_path / "mine" / where)
  _write(folder / "u.data", "5\t242\t4\t1\n")
  ratings, items = movielens.load_movielens("ml-100k", data_dir=folder, download=False)
  assert ratings["user_id"].tolist() == [5]
  assert len(items) == 3


def test_explicit_data_dir_wins_over_env_and_cache(tmp_path, releases_elsewhere):
  write_ml100k(tmp_path / "mine")
  _write(tmp_path / "mine" / "ml-100k" / "u.data", "7\t1\t5\t1\n")
  ratings, _ = movielens.load_movielens("ml-100k", data_dir=tmp_path / "mine")
  assert ratings["user_id"].tolist() == [7]
  ratings, _ = movielens.load_movielens("ml-100k", data_dir="")  # "" is the flags' "unset"
  assert ratings["user_id"].tolist() == [196, 186, 22]


def test_data_dir_flag_failure_is_one_line_on_stderr(tmp_path, run_cli):
  data_dir, (missing,) = _missing_u_item(tmp_path)
  write_ml100k(tmp_path / "dup")
  _write(tmp_path / "dup" / "ml-100k" / "u.item", f"1|A||||{_flags()}\n2|B||||{_flags()}\n"
         f"1|C||||{_flags()}\n")
  done = run_cli("experiments.describe", {
      "missing": ["--dataset=ml-100k", f"--data_dir={data_dir}"],
      "duplicate": ["--dataset=ml-100k", f"--data_dir={tmp_path / 'dup'}"]})
  for case, expected in [("missing", missing),
                         ("duplicate", f"{tmp_path / 'dup' / 'ml-100k' / 'u.item'}, line 3")]:
    assert done[case].returncode != 0, case
    lines = done[case].stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done[case].stderr


# --- malformed input --------------------------------------------------------------------------

BAD_DAT = [
    ("1::2::3::4\n5::6::7\n", 2, "expected 4 fields"),
    ("1::2::3::4\n1::2::3::4\n5::6::7::8::9\n", 3, "expected 4 fields"),
    ("1::x::3::4\n", 1, "item_id 'x' is not an integer"),
    ("1::2::3::4\n\n1::2::good::4\n", 3, "rating 'good' is not a finite number"),
    ("1::2::3::4\n1::2::::4\n", 2, "rating '' is not"),
    ("1::2::3::4\n1::2::nan::4\n", 2, "rating 'nan' is not"),
    ("1.5::2::3::4\n", 1, "user_id '1.5' is not an integer"),
    ("1::2::3::4\n1::2::3::t\n", 2, "timestamp 't' is not an integer"),
    ("1::2::3::4\n99999999999999999999::2::3::4\n", 2,
     "user_id '99999999999999999999' is outside the int64 range"),
    ("1::2::3::4\n1::9223372036854775808::3::4\n", 2, "item_id '9223372036854775808' is outside"),
    ("1::2::3::4\n1::2::1e40::4\n", 2, "rating '1e40' is not a finite number"),
]


@pytest.mark.parametrize("text,line,reason", BAD_DAT)
def test_malformed_dat_names_file_and_line(tmp_path, text, line, reason):
  write_ml1m(tmp_path, ratings=text)
  path = tmp_path / "ml-1m" / "ratings.dat"
  with pytest.raises(errors.DataError) as info:
    movielens.load_movielens("ml-1m", data_dir=tmp_path, download=False)
  assert f"{path}, line {line}: {reason}" in str(info.value)


def test_malformed_u_data_names_file_and_line(tmp_path):
  write_ml100k(tmp_path)
  path = tmp_path / "ml-100k" / "u.data"
  _write(path, "1\t2\t3\t4\n1\t2\t3\n")
  with pytest.raises(ValueError, match=f"{path}, line 2: expected 4 fields separated by '\\\\t'"):
    movielens.load_movielens("ml-100k", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("layout,folder,name,text", [
    ("100k", "ml-100k", "u.data", ""),
    ("100k", "ml-100k", "u.data", "\n\n"),
    ("dat", "ml-1m", "ratings.dat", ""),
    ("csv", "ml-20m", "ratings.csv", "userId,movieId,rating,timestamp\n"),
])
def test_empty_ratings_file_is_an_error_naming_it(tmp_path, layout, folder, name, text):
  {"100k": write_ml100k, "dat": write_ml1m,
   "csv": lambda root: write_csv_release(root, "ml-20m")}[layout](tmp_path)
  path = tmp_path / folder / name
  _write(path, text)
  with pytest.raises(ValueError, match=f"{path}: the ratings file is empty"):
    movielens.load_movielens(folder, data_dir=tmp_path, download=False)


def test_malformed_ratings_csv_counts_the_header_line(tmp_path):
  write_csv_release(tmp_path, "ml-20m")
  path = tmp_path / "ml-20m" / "ratings.csv"
  _write(path, "userId,movieId,rating,timestamp\n1,2,3.5,4\n1,2,x,4\n")
  with pytest.raises(ValueError, match=f"{path}, line 3: rating 'x'"):
    movielens.load_movielens("ml-20m", data_dir=tmp_path, download=False)


def test_ratings_csv_wrong_header(tmp_path):
  write_csv_release(tmp_path, "ml-20m")
  path = tmp_path / "ml-20m" / "ratings.csv"
  _write(path, "user,movie,rating,timestamp\n1,2,3.5,4\n")
  with pytest.raises(ValueError, match=f"{path}, line 1: expected the header"):
    movielens.load_movielens("ml-20m", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("layout,folder,name,text,line,reason", [
    ("100k", "ml-100k", "u.item", "1|A||||" + "0|" * 18 + "0\n2|B|||\n", 2, "expected 24 fields"),
    ("100k", "ml-100k", "u.item", "x|A||||" + "0|" * 18 + "0\n", 1, "item id 'x'"),
    ("100k", "ml-100k", "u.item", "1|A||||" + "0|" * 18 + "2\n", 1, "genre flags must be 0 or 1"),
    ("dat", "ml-1m", "movies.dat", "1::A::Drama\n\n2::B\n", 3, "expected 3 fields"),
    ("csv", "ml-20m", "movies.csv", 'movieId,title,genres\n1,"A, B",Drama\n2,C\n', 3,
     "expected 3 comma-separated fields"),
    ("csv", "ml-20m", "movies.csv", 'movieId,title,genres\n1,"A, B",Drama\nz,C,Drama\n', 3,
     "item id 'z'"),
    ("100k", "ml-100k", "u.item", "1.0|A||||" + "0|" * 18 + "0\n", 1,
     "item id '1.0' is not an integer"),
    ("dat", "ml-1m", "movies.dat", "1::A::Drama\n99999999999999999999::B::Drama\n", 2,
     "item id '99999999999999999999' is outside the int64 range"),
])
def test_malformed_items_name_file_and_line(tmp_path, layout, folder, name, text, line, reason):
  path, message = _items_error(tmp_path, layout, folder, name, text)
  assert f"{path}, line {line}: {reason}" in message


def _items_error(tmp_path, layout, folder, name, text):
  """(path, message) of the DataError that a release whose items file holds `text` raises."""
  {"100k": write_ml100k, "dat": write_ml1m,
   "csv": lambda root: write_csv_release(root, "ml-20m")}[layout](tmp_path)
  path = tmp_path / folder / name
  _write(path, text)
  with pytest.raises(errors.DataError) as info:
    movielens.load_movielens(folder, data_dir=tmp_path, download=False)
  return path, str(info.value)


# The C parser reads the ratings; the line checker explains its failures. They must accept the same
# fields: an accepted field loads with its value and does not hide a later bad line; a refused one
# is named with its line (`196.0` once read as user 196).
INT_FIELDS = [("196", 196), ("+196", 196), (" 196", 196), ("196 ", 196), ("-3", -3), ("0196", 196),
              ("196.0", None), ("196.", None), ("1e2", None), ("1E2", None), (".5e1", None),
              ("0x10", None), ("", None), ("1_000", None), ("\xa0196", None), ("19 6", None),
              ('"196"', None), ("inf", None), ("True", None)]
RATING_FIELDS = [("3.5", 3.5), (" 4 ", 4.0), ("+3", 3.0), ("3.", 3.0), (".5", 0.5), ("5e-1", 0.5),
                 ("1_0", None), ("inf", None), ("nan", None), ("Infinity", None), ("1e39", None),
                 ("0x1p1", None), ("", None), ("3 5", None), ("five", None)]
RATINGS_FILES = {"100k": ("ml-100k", "u.data", "\t", ""), "dat": ("ml-1m", "ratings.dat", "::", ""),
                 "csv": ("ml-20m", "ratings.csv", ",", "userId,movieId,rating,timestamp\n")}


def _write_ratings(root, layout, rows, prefix=b""):
  """A release of `layout` whose ratings file holds `rows` (lists of fields); returns its path."""
  folder, name, sep, header = RATINGS_FILES[layout]
  {"100k": write_ml100k, "dat": write_ml1m,
   "csv": lambda r: write_csv_release(r, "ml-20m")}[layout](root)
  path = root / folder / name
  path.write_bytes(prefix + (header + "".join(sep.join(r) + "\n" for r in rows)).encode("latin-1"))
  return path


@pytest.mark.parametrize("layout", list(RATINGS_FILES))
@pytest.mark.parametrize("column,field,value",
                         [(c, f, v) for c in ("user_id", "timestamp") for f, v in INT_FIELDS]
                         + [("rating", f, v) for f, v in RATING_FIELDS])
def test_fast_parser_and_line_checker_agree(tmp_path, layout, column, field, value):
  good, bad = ["1", "2", "3", "4"], ["1", "2", "x", "4"]
  tricky = list(good)
  tricky[movielens.RATING_COLUMNS.index(column)] = field
  first = 2 if layout == "csv" else 1
  folder = RATINGS_FILES[layout][0]
  load = lambda: movielens.load_movielens(folder, data_dir=tmp_path, download=False)[0]
  path = _write_ratings(tmp_path, layout, [good, tricky, good])
  if value is None:
    with pytest.raises(errors.DataError, match=f"^{path}, line {first + 1}: "):
      load()
    return
  assert load()[column].tolist() == [int(good[movielens.RATING_COLUMNS.index(column)]), value,
                                     int(good[movielens.RATING_COLUMNS.index(column)])]
  _write_ratings(tmp_path, layout, [good, tricky, bad])
  with pytest.raises(errors.DataError, match=f"^{path}, line {first + 2}: rating 'x'"):
    load()


@pytest.mark.parametrize("layout", ["100k", "dat"])
def test_utf8_byte_order_mark_before_ratings_is_ignored(tmp_path, layout):
  folder = RATINGS_FILES[layout][0]
  load = lambda: movielens.load_movielens(folder, data_dir=tmp_path, download=False)[0]
  rows = [["196", "242", "3", "881250949"], ["186", "302", "5", "891717742"]]
  _write_ratings(tmp_path, layout, rows, prefix=codecs.BOM_UTF8)
  assert load()["user_id"].tolist() == [196, 186]
  path = _write_ratings(tmp_path, layout, rows + [["1", "2", "3"]], prefix=codecs.BOM_UTF8)
  with pytest.raises(errors.DataError, match=f"^{path}, line 3: expected 4 fields"):
    load()


def test_utf16_ratings_file_is_named_as_such(tmp_path):
  path = tmp_path / "ml-100k" / "u.data"
  write_ml100k(tmp_path)
  path.write_bytes("196\t242\t3\t881250949\n".encode("utf-16"))
  with pytest.raises(errors.DataError, match=f"^{path}: starts with a UTF-16 byte-order mark"):
    movielens.load_movielens("ml-100k", data_dir=tmp_path, download=False)


U_ITEM_CAFE = f"1|Café (1995)||||{_flags('Drama')}\n2|Plain (1996)||||{_flags()}\n"


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8", "utf-8-sig"])
def test_u_item_titles_decode_whether_latin1_or_utf8(tmp_path, encoding):
  write_ml100k(tmp_path)
  _write(tmp_path / "ml-100k" / "u.item", U_ITEM_CAFE, encoding=encoding)
  _, items = movielens.load_movielens("ml-100k", data_dir=tmp_path, download=False)
  assert items["title"].tolist() == ["Café (1995)", "Plain (1996)"]
  assert items["item_id"].tolist() == [1, 2]


def test_utf8_movies_dat_of_a_latin1_release_decodes(tmp_path):
  write_ml1m(tmp_path)
  _write(tmp_path / "ml-1m" / "movies.dat", "1193::Cité des enfants perdus, La (1995)::Sci-Fi\n")
  _, items = movielens.load_movielens("ml-1m", data_dir=tmp_path, download=False)
  assert _title(items, 1193) == "Cité des enfants perdus, La (1995)"


def test_byte_order_mark_before_latin1_items_is_named(tmp_path):
  write_ml100k(tmp_path)
  path = tmp_path / "ml-100k" / "u.item"
  path.write_bytes(codecs.BOM_UTF8 + U_ITEM_CAFE.encode("latin-1"))
  with pytest.raises(errors.DataError) as info:
    movielens.load_movielens("ml-100k", data_dir=tmp_path, download=False)
  assert str(info.value).startswith(f"{path}, line 1: byte 0xe9 is not UTF-8")
  assert "byte-order mark" in str(info.value)


def test_latin1_movies_csv_names_the_line_of_the_first_bad_byte(tmp_path):
  write_csv_release(tmp_path, "ml-20m")
  path = tmp_path / "ml-20m" / "movies.csv"
  _write(path, CSV_MOVIES, encoding="latin-1")
  with pytest.raises(errors.DataError) as info:
    movielens.load_movielens("ml-20m", data_dir=tmp_path, download=False)
  assert str(info.value).startswith(f"{path}, line 3: byte 0xe9 is not valid utf-8 text")


@pytest.mark.parametrize("layout,folder,name,text,line,first", [
    ("100k", "ml-100k", "u.item", f"1|A||||{_flags()}\n2|B||||{_flags()}\n\n1|C||||{_flags()}\n",
     4, 1),
    ("dat", "ml-1m", "movies.dat", "5::A::Drama\n6::B::Drama\n5::C::Drama\n", 3, 1),
    ("csv", "ml-20m", "movies.csv", 'movieId,title,genres\n7,"A, B",Drama\n7,C,Drama\n', 3, 2),
])
def test_duplicate_item_id_names_file_and_both_lines(tmp_path, layout, folder, name, text, line,
                                                     first):
  path, message = _items_error(tmp_path, layout, folder, name, text)
  assert message.startswith(f"{path}, line {line}: item id ")
  assert f"already listed on line {first}" in message


# --- real MovieLens 100K ----------------------------------------------------------------------


def test_real_ml100k(data_dir):
  ratings, items = movielens.load_movielens("ml-100k", data_dir=data_dir, download=False)
  _check_frames(ratings, items)
  assert len(ratings) == 100_000
  assert int((ratings["rating"] >= 4).sum()) == 55_375
  assert ratings["user_id"].nunique() == 943
  assert ratings["item_id"].nunique() == 1682
  assert len(items) == 1682
  assert _title(items, 1) == "Toy Story (1995)"
  assert _genres(items, 1) == ["Animation", "Children's", "Comedy"]
  assert set(ratings["rating"].unique()) == {1, 2, 3, 4, 5}
