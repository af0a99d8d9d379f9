"""The fused CPU kernel (`tripjax.fused_cpu`) against the XLA training step it replaces."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tripjax import config as config_lib
from tripjax import fused_cpu
from tripjax import sampling
from tripjax import sparse_optim
from tripjax import train

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU kernel")

NUM_USERS, NUM_ITEMS = 37, 29


def _state(optimizer, dim, zero_rows=False):
  state = train.init_state(jax.random.key(3), optimizer, NUM_USERS, NUM_ITEMS, dim, scale=0.5)
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
         zero_rows=False):
  optimizer = sparse_optim.sparse_sgd(learning_rate)
  step = train.make_train_step(optimizer, margin, l2, fused_cpu=fused)
  state = _state(optimizer, dim, zero_rows)
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


@pytest.mark.parametrize("dim", [16, 64, 13])
def test_equals_the_xla_step(dim):
  """Several chunks with repeated rows: the same tables, losses and counts as XLA's step."""
  chunks = [_chunk(seed, steps=4, batch=48) for seed in range(3)]
  fused, xla = _assert_same_training(chunks, dim=dim)
  before = _state(sparse_optim.sparse_sgd(0.5), dim).params
  assert not np.allclose(fused.params["item"], before["item"])  # it did train


def test_several_blocks_on_several_threads():
  """Batches longer than the kernel's 256-triplet blocks (a partial last block), every option."""
  chunks = [_chunk(seed, steps=3, batch=777, negatives=3, padded_tail=100) for seed in range(2)]
  _assert_same_training(chunks, dim=13, l2=0.01, skip_empty=True)


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
  step = train.make_train_step(optimizer, fused_cpu=True)
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
  kernel = fused_cpu.triplet_sgd_update
  monkeypatch.setattr(fused_cpu, "triplet_sgd_update",
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
    train.make_train_step(sparse_optim.sparse_adam(0.1), fused_cpu=True)
  with pytest.raises(ValueError, match="sparse_sgd"):
    train.make_train_step(optax.sgd(0.1), fused_cpu=True)
  with pytest.raises(ValueError, match="fused_cpu_step.*sparse_sgd"):
    config_lib.TrainConfig(fused_cpu_step=True, optimizer="adam")


# ---------------------------------------------------------------- building the kernel


def test_build_is_cached(tmp_path, monkeypatch):
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(tmp_path))
  path = fused_cpu.build()
  assert path.parent == tmp_path and path.suffix == ".so"
  built = path.stat().st_mtime_ns
  assert fused_cpu.build() == path and path.stat().st_mtime_ns == built  # not rebuilt
  assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


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
  monkeypatch.setenv("CXX", str(_fake_compiler(
      tmp_path, 'printf half > "$out"; sleep 0.5; printf " whole" >> "$out"')))
  paths = []
  threads = [threading.Thread(target=lambda: paths.append(fused_cpu.build())) for _ in range(3)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert len(set(paths)) == 1 and paths[0].read_text() == "half whole"
  assert list(cache.iterdir()) == [paths[0]]


def test_unwritable_cache_and_bad_cxx_are_clear_errors(tmp_path, monkeypatch):
  blocker = tmp_path / "file"
  blocker.write_text("")
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(blocker / "kernels"))  # under a plain file
  with pytest.raises(fused_cpu.KernelBuildError, match="TRIPJAX_CACHE_DIR"):
    fused_cpu.build()
  monkeypatch.setenv("CXX", "g++ 'unbalanced")
  with pytest.raises(fused_cpu.KernelBuildError, match="CXX"):
    fused_cpu.build()


def test_static_runtime_only_where_the_compiler_has_it(tmp_path):
  has = _fake_compiler(tmp_path, "exit 1", static_runtime=tmp_path / "libstdc++.a")
  (tmp_path / "libstdc++.a").write_text("")
  assert fused_cpu._flags([str(has)])[-3:] == fused_cpu.STATIC_RUNTIME_FLAGS
  lacks = tmp_path / "lacks"
  lacks.mkdir()
  assert fused_cpu._flags([str(_fake_compiler(lacks, "exit 1"))]) == fused_cpu.FLAGS


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", "no-such-compiler-xyz")
  with pytest.raises(fused_cpu.KernelBuildError, match="no-such-compiler-xyz.*--fused_cpu_step"):
    fused_cpu.build()
  monkeypatch.setenv("CXX", "no-such-launcher-xyz g++")  # a launcher, split like a shell does
  with pytest.raises(fused_cpu.KernelBuildError, match="'no-such-launcher-xyz'"):
    fused_cpu.build()


def test_failed_compile_names_the_source_and_leaves_nothing(tmp_path, monkeypatch):
  fake = _fake_compiler(tmp_path, 'printf partial > "$out"; '
                                  "echo 'error: this compiler is broken' >&2; exit 1")
  cache = tmp_path / "cache"
  monkeypatch.setenv("TRIPJAX_CACHE_DIR", str(cache))
  monkeypatch.setenv("CXX", str(fake))
  with pytest.raises(fused_cpu.KernelBuildError, match="triplet_sgd_cpu.cc.*\n.*broken"):
    fused_cpu.build()
  assert not any(p.is_file() for p in cache.rglob("*"))


def test_the_source_is_installed_with_the_package():
  """setup.cfg's package_data ships csrc/ (a wheel without it could not build the kernel)."""
  setup_cfg = (pathlib.Path(__file__).resolve().parents[1] / "setup.cfg").read_text()
  assert f"csrc/*{fused_cpu.SOURCE.suffix}" in setup_cfg
  assert fused_cpu.SOURCE.is_file()
