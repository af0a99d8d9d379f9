"""Tests for tripjax.data.download and MovieLens downloads, against a local HTTP server."""

import hashlib
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time
import types
import zipfile

import pytest

from tripjax import errors
from tripjax.data import download
from tripjax.data import movielens

TIMEOUT = 5.0  # every request in these tests is bounded by this many seconds

RATINGS_CSV = "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n2,2,4.0,1112484676\n"
MOVIES_CSV = 'movieId,title,genres\n2,"Jumanji, The (1995)",Adventure|Children\n'


def make_zip(files: dict) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
    for name, text in files.items():
      archive.writestr(name, text)
  return buf.getvalue()


def md5_line(name: str, body: bytes) -> bytes:
  """A checksum file in GroupLens' format."""
  return f"MD5 ({name}) = {hashlib.md5(body).hexdigest()}\n".encode()


LATEST_SMALL_ZIP = make_zip({"ml-latest-small/ratings.csv": RATINGS_CSV,
                             "ml-latest-small/movies.csv": MOVIES_CSV,
                             "ml-latest-small/README.txt": "readme"})


@pytest.fixture
def server():
  """An HTTP server on 127.0.0.1 serving `routes`: path -> (body, mode).

  mode "ok" serves the body; "drop" announces its full length, sends half and closes;
  "stall" never answers (until teardown). `requests` lists the paths asked for.
  """
  routes = {}
  requests = []
  release = threading.Event()

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):
      requests.append(self.path)
      if self.path not in routes:
        self.send_error(404)
        return
      body, mode = routes[self.path]
      if mode == "stall":
        release.wait(30)
        return
      self.send_response(200)
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body if mode == "ok" else body[:len(body) // 2])
      self.close_connection = True

    def log_message(self, *args):
      pass

  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  httpd.daemon_threads = True
  httpd.block_on_close = False
  thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
  thread.start()
  yield types.SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}", routes=routes,
                              requests=requests)
  release.set()
  httpd.shutdown()
  httpd.server_close()
  thread.join(TIMEOUT)


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv("TRIPJAX_DATA_DIR", str(tmp_path / "no-env-data"))
  monkeypatch.delenv("TRIPJAX_MOVIELENS_URL", raising=False)
  path = tmp_path / "cache"
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(path))
  return path


def _entries(path):
  return sorted(p.name for p in path.iterdir()) if path.exists() else []


def _load(name, server, **kwargs):
  return movielens.load_movielens(name, base_url=server.url, timeout=TIMEOUT, **kwargs)


def test_download_success_then_cached(server, cache):
  server.routes["/ml-latest-small.zip"] = (LATEST_SMALL_ZIP, "ok")
  server.routes["/ml-latest-small.zip.md5"] = (md5_line("ml-latest-small.zip",
                                                        LATEST_SMALL_ZIP), "ok")
  ratings, items = _load("ml-latest-small", server)
  assert ratings["rating"].tolist() == [3.5, 4.0]
  assert items["title"].tolist() == ["Jumanji, The (1995)"]
  assert _entries(cache) == ["ml-latest-small"]  # no archive, no temp file left
  assert _entries(cache / "ml-latest-small") == ["README.txt", "movies.csv", "ratings.csv"]
  server.routes.clear()  # a second load must not touch the network
  ratings2, _ = _load("ml-latest-small", server)
  assert ratings2.equals(ratings)


def test_download_shows_progress_when_asked(server, cache, capsys):
  server.routes["/ml-latest-small.zip"] = (LATEST_SMALL_ZIP, "ok")
  server.routes["/ml-latest-small.zip.md5"] = (md5_line("x", LATEST_SMALL_ZIP), "ok")
  _load("ml-latest-small", server, progress=True)
  assert "ml-latest-small.zip" in capsys.readouterr().err


def test_md5_mismatch_leaves_cache_empty(server, cache):
  server.routes["/ml-latest-small.zip"] = (LATEST_SMALL_ZIP, "ok")
  server.routes["/ml-latest-small.zip.md5"] = (md5_line("ml-latest-small.zip", b"other"), "ok")
  with pytest.raises(download.ChecksumError, match="MD5 mismatch") as info:
    _load("ml-latest-small", server)
  assert f"{server.url}/ml-latest-small.zip" in str(info.value)
  assert _entries(cache) == []


def test_pinned_md5_wins_over_the_served_md5_file(server, cache):
  # A zip with a matching .md5 beside it is still refused: ml-100k's MD5 is kept in the code.
  body = make_zip({"ml-100k/u.data": "1\t2\t3\t4\n", "ml-100k/u.item": "2|A||||" + "0|" * 18
                   + "1\n"})
  server.routes["/ml-100k.zip"] = (body, "ok")
  server.routes["/ml-100k.zip.md5"] = (md5_line("ml-100k.zip", body), "ok")
  with pytest.raises(download.ChecksumError, match=movielens.DATASETS["ml-100k"].md5):
    _load("ml-100k", server)
  assert _entries(cache) == []


def test_connection_dropped_mid_file_leaves_cache_empty(server, cache):
  server.routes["/ml-latest-small.zip"] = (LATEST_SMALL_ZIP, "drop")
  server.routes["/ml-latest-small.zip.md5"] = (md5_line("x", LATEST_SMALL_ZIP), "ok")
  with pytest.raises(download.DownloadError) as info:
    _load("ml-latest-small", server)
  message = str(info.value)
  assert f"{server.url}/ml-latest-small.zip" in message
  assert f"of {len(LATEST_SMALL_ZIP)} bytes" in message
  assert _entries(cache) == []


def test_broken_zip_with_matching_md5_leaves_cache_empty(server, cache):
  body = LATEST_SMALL_ZIP[:len(LATEST_SMALL_ZIP) - 40]  # central directory cut off
  server.routes["/ml-latest-small.zip"] = (body, "ok")
  server.routes["/ml-latest-small.zip.md5"] = (md5_line("x", body), "ok")
  with pytest.raises(download.DownloadError, match="broken zip"):
    _load("ml-latest-small", server)
  assert _entries(cache) == []


def test_archive_without_the_release_files_leaves_cache_empty(server, cache):
  body = make_zip({"ml-latest-small/ratings.csv": RATINGS_CSV})
  server.routes["/ml-latest-small.zip"] = (body, "ok")
  server.routes["/ml-latest-small.zip.md5"] = (md5_line("x", body), "ok")
  with pytest.raises(download.DownloadError, match="lacks ml-latest-small/movies.csv"):
    _load("ml-latest-small", server)
  assert _entries(cache) == []


def test_http_404_names_url_and_status(server, cache):
  with pytest.raises(download.DownloadError, match="HTTP 404") as info:
    _load("ml-latest-small", server)
  assert f"{server.url}/ml-latest-small.zip.md5" in str(info.value)
  assert _entries(cache) == []


def test_server_not_there_names_url_reason_and_where_to_put_files(cache, tmp_path):
  with socket.socket() as s:  # a port that was free a moment ago: nobody listens on it
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  with pytest.raises(download.DownloadError) as info:
    movielens.load_movielens("ml-1m", base_url=url, timeout=TIMEOUT)
  message = str(info.value)
  assert isinstance(info.value, errors.TripjaxError) and isinstance(info.value, OSError)
  assert f"{url}/ml-1m.zip" in message
  assert "cannot connect" in message
  assert "To install it by hand" in message
  assert str(tmp_path / "no-env-data" / "ml-1m") in message
  assert str(cache / "ml-1m") in message
  assert "ratings.dat" in message and "movies.dat" in message
  assert "\n" not in message
  assert _entries(cache) == []


def test_explicit_data_dir_is_never_replaced_by_a_download(server, cache, tmp_path):
  server.routes["/ml-latest-small.zip"] = (LATEST_SMALL_ZIP, "ok")
  server.routes["/ml-latest-small.zip.md5"] = (md5_line("x", LATEST_SMALL_ZIP), "ok")
  (tmp_path / "mine").mkdir()
  with pytest.raises(movielens.ReleaseNotFound, match="ml-latest-small/movies.csv"):
    _load("ml-latest-small", server, data_dir=tmp_path / "mine")
  assert server.requests == [] and _entries(cache) == []


def test_stalled_server_times_out(server, cache):
  server.routes["/ml-latest-small.zip.md5"] = (b"", "stall")
  with pytest.raises(download.DownloadError, match="timed out"):
    movielens.load_movielens("ml-latest-small", base_url=server.url, timeout=0.3)
  assert _entries(cache) == []


# --- the building blocks ----------------------------------------------------------------------

DIGEST = "0e33842e24a9c977be4e0107933c0723"


@pytest.mark.parametrize("text", [
    f"MD5 (ml-100k.zip) = {DIGEST}\n",
    f"{DIGEST}  ml-100k.zip\n",
    f"{DIGEST}\n",
    f"  {DIGEST.upper()}  \r\n",
])
def test_parse_md5_formats(text):
  assert download.parse_md5(text) == DIGEST


@pytest.mark.parametrize("text", ["", "MD5 (x) = 123", f"{DIGEST} {'f' * 32}", f"{DIGEST}0"])
def test_parse_md5_rejects(text):
  with pytest.raises(download.DownloadError, match="expected one MD5 digest"):
    download.parse_md5(text, source="http://h/x.md5")


def test_fetch_archive_with_pinned_md5_keeps_archive_when_asked(server, tmp_path):
  body = make_zip({"pkg/a.txt": "a", "pkg/sub/b.txt": "b"})
  server.routes["/pkg.zip"] = (body, "ok")
  created = download.fetch_archive(f"{server.url}/pkg.zip", tmp_path / "c",
                                   md5=hashlib.md5(body).hexdigest(),
                                   required=["pkg/sub/b.txt"], timeout=TIMEOUT,
                                   keep_archive=True)
  assert created == [tmp_path / "c" / "pkg"]
  assert (tmp_path / "c" / "pkg" / "sub" / "b.txt").read_text() == "b"
  assert (tmp_path / "c" / "pkg.zip").read_bytes() == body


def test_extract_rejects_paths_outside_the_folder(tmp_path):
  archive = tmp_path / "evil.zip"
  archive.write_bytes(make_zip({"../escape.txt": "x"}))
  dest = tmp_path / "dest"
  dest.mkdir()
  with pytest.raises(download.DownloadError, match="unsafe path"):
    download.extract_zip(archive, dest)
  assert _entries(dest) == []
  assert not (tmp_path / "escape.txt").exists()


def test_extract_refuses_to_overwrite_a_different_folder(tmp_path):
  archive = tmp_path / "a.zip"
  archive.write_bytes(make_zip({"pkg/a.txt": "new"}))
  dest = tmp_path / "dest"
  (dest / "pkg").mkdir(parents=True)
  (dest / "pkg" / "other.txt").write_text("mine")
  with pytest.raises(download.DownloadError, match="remove"):
    download.extract_zip(archive, dest, required=["pkg/a.txt"])
  assert _entries(dest) == ["pkg"]
  assert _entries(dest / "pkg") == ["other.txt"]



# --- leftovers of killed downloads ------------------------------------------------------------


def _reaped_pid() -> int:
  """The PID of a process that has exited and been reaped."""
  child = subprocess.Popen([sys.executable, "-c", ""])
  child.wait()
  return child.pid


def _plant(path, folder: bool, age_s: float = 0.0):
  if folder:
    (path / "pkg").mkdir(parents=True)
    (path / "pkg" / "a.txt").write_text("partial")
  else:
    path.write_bytes(b"partial")
  if age_s:
    then = time.time() - age_s
    os.utime(path, (then, then))
  return path


def test_fetch_removes_leftovers_of_killed_downloads_only(server, tmp_path):
  dest = tmp_path / "c"
  dest.mkdir()
  host, dead, live = download._host(), _reaped_pid(), os.getpid()
  hour = download.STALE_SECONDS
  gone = [
      _plant(dest / f".ml-25m.zip.{dead}-{host}-ab_cd123.part", folder=False),
      _plant(dest / f".extract-{dead}-{host}-ef_gh456", folder=True),
      _plant(dest / f".pkg.zip.{live}-elsewhere-ab_cd123.part", folder=False, age_s=hour + 60),
      _plant(dest / ".pkg.zip.zyx_9876.part", folder=False, age_s=hour + 60),  # older versions
      _plant(dest / ".extract-zyx_9876", folder=True, age_s=hour + 60),
  ]
  kept = [
      _plant(dest / f".ml-25m.zip.{live}-{host}-ab_cd123.part", folder=False),
      _plant(dest / f".extract-{live}-{host}-ef_gh456", folder=True),
      _plant(dest / f".pkg.zip.{dead}-elsewhere-ab_cd123.part", folder=False),  # unknown host
      _plant(dest / ".pkg.zip.zyx_9875.part", folder=False),  # older version, still fresh
      _plant(dest / ".extract-zyx_9877", folder=True),
      _plant(dest / "notes.part", folder=False, age_s=10 * hour),  # not our names
      _plant(dest / ".extract-mine", folder=True, age_s=10 * hour),
      _plant(dest / f"extract-{dead}-{host}-ef_gh456", folder=True, age_s=10 * hour),
      _plant(dest / "ml-1m", folder=True, age_s=10 * hour),
  ]
  body = make_zip({"pkg/a.txt": "a"})
  server.routes["/pkg.zip"] = (body, "ok")
  download.fetch_archive(f"{server.url}/pkg.zip", dest, md5=hashlib.md5(body).hexdigest(),
                         required=["pkg/a.txt"], timeout=TIMEOUT)
  assert [p.name for p in gone if p.exists()] == []
  assert [p.name for p in kept if not p.exists()] == []
  assert (dest / "pkg" / "a.txt").read_text() == "a"


def test_temporaries_name_their_process(server, tmp_path, monkeypatch):
  # A kill -9 cleans nothing up: with _remove disabled, failures leave their temporaries.
  remove = download._remove
  monkeypatch.setattr(download, "_remove", lambda path: None)
  dest = tmp_path / "c"
  server.routes["/a.zip"] = (LATEST_SMALL_ZIP, "drop")
  server.routes["/b.zip"] = (LATEST_SMALL_ZIP, "ok")
  for name, required in [("a.zip", []), ("b.zip", ["missing.txt"])]:
    with pytest.raises(download.DownloadError):
      download.fetch_archive(f"{server.url}/{name}", dest,
                             md5=hashlib.md5(LATEST_SMALL_ZIP).hexdigest(), required=required,
                             timeout=TIMEOUT)
  (dest / "b.zip").unlink()
  tag = f"{os.getpid()}-{download._host()}-"
  left = _entries(dest)
  assert len(left) == 2 and all(tag in name for name in left), left
  monkeypatch.setattr(download, "_remove", remove)
  assert download.remove_leftovers(dest) == []  # this process still runs
  monkeypatch.setattr(download, "_pid_alive", lambda pid: pid != os.getpid())
  assert sorted(p.name for p in download.remove_leftovers(dest)) == left
  assert _entries(dest) == []
