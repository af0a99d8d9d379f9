"""Shared pytest fixtures for tripjax."""

import atexit
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

# The scripts the tests start (training runs of smoke.cfg above all) compile the same programs:
# one persistent compilation cache for the whole run, which they inherit, compiles each once.
# The test processes themselves do not use it (`_no_persistent_cache_in_the_tests`).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _JAX_CACHE = tempfile.mkdtemp(prefix="tripjax-tests-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)

# The ~40 interpreters a run starts (xdist's workers, the scripts under test) would each compile
# tripjax's sources and rewrite the test modules anew where PYTHONDONTWRITEBYTECODE is set (about
# a second each): the run writes bytecode, into the __pycache__ folders git ignores.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# The tests compile hundreds of small programs whose run time is tiny: XLA's optimisation
# passes cost more than they save (about 30% of the suite's CPU time). Every result the tests
# check is the same either way; JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs them fully optimised.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# For the same reason, XLA:CPU's older elemental emitters instead of its fusion emitters (they
# compile the tests' programs in about half the time), and each program's code generated in one
# piece (xdist's workers already keep the cores busy).
TEST_XLA_FLAGS = ("--xla_cpu_use_fusion_emitters=false",
                  "--xla_cpu_parallel_codegen_split_count=1")
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                   *TEST_XLA_FLAGS]))

REPO = pathlib.Path(__file__).resolve().parents[1]

# The files that take longest (worker-seconds, `--durations=0`), run first: xdist's `loadfile`
# hands out whole files in collection order, so a long file collected last leaves the other
# worker idle while it runs.
LONGEST_FIRST = ("test_train.py", "test_distributed.py", "test_cli_errors.py",
                 "test_sparse_optim.py", "test_kernels.py", "test_triplet_features.py",
                 "test_metrics.py", "test_sampling.py", "test_ials.py", "test_models_cli.py",
                 "test_sharding.py", "test_item_item_fit.py")


def pytest_sessionfinish(session):
  """With TRIPJAX_TEST_CPU_LOG set, appends this process's CPU seconds (its own and its
  finished subprocesses') to that file: where the suite's time goes."""
  log = os.environ.get("TRIPJAX_TEST_CPU_LOG")
  if log:
    import resource  # pylint: disable=g-import-not-at-top
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    with open(log, "a") as f:
      f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')} self "
              f"{own.ru_utime + own.ru_stime:.1f} children "
              f"{children.ru_utime + children.ru_stime:.1f}\n")


def pytest_collection_modifyitems(items):
  """Puts the files of `LONGEST_FIRST` first, in its order; the rest keep theirs."""
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


_DRIVER = pathlib.Path(__file__).resolve().parent / "cli_driver.py"


@pytest.fixture(scope="session", autouse=True)
def _no_persistent_cache_in_the_tests():
  """The tests' own programs are mostly compiled once per run: looking each up in the
  persistent cache and writing it there costs more than its few hits save (about 4% of a test
  process's CPU time, by a profile). Python's collector, run less often, saves a few % more
  while JAX traces."""
  import gc  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_enable_compilation_cache", False)
  gc.set_threshold(20_000, 50, 100)
  yield


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(tmp_path_factory):
  """Compiled kernels (`tripjax.kernels`) go to a session folder, not ~/.cache, unless
  TRIPJAX_CACHE_DIR is set; xdist's workers share it (the build lock makes them compile once)."""
  if "TRIPJAX_CACHE_DIR" in os.environ:
    yield pathlib.Path(os.environ["TRIPJAX_CACHE_DIR"])
    return
  if "PYTEST_XDIST_WORKER" in os.environ:  # the run's folder holds each worker's
    folder = tmp_path_factory.getbasetemp().parent / "kernels"
  else:
    folder = tmp_path_factory.mktemp("kernels")
  os.environ["TRIPJAX_CACHE_DIR"] = str(folder)
  _copy_the_users_kernels(folder / "kernels")
  yield folder
  del os.environ["TRIPJAX_CACHE_DIR"]


def _copy_the_users_kernels(kernels: pathlib.Path) -> None:
  """Copies the user's build of these very kernel sources, if their cache holds one
  (`~/.cache/tripjax/kernels`, where tripjax keeps it), into the run's kernel folder, so that a
  run compiles them only when they changed (about 20 CPU-seconds). Only a build the user's cache
  would load is copied (`cache.is_verified`: the user's own, no symlink, its recorded hash), and
  the copy is checked again like any cached build."""
  from tripjax.kernels import cache  # pylint: disable=g-import-not-at-top
  from tripjax.kernels import compiler  # pylint: disable=g-import-not-at-top
  from tripjax.kernels import errors  # pylint: disable=g-import-not-at-top
  try:
    name = compiler.library_path(*compiler.toolchain()).name
  except errors.KernelBuildError:  # no compiler: the tests that need one say so
    return
  users = pathlib.Path.home() / ".cache" / "tripjax" / "kernels" / name
  try:
    if not (users.parent.is_dir() and cache.is_verified(users)):
      return
  except errors.Unavailable:  # an unsafe or unreadable user cache: build as before
    return
  try:
    with cache.build_lock(kernels):  # xdist's workers copy once
      if not (kernels / name).exists():
        recorded = name + cache.HASH_SUFFIX
        shutil.copyfile(users.with_name(recorded), kernels / recorded)
        shutil.copyfile(users, kernels / name)
        (kernels / name).chmod(0o700)
  except (OSError, errors.Unavailable):  # the tests that need the kernels build them
    pass


@pytest.fixture(scope="session")
def data_dir():
  """The folder that holds real MovieLens releases (TRIPJAX_DATA_DIR); skips when absent."""
  path = os.environ.get("TRIPJAX_DATA_DIR")
  if not path or not (pathlib.Path(path) / "ml-100k" / "u.data").exists():
    pytest.skip("TRIPJAX_DATA_DIR does not point at a folder holding ml-100k/")
  return pathlib.Path(path)


def _cpu_env() -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """One `python -m experiments.train --flagfile=experiments/configs/smoke.cfg` per test run
  (saving every epoch: checkpoints 2 and 3 are kept), shared by xdist's workers: the first to
  ask trains it under a lock, the others wait and read its record.

  The CLI tests share it: check the process's output on it, read it, never train it again.

  Returns:
    (workdir: pathlib.Path of the finished run, the training's subprocess.CompletedProcess).
  """
  base = tmp_path_factory.getbasetemp()
  root = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "smoke"
  root.mkdir(exist_ok=True)
  workdir, record = root / "run", root / "process.json"
  with open(root / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not record.exists():
      done = subprocess.run(
          [sys.executable, "-m", "experiments.train",
           "--flagfile=experiments/configs/smoke.cfg", f"--workdir={workdir}",
           "--checkpoint_every=1"], cwd=REPO, env=_cpu_env(), capture_output=True, text=True,
          timeout=300, check=False)
      assert done.returncode == 0, done.stderr[-3000:]
      record.write_text(json.dumps([done.args, done.returncode, done.stdout, done.stderr]))
  return workdir, subprocess.CompletedProcess(*json.loads(record.read_text()))


@pytest.fixture(scope="session")
def run_cli(tmp_path_factory):
  """Runs command lines of one experiments main, all in ONE subprocess (tests/cli_driver.py).

  `run_cli("experiments.recommend", {"name": [args...], ...})` returns
  {"name": subprocess.CompletedProcess} with what `python -m experiments.recommend args...`
  would have printed and returned; the cases run in order, each with the flags reset.
  """
  def run(module: str, cases: dict[str, list[str]], timeout: int = 300) -> dict:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "cases.json").write_text(json.dumps(cases))
    args = [sys.executable, str(_DRIVER), module, str(folder / "cases.json"),
            str(folder / "out.json")]
    done = subprocess.run(args, cwd=REPO, env=_cpu_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((folder / "out.json").read_text())
    return {name: subprocess.CompletedProcess([module, *cases[name]], r["returncode"],
                                              r["stdout"], r["stderr"])
            for name, r in results.items()}

  return run


@pytest.fixture(scope="session")
def against_popularity():
  """`check(score_fn, train, test, **evaluate_kwargs) -> (model means, popularity means)`: a
  model and popularity evaluated on the same split, after asserting they saw the same users."""
  from tripjax import baselines  # pylint: disable=g-import-not-at-top
  from tripjax import metrics  # pylint: disable=g-import-not-at-top

  def check(score_fn, train, test, **kwargs):
    got = metrics.evaluate(score_fn, train, test, **kwargs)
    base = metrics.evaluate(baselines.popularity_scores(train), train, test, **kwargs)
    assert got.users_evaluated == base.users_evaluated > 0
    return got.means, base.means

  return check
