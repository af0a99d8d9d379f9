"""The fused CPU kernel (`tripjax.kernels`) against the XLA training step it replaces."""

import configparser
import fnmatch
import hashlib
import os
import pathlib
import stat
import subprocess
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tripjax import config as config_lib
from tripjax import errors
from tripjax import kernels
from tripjax import sampling
from tripjax import sparse_optim
from tripjax import train
from tripjax import train_step
from tripjax.kernels import cache as cache_lib
from tripjax.kernels import compiler

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU kernel")

NUM_USERS, NUM_ITEMS = 37, 29


def _state(optimizer, dim, zero_rows=False):
  state = train_step.init_state(jax.random.key(3), optimizer, NUM_USERS, NUM_ITEMS, dim, scale=0.5)
  if zero_rows:  # a zero user and a zero item: the eps-clamped norms
    params = {"user": state.params["user"].at[1].set(0.0),
              "item": state.params["item"].at[2].set(0.0)}
    state = state._replace(params=params)
  return state


def _chunk(seed, steps, batch, negatives=1, padded_tail=0, users_hi=NUM_USERS,
           items_hi=NUM_ITEMS):
  """Random batches with repeated rows (small tables), the last `padded_tail` weights 0."""
  rng = np.random.default_rng(seed)
  weights = rng.uniform(0.2, 2.0, (steps, batch)).astype(np.float32)
  if padded_tail:
    weights[-1, -padded_tail:] = 0.0
  return sampling.Batches(
      users=jnp.asarray(rng.integers(0, users_hi, (steps, batch)), jnp.int32),
      pos=jnp.asarray(rng.integers(0, items_hi, (steps, batch)), jnp.int32),
      neg=jnp.asarray(rng.integers(0, items_hi, (steps, batch, negatives)), jnp.int32),
      weights=jnp.asarray(weights))


def _run(fused, chunks, dim=16, learning_rate=0.5, margin=0.4, l2=0.0, skip_empty=False,
         zero_rows=False, warp=False, state=None):
  optimizer = sparse_optim.sparse_sgd(learning_rate)
  step = train_step.make_train_step(optimizer, margin, l2, fused_cpu=fused, warp=warp)
  state = _state(optimizer, dim, zero_rows) if state is None else state
  outs = []
  for chunk in chunks:
    state, out = step(state, chunk, skip_empty=skip_empty)
    outs.append(out)
  return state, outs


def _assert_same_training(chunks, **kwargs):
  fused, fused_out = _run(True, chunks, **kwargs)
  xla, xla_out = _run(False, chunks, **kwargs)
  for name in ("user", "item"):
    np.testing.assert_allclose(fused.params[name], xla.params[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)
  assert int(fused.step) == int(xla.step)
  assert int(fused.opt_state.count) == int(xla.opt_state.count)
  for a, b in zip(fused_out, xla_out):
    for key in ("loss_sum", "active_sum", "triplets"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
  return fused, xla


@pytest.mark.parametrize("dim", [13, 16, 24, 32, 64, 128])
def test_equals_the_xla_step(dim):
  """Several chunks with repeated rows: the same tables, losses and counts as XLA's step.

  Each dim takes one of the kernel's loops: unrolled eight-float loops for 32, 64 and 128,
  eight-float loops of any length (16, 24), one float at a time (13)."""
  chunks = [_chunk(seed, steps=4, batch=48) for seed in range(3)]
  fused, xla = _assert_same_training(chunks, dim=dim)
  before = _state(sparse_optim.sparse_sgd(0.5), dim).params
  assert not np.allclose(fused.params["item"], before["item"])  # it did train


@pytest.mark.parametrize("dim", [13, 64])
def test_several_blocks_on_several_threads(dim):
  """Batches longer than the kernel's 256-triplet blocks (a partial last block), every option,
  on the scalar loop (13) and the unrolled vector loop (64)."""
  chunks = [_chunk(seed, steps=3, batch=777, negatives=3, padded_tail=100) for seed in range(2)]
  _assert_same_training(chunks, dim=dim, l2=0.01, skip_empty=True)


@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_triplets_without_a_gradient_inside_a_chunk(l2):
  """Batches of one chunk where many triplets have no gradient (a large margin gap: most hinges
  at 0; the second half of the middle batch weighs 0): skipping them must equal adding their
  zeros, batch after batch (pass 2 must not read gradient rows pass 1 did not write)."""
  chunk = _chunk(11, steps=3, batch=300)
  chunk = chunk._replace(weights=chunk.weights.at[1, 150:].set(0.0))
  for dim in (16, 64):
    fused, _ = _assert_same_training([chunk], dim=dim, margin=-0.3, l2=l2)
    _, outs = _run(True, [chunk], dim=dim, margin=-0.3, l2=l2)
    active = float(outs[0]["active_sum"]) / float(outs[0]["triplets"])
    assert 0.0 < active < 0.5  # most triplets skipped, some trained


def test_warp_weighs_the_hinge_not_the_l2_term():
  """WARP's per-triplet scale multiplies the hinge's gradient only (`batch_loss`); the kernel
  once applied it to its l2 term too (0.05 off with l2=0.05)."""
  chunks = [_chunk(seed, steps=3, batch=64, negatives=4) for seed in range(2)]
  _assert_same_training(chunks, dim=16, l2=0.05, warp=True)


def test_a_nan_row_spreads_as_in_the_xla_step():
  """A NaN in a user's row makes its triplets' losses NaN; XLA's zero coefficients times the
  rows then spread NaN to their items. The kernel must not skip those triplets as if their
  gradient were zero (the divergence check relies on the NaN showing)."""
  optimizer = sparse_optim.sparse_sgd(0.5)
  state = _state(optimizer, 16)
  state = state._replace(params={**state.params, "user": state.params["user"].at[4, 3].set(
      jnp.nan)})
  chunk = _chunk(9, steps=2, batch=40)
  chunk = chunk._replace(users=chunk.users.at[0, :3].set(4))
  fused, _ = _run(True, [chunk], state=jax.tree.map(jnp.copy, state))
  xla, _ = _run(False, [chunk], state=state)
  for name in ("user", "item"):
    nan_rows = np.isnan(np.asarray(xla.params[name])).any(axis=1)
    assert nan_rows.sum() >= (1 if name == "user" else 2)
    np.testing.assert_array_equal(np.isnan(np.asarray(fused.params[name])).any(axis=1),
                                  nan_rows, err_msg=name)


def test_l2_schedule_and_hardest_negatives():
  """The l2 term, a learning-rate schedule and hardest-of-3 negatives."""
  schedule = optax.linear_schedule(0.8, 0.1, 10)
  chunks = [_chunk(seed, steps=5, batch=40, negatives=3) for seed in range(2)]
  _assert_same_training(chunks, learning_rate=schedule, l2=0.01)


def test_zero_norm_rows():
  """A zero row's norm is clamped at 1e-8, so its gradient is ~1e8 times the others' and
  cancels between terms: compare one step, to the precision of the row's own scale."""
  chunk = _chunk(5, steps=1, batch=40)
  chunk = chunk._replace(users=chunk.users.at[:, :3].set(1), pos=chunk.pos.at[:, 3:6].set(2))
  fused, _ = _run(True, [chunk], zero_rows=True)
  xla, _ = _run(False, [chunk], zero_rows=True)
  for name, row in (("user", 1), ("item", 2)):
    assert np.all(np.isfinite(fused.params[name]))
    scale = float(np.max(np.abs(xla.params[name][row])))
    assert scale > 1e3  # the clamped norm did give the zero row a large step
    np.testing.assert_allclose(fused.params[name][row], xla.params[name][row], rtol=1e-5,
                               atol=1e-5 * scale)
    others = np.arange(len(xla.params[name])) != row
    np.testing.assert_allclose(fused.params[name][others], xla.params[name][others],
                               rtol=1e-5, atol=1e-6)


def test_padding_and_empty_batches():
  """Weight-0 triplets contribute nothing; an all-padding batch is skipped (skip_empty)."""
  chunk = _chunk(7, steps=3, batch=32, padded_tail=32)
  fused, _ = _assert_same_training([chunk], skip_empty=True)
  assert int(fused.step) == 2


def test_untouched_rows_are_bit_identical():
  chunk = _chunk(1, steps=3, batch=16, users_hi=10, items_hi=12)
  before = _state(sparse_optim.sparse_sgd(0.5), 16).params
  fused, _ = _run(True, [chunk])
  np.testing.assert_array_equal(fused.params["user"][10:], before["user"][10:])
  np.testing.assert_array_equal(fused.params["item"][12:], before["item"][12:])


def test_out_of_range_and_negative_indices_behave_as_in_the_xla_step():
  """Negative rows count from the end; the forward pass clamps out-of-range rows (JAX's
  gather), the update drops them (mode="drop")."""
  chunk = _chunk(2, steps=2, batch=24)
  chunk = chunk._replace(users=chunk.users.at[0, :2].set(jnp.array([NUM_USERS + 5, -3])),
                         neg=chunk.neg.at[1, 3:5, 0].set(jnp.array([-4, -NUM_ITEMS - 2])))
  _assert_same_training([chunk])


def test_same_result_every_run():
  """Pass 1 runs on several threads; the result must not depend on their timing."""
  chunk = _chunk(4, steps=6, batch=1024)
  first, _ = _run(True, [chunk], dim=32)
  second, _ = _run(True, [chunk], dim=32)
  for name in ("user", "item"):
    np.testing.assert_array_equal(first.params[name], second.params[name])


@pytest.mark.parametrize("skip_empty", [False, True])
def test_the_step_updates_the_tables_in_place(skip_empty):
  """In the compiled step (scan, and the cond of skip_empty) nothing copies a table."""
  optimizer = sparse_optim.sparse_sgd(0.5)
  step = train_step.make_train_step(optimizer, fused_cpu=True)
  state = _state(optimizer, 16)
  hlo = step.lower(state, _chunk(0, steps=2, batch=8, negatives=3),
                   skip_empty=skip_empty).compile().as_text()
  assert "tripjax_triplet_sgd_update" in hlo
  for rows in (NUM_USERS, NUM_ITEMS):
    table_copies = [line for line in hlo.splitlines()
                    if f"f32[{rows},16]" in line.split("=", 1)[-1].split("(")[0]
                    and " copy(" in line]
    assert not table_copies, table_copies


def test_training_run_with_the_fused_step(tmp_path, monkeypatch):
  """`TrainConfig.fused_cpu_step` through `train_and_evaluate`: the kernel, the XLA run's AUC."""
  base = dict(dataset="synthetic-tiny", dim=16, optimizer="sparse_sgd", learning_rate=2.0,
              batch_size=64, epochs=3, eval_every=3)
  traced = []
  kernel = kernels.triplet_sgd_update
  monkeypatch.setattr(kernels, "triplet_sgd_update",
                      lambda *args, **kwargs: traced.append(1) or kernel(*args, **kwargs))
  results = {}
  for fused in (False, True):
    config = config_lib.TrainConfig(**base, fused_cpu_step=fused)
    results[fused] = train.train_and_evaluate(config, tmp_path / str(fused))["model"]["auc"]
    assert bool(traced) == fused  # the kernel is in the step exactly when asked for
  assert results[True] > 0.7, results
  assert abs(results[True] - results[False]) < 1e-3, results


def test_needs_sparse_sgd():
  with pytest.raises(ValueError, match="sparse_sgd"):
    train_step.make_train_step(sparse_optim.sparse_adam(0.1), fused_cpu=True)
  with pytest.raises(ValueError, match="sparse_sgd"):
    train_step.make_train_step(optax.sgd(0.1), fused_cpu=True)
  with pytest.raises(ValueError, match="fused_cpu_step.*sparse_sgd"):
    config_lib.TrainConfig(fused_cpu_step=True, optimizer="adam")


# ---------------------------------------------------------------- building the kernel


def _hash_file(path):
  return path.with_name(path.name + cache_lib.HASH_SUFFIX)


def _sha256(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_cached(tmp_path, monkeypatch):
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", str(_fake_compiler(tmp_path, 'printf library > "$out"')))
  path = kernels.build()
  assert path.parent == tmp_path / "kernels" and path.suffix == ".so"
  built = path.stat().st_mtime_ns
  assert kernels.build() == path and path.stat().st_mtime_ns == built  # not rebuilt
  assert sorted(path.parent.iterdir()) == [path, _hash_file(path)]  # no temporary left behind
  assert _hash_file(path).read_text().strip() == _sha256(path)


def _fake_compiler(folder, body, static_runtime="libstdc++.a"):
  """A `$CXX` that answers --version and -print-file-name=libstdc++.a (`static_runtime`: a
  bare name when it has none) and otherwise runs `body` (sh; "$out" is the -o file)."""
  fake = folder / "fake-cxx"
  fake.write_text('#!/bin/sh\ncase "$1" in\n  --version) echo "fake 1.0"; exit 0;;\n'
                  f'  -print-file-name=*) echo "{static_runtime}"; exit 0;;\nesac\n'
                  'for out; do :; done\n' + body + "\n")
  fake.chmod(0o755)
  return fake


def test_concurrent_builds_land_one_whole_library(tmp_path, monkeypatch):
  import threading  # pylint: disable=g-import-not-at-top
  cache = tmp_path / "cache"
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(cache))
  log = tmp_path / "compiler_runs"
  monkeypatch.setenv("CXX", str(_fake_compiler(
      tmp_path, f'echo "$out" >> {log}; printf half > "$out"; sleep 0.5; '
      'printf " whole" >> "$out"')))
  paths = []
  threads = [threading.Thread(target=lambda: paths.append(kernels.build())) for _ in range(3)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert len(set(paths)) == 1 and paths[0].read_text() == "half whole"
  # One build (a compile per source, then the link): the others waited for it.
  assert len(log.read_text().splitlines()) == len(compiler.SOURCES) + 1
  assert sorted((cache / "kernels").iterdir()) == [paths[0], _hash_file(paths[0])]
  assert _hash_file(paths[0]).read_text().strip() == _sha256(paths[0])


def test_unwritable_cache_and_bad_cxx_are_clear_errors(tmp_path, monkeypatch):
  blocker = tmp_path / "file"
  blocker.write_text("")
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(blocker / "kernels"))  # under a plain file
  with pytest.raises(kernels.KernelBuildError, match="TRIPJAX_CACHE_DIR"):
    kernels.build()
  monkeypatch.setenv("CXX", "g++ 'unbalanced")
  with pytest.raises(kernels.KernelBuildError, match="CXX"):
    kernels.build()


def test_static_runtime_only_where_the_compiler_has_it(tmp_path):
  has = _fake_compiler(tmp_path, "exit 1", static_runtime=tmp_path / "libstdc++.a")
  (tmp_path / "libstdc++.a").write_text("")
  assert compiler._flags([str(has)])[-3:] == compiler.STATIC_RUNTIME_FLAGS
  lacks = tmp_path / "lacks"
  lacks.mkdir()
  assert compiler._flags([str(_fake_compiler(lacks, "exit 1"))]) == compiler.FLAGS


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", "no-such-compiler-xyz")
  with pytest.raises(kernels.KernelBuildError, match="no-such-compiler-xyz.*--fused_cpu_step"):
    kernels.build()
  monkeypatch.setenv("CXX", "no-such-launcher-xyz g++")  # a launcher, split like a shell does
  with pytest.raises(kernels.KernelBuildError, match="'no-such-launcher-xyz'"):
    kernels.build()


def test_failed_compile_names_the_source_and_leaves_nothing(tmp_path, monkeypatch):
  fake = _fake_compiler(tmp_path, 'printf partial > "$out"; '
                                  "echo 'error: this compiler is broken' >&2; exit 1")
  cache = tmp_path / "cache"
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(cache))
  monkeypatch.setenv("CXX", str(fake))
  with pytest.raises(kernels.KernelBuildError, match="triplet_sgd_cpu.cc.*\n.*broken"):
    kernels.build()
  assert not any(p.is_file() for p in cache.rglob("*"))


def test_the_sources_are_installed_with_the_package():
  """setup.cfg's package_data ships the C++ sources and headers (a wheel without them could
  not build the kernels), and the build hashes every one of them."""
  setup_cfg = configparser.ConfigParser()
  setup_cfg.read(pathlib.Path(__file__).resolve().parents[1] / "setup.cfg")
  patterns = setup_cfg["options.package_data"]["tripjax.kernels"].split()
  folder = pathlib.Path(kernels.__file__).parent
  shipped = {path for path in folder.iterdir()
             if any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)}
  assert set(compiler.SOURCES + compiler.HEADERS) == shipped, (shipped, patterns)
  assert {p.name for p in folder.glob("*.cc")} == {p.name for p in compiler.SOURCES}


# ---------------------------------------------------------------- the kernel cache's safety

_PLANTED_SOURCE = r"""
#include <cstdio>
#include <cstdlib>
__attribute__((constructor)) static void planted() {
  if (const char* marker = std::getenv("TRIPJAX_TEST_PLANTED_MARKER")) {
    if (std::FILE* f = std::fopen(marker, "a")) {
      std::fputs("loaded\n", f);
      std::fclose(f);
    }
  }
}
"""
_OTHER_UID = 12345


@pytest.fixture(scope="module")
def planted_library(tmp_path_factory):
  """A small shared library whose constructor appends a line to $TRIPJAX_TEST_PLANTED_MARKER."""
  folder = tmp_path_factory.mktemp("planted")
  (folder / "planted.cc").write_text(_PLANTED_SOURCE)
  library = folder / "planted.so"
  subprocess.run([*compiler._compiler(), "-shared", "-fPIC", str(folder / "planted.cc"), "-o",
                  str(library)], check=True, capture_output=True, timeout=120)
  return library


@pytest.fixture
def cache(tmp_path, monkeypatch, planted_library):
  """A fresh kernel cache whose `$CXX` "builds" the planted library (a copy, no compiling).

  Loading goes through a spy: `cache.loaded` holds the bytes of each library handed to dlopen,
  which only happens when `cache.really_load` (a refused library is never loaded, so the
  constructor's `cache.marker` stays absent).
  """
  env = types.SimpleNamespace(root=tmp_path / "cache", marker=tmp_path / "marker",
                              log=tmp_path / "builds", loaded=[], really_load=True)
  env.folder = env.root / "kernels"
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(env.root))
  monkeypatch.setenv("TRIPJAX_TEST_PLANTED_MARKER", str(env.marker))
  monkeypatch.setenv("CXX", str(_fake_compiler(
      tmp_path, f'case "$out" in *.so) echo built >> "{env.log}";; esac; '
      f'cp "{planted_library}" "$out"')))  # a build: its objects, then the library
  real = cache_lib._load_library

  def spy(name):
    env.loaded.append(pathlib.Path(name).read_bytes())
    return real(name) if env.really_load else types.SimpleNamespace()

  monkeypatch.setattr(cache_lib, "_load_library", spy)
  env.builds = lambda: len(env.log.read_text().splitlines()) if env.log.exists() else 0
  return env


def _assert_refused(excinfo, path, reason, cache):
  message = str(excinfo.value)
  assert len(message.splitlines()) == 1 and "\n" not in message, message
  assert str(path) in message and reason in message, message
  assert "TRIPJAX_CACHE_DIR" in message, message
  assert not cache.loaded and not cache.marker.exists()  # never dlopen()ed


def test_kernels_live_in_a_private_folder_of_their_own(cache, planted_library, monkeypatch):
  """Under `$TRIPJAX_CACHE_DIR/kernels`, folders made 0o700 even in a shared (1777) folder and
  under a loose umask; the library is private, its SHA-256 beside it; and it loads (the
  control for the refusals below: the spy and the marker do see a load)."""
  shared = cache.root.parent / "shared"
  shared.mkdir()
  shared.chmod(0o1777)
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(shared / "tripjax"))
  umask = os.umask(0o002)
  try:
    path = kernels.build()
  finally:
    os.umask(umask)
  assert path.parent == shared / "tripjax" / "kernels" == kernels.cache_dir()
  for folder in (shared / "tripjax", path.parent):
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
  assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
  assert _hash_file(path).read_text().strip() == _sha256(path)
  kernels.load()
  assert cache.loaded == [planted_library.read_bytes()]
  assert cache.marker.read_text() == "loaded\n"
  assert issubclass(kernels.UnsafeKernelCache, kernels.Unavailable)
  assert issubclass(kernels.Unavailable, errors.TripjaxError)
  assert issubclass(kernels.Unavailable, RuntimeError)


def _plant_beside(path):
  """A copy of the library `path` outside the cache, with its hash recorded beside `path`."""
  planted = path.parent.parent / "elsewhere.so"
  planted.write_bytes(path.read_bytes())
  planted.chmod(0o700)
  return planted


@pytest.mark.parametrize("case, reason", [
    ("symlink", "symlink"), ("group_writable", "writable by group or others"),
    ("other_writable", "writable by group or others"), ("other_owner", f"uid {_OTHER_UID}"),
    ("fifo", "not a regular file")])
def test_an_unsafe_kernel_file_is_refused_and_never_loaded(cache, case, reason):
  path = kernels.build()
  if case == "symlink":  # to a valid library, its hash recorded: only the link is wrong
    planted = _plant_beside(path)
    path.unlink()
    path.symlink_to(planted)
  elif case == "group_writable":
    path.chmod(0o720)
  elif case == "other_writable":
    path.chmod(0o702)
  elif case == "other_owner":
    if os.geteuid() != 0:
      pytest.skip("chown to another user needs root")
    os.chown(path, _OTHER_UID, -1)
  else:
    path.unlink()
    os.mkfifo(path, 0o600)
  for call in (kernels.load, kernels.build):
    with pytest.raises(kernels.UnsafeKernelCache) as excinfo:
      call()
    _assert_refused(excinfo, path, reason, cache)
  assert cache.builds() == 1  # refused, neither loaded nor built over
  assert os.path.islink(path) == (case == "symlink")


@pytest.mark.parametrize("case, reason", [
    ("symlink", "symlink"), ("group_writable", "writable by group or others"),
    ("other_writable", "writable by group or others"), ("other_owner", f"uid {_OTHER_UID}")])
def test_an_unsafe_kernel_folder_is_refused_and_never_loaded(cache, case, reason):
  path = kernels.build()
  if case == "symlink":  # to a private folder holding a valid build and its hash
    moved = cache.folder.rename(cache.root / "elsewhere")
    cache.folder.symlink_to(moved)
  elif case == "group_writable":
    cache.folder.chmod(0o770)
  elif case == "other_writable":
    cache.folder.chmod(0o707)
  else:
    if os.geteuid() != 0:
      pytest.skip("chown to another user needs root")
    os.chown(cache.folder, _OTHER_UID, -1)
  before = sorted(cache.folder.iterdir())
  for call in (kernels.load, kernels.build):
    with pytest.raises(kernels.UnsafeKernelCache) as excinfo:
      call()
    _assert_refused(excinfo, cache.folder, reason, cache)
  assert cache.builds() == 1 and sorted(cache.folder.iterdir()) == before
  assert path.exists()


def test_the_refusal_stays_one_line_whatever_the_path(cache, monkeypatch):
  root = cache.root.parent / "line\nbreak"
  (root / "kernels").mkdir(parents=True)
  (root / "kernels").chmod(0o777)
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(root))
  with pytest.raises(kernels.UnsafeKernelCache) as excinfo:
    kernels.load()
  message = str(excinfo.value)
  assert len(message.splitlines()) == 1 and "line\\nbreak/kernels" in message, message
  assert isinstance(excinfo.value, kernels.Unavailable) and cache.builds() == 0


@pytest.mark.parametrize("case", ["wrong_hash", "truncated", "no_hash", "hash_is_a_symlink"])
def test_a_kernel_that_fails_its_hash_is_rebuilt_not_loaded(cache, planted_library, case):
  cache.really_load = False  # a truncated library could crash the process
  path = kernels.build()
  whole = planted_library.read_bytes()
  if case == "wrong_hash":  # the library is whole, but not what was recorded
    _hash_file(path).write_text("0" * 64 + "\n")
  elif case == "truncated":
    os.truncate(path, len(whole) // 2)
  elif case == "no_hash":
    _hash_file(path).unlink()
  else:
    (cache.folder / "recorded").write_text(_sha256(path))
    _hash_file(path).unlink()
    _hash_file(path).symlink_to(cache.folder / "recorded")
  kernels.load()
  assert cache.builds() == 2
  assert cache.loaded == [whole]  # the rebuilt library, not the one that failed its check
  assert path.read_bytes() == whole and not _hash_file(path).is_symlink()
  assert _hash_file(path).read_text().strip() == _sha256(path)
  kernels.build()
  assert cache.builds() == 2  # the rebuilt pair passes


def test_a_library_replaced_after_its_check_is_checked_again(cache, planted_library,
                                                             monkeypatch):
  """Replaced between load()'s check and dlopen (a concurrent rebuild, say), it is not loaded
  unchecked: load() goes round again, and the unrecorded file is rebuilt."""
  cache.really_load = False
  path = kernels.build()
  checks = []
  open_verified = cache_lib._open_verified

  def swap_after_check(folder_fd, target):
    fd = open_verified(folder_fd, target)
    checks.append(fd)
    if len(checks) == 2:  # load()'s own check, after build()'s
      partial = cache.root / "partial"
      partial.write_bytes(b"swapped in")
      partial.chmod(0o700)
      os.replace(partial, target)
    return fd

  monkeypatch.setattr(cache_lib, "_open_verified", swap_after_check)
  kernels.load()
  assert cache.loaded == [planted_library.read_bytes()] and cache.builds() == 2
  assert _hash_file(path).read_text().strip() == _sha256(path)
