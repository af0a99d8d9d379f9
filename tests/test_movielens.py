"""Tests for tripjax.data.movielens: native layouts, lookup order, bad input, real ML-100K."""

import pathlib

import numpy as np
import pandas as pd
import pytest

from tripjax.data import movielens

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
  with pytest.raises(ValueError, match="unknown MovieLens dataset 'ml-2m'") as info:
    movielens.load_movielens("ml-2m")
  for name in movielens.DATASETS:
    assert name in str(info.value)


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


def test_lookup_order_data_dir_then_env_then_cache(tmp_path, monkeypatch):
  arg, env, cache = tmp_path / "arg", tmp_path / "env", tmp_path / "cache"
  write_ml1m(arg, ratings="1::1::1::1\n")
  write_ml1m(env, ratings="2::1::2::2\n")
  write_ml1m(cache, ratings="3::1::3::3\n")
  monkeypatch.setenv("TRIPJAX_DATA_DIR", str(env))
  load = lambda: movielens.load_movielens("ml-1m", data_dir=arg, download=False)[0]
  assert load()["user_id"].tolist() == [1]
  (arg / "ml-1m" / "ratings.dat").unlink()
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
  with pytest.raises(FileNotFoundError) as info:
    movielens.load_movielens("ml-100k", data_dir=tmp_path / "d", download=False)
  message = str(info.value)
  assert "http://127.0.0.1:9/ml-100k.zip" in message
  assert str(tmp_path / "d" / "ml-100k") in message
  assert "u.data" in message


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
  with pytest.raises(ValueError) as info:
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
])
def test_malformed_items_name_file_and_line(tmp_path, layout, folder, name, text, line, reason):
  {"100k": write_ml100k, "dat": write_ml1m,
   "csv": lambda root: write_csv_release(root, "ml-20m")}[layout](tmp_path)
  path = tmp_path / folder / name
  _write(path, text)
  with pytest.raises(ValueError) as info:
    movielens.load_movielens(folder, data_dir=tmp_path, download=False)
  assert f"{path}, line {line}: {reason}" in str(info.value)


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
