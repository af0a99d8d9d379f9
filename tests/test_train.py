"""Tests of tripjax.train: the jitted step (dense and row-sparse), recompilation, the run loop."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse as sp

from tripjax import errors
from tripjax import loop
from tripjax import losses
from tripjax import optimizers
from tripjax import sampling
from tripjax import sparse_optim
from tripjax import train
from tripjax import train_step
from tripjax import workdir as workdir_lib
from tripjax.config import TrainConfig
from tripjax.data import registry


def _planted(num_users=60, num_items=80, per_user=12, seed=0):
  """A matrix whose users like the items of their own cluster (4 clusters)."""
  rng = np.random.default_rng(seed)
  user_cluster = rng.integers(0, 4, num_users)
  item_cluster = np.arange(num_items) % 4
  dense = np.zeros((num_users, num_items), bool)
  for u in range(num_users):
    dense[u, rng.choice(np.flatnonzero(item_cluster == user_cluster[u]), per_user,
                        replace=False)] = True
  return sp.csr_matrix(dense)


def _state(optimizer, matrix, dim=8, seed=0):
  return train_step.init_state(jax.random.key(seed), optimizer, *matrix.shape, dim)


def _run_epochs(step_fn, state, sampler, epochs):
  history = []
  for epoch in range(epochs):
    state, chunks = train_step.run_epoch(step_fn, state, sampler.epoch(epoch))
    history.append(chunks)
  return state, history


@pytest.fixture
def loss_traces(monkeypatch):
  """A list that grows by one each time the triplet loss is traced (never when it runs)."""
  traces = []
  original = losses.triplet_cosine_loss

  def counting(*args, **kwargs):
    traces.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(losses, "triplet_cosine_loss", counting)
  return traces


def test_second_epoch_does_not_recompile(loss_traces):
  matrix = _planted(30, 40, 8)
  sampler = sampling.EpochSampler(matrix, batch_size=50, batches_per_chunk=2, seed=0)
  assert matrix.nnz % 50 and sampler.num_batches % 4  # a ragged last batch and last chunk
  step_fn = train_step.make_train_step(optax.adam(1e-2))
  state, _ = _run_epochs(step_fn, _state(optax.adam(1e-2), matrix), sampler, 1)
  after_first = len(loss_traces)
  assert after_first >= 1
  state, _ = _run_epochs(step_fn, state, sampler, 1)
  assert len(loss_traces) == after_first


def test_fits_with_the_same_settings_share_one_compiled_step(loss_traces):
  # Split or validation seeds fitted in one process (compare, tune, the ablation) trace and
  # compile their step once; another learning rate is another optimizer, hence another step.
  matrix = _planted(30, 40, 8)
  # Settings no other test uses, so that the first fit cannot find its step cached.
  config = TrainConfig(dim=8, batch_size=50, steps_per_dispatch=2, epochs=1,
                       learning_rate=0.0123, margin=0.4321)
  first = loop.fit(config, matrix)
  after_first = len(loss_traces)
  assert after_first >= 1
  assert optimizers.make_optimizer(config, 7) is optimizers.make_optimizer(config, 7)
  again = loop.fit(dataclasses.replace(config, seed=1), matrix)
  assert len(loss_traces) == after_first
  assert not np.allclose(first.state.params["item"], again.state.params["item"])  # its own seed
  loop.fit(dataclasses.replace(config, learning_rate=0.0124), matrix)
  assert len(loss_traces) > after_first


def test_step_counts_real_batches_and_weights_mask_padding():
  matrix = _planted()
  sampler = sampling.EpochSampler(matrix, batch_size=50, batches_per_chunk=4, seed=0)
  optimizer = optax.sgd(0.1)
  step_fn = train_step.make_train_step(optimizer)
  state, (chunks,) = _run_epochs(step_fn, _state(optimizer, matrix), sampler, 1)
  assert int(state.step) == sampler.num_batches
  assert chunks["triplets"].sum() == matrix.nnz


def test_empty_batch_check_only_matters_for_empty_batches():
  matrix = _planted()
  optimizer = optax.adam(0.05)
  step_fn = train_step.make_train_step(optimizer)
  sampler = sampling.EpochSampler(matrix, batch_size=7, batches_per_chunk=3, seed=0)
  chunk = jax.tree.map(lambda x: x[0], sampler.epoch(0))
  assert np.asarray(chunk.weights).max(-1).min() > 0  # every batch holds a real triplet
  copy = lambda s: jax.tree.map(jnp.copy, s)
  state = _state(optimizer, matrix)
  checked, _ = step_fn(copy(state), chunk)
  unchecked, _ = step_fn(copy(state), chunk, skip_empty=False)
  for a, b in zip(jax.tree.leaves(checked), jax.tree.leaves(unchecked)):
    np.testing.assert_array_equal(a, b)
  # A chunk with an empty batch: without the check Adam takes a (zero-gradient) step.
  empty = chunk._replace(weights=chunk.weights.at[1].set(0.0))
  checked, _ = step_fn(copy(state), empty)
  unchecked, _ = step_fn(copy(state), empty, skip_empty=False)
  assert int(checked.step) == 2 and int(unchecked.step) == 3
  assert not np.allclose(checked.params["item"], unchecked.params["item"])


@pytest.mark.parametrize("batch_size, per_chunk, kinds", [
    (10, 3, (False, True)),  # 10 batches in 4 chunks: 3 full, the last with 2 empty batches
    (20, 5, (False,)),  # 5 batches fill 1 chunk exactly
    (20, 8, (True,)),  # 5 batches in 1 chunk of 8
    (10, 5, (False,)),  # 10 batches fill 2 chunks exactly
    (30, 4, (False,)),  # 4 batches (the last partly padded, not empty) fill 1 chunk exactly
    (30, 3, (False, True)),  # 4 batches in 2 chunks of 3: the last chunk ends with 2 empty
])
def test_epoch_chunk_kinds_are_those_run_epoch_uses(batch_size, per_chunk, kinds):
  matrix = sp.csr_matrix(np.eye(100, 101, dtype=bool))  # 100 positives
  sampler = sampling.EpochSampler(matrix, batch_size, per_chunk)
  assert train_step.epoch_chunk_kinds(sampler) == kinds
  used = []
  def step_fn(state, batches, skip_empty=True):
    used.append(skip_empty)
    return state, {"loss": 0.0}
  train_step.run_epoch(step_fn, None, sampler.epoch(0))
  assert tuple(sorted(set(used))) == kinds
  assert used[-1] == (True in kinds) and not any(used[:-1])


def test_compiled_step_refuses_a_variant_it_did_not_compile():
  matrix = _planted()
  optimizer = optax.sgd(0.1)
  sampler = sampling.EpochSampler(matrix, batch_size=7, batches_per_chunk=3, seed=0)
  chunk = jax.tree.map(lambda x: x[0], sampler.epoch(0))
  step = train_step.compile_step(train_step.make_train_step(optimizer), _state(optimizer, matrix), chunk,
                            kinds=(False,))
  state, _ = step(_state(optimizer, matrix), chunk, skip_empty=False)
  assert int(state.step) == 3
  with pytest.raises(ValueError, match="skip_empty=True was not compiled"):
    step(state, chunk)


def test_padded_triplets_do_not_change_the_update():
  # One batch of 3 real triplets padded to 5 with weight-0 copies == the 3 triplets alone.
  matrix = _planted()
  optimizer = optax.sgd(1.0)
  state = _state(optimizer, matrix)
  users = jnp.array([1, 2, 3, 1, 2], jnp.int32)
  pos = jnp.asarray(np.array([matrix[u].indices[0] for u in (1, 2, 3, 1, 2)], np.int32))
  neg = jnp.array([[5], [6], [7], [9], [10]], jnp.int32)
  padded = sampling.Batches(users[None], pos[None], neg[None],
                            jnp.array([[1.0, 1, 1, 0, 0]]))
  alone = sampling.Batches(users[None, :3], pos[None, :3], neg[None, :3], jnp.ones((1, 3)))
  step_fn = train_step.make_train_step(optimizer)
  copy = lambda s: jax.tree.map(jnp.copy, s)
  a, _ = step_fn(copy(state), padded)
  b, _ = train_step.make_train_step(optimizer)(copy(state), alone)
  np.testing.assert_allclose(a.params["user"], b.params["user"], atol=1e-6)
  np.testing.assert_allclose(a.params["item"], b.params["item"], atol=1e-6)
  assert not np.allclose(a.params["user"], state.params["user"])


def test_sparse_adagrad_step_equals_dense_adagrad():
  # sparse_adagrad equals optax.adagrad step for step, so the two code paths of the step
  # (gradient w.r.t. tables vs. gathered rows) must give the same parameters.
  matrix = _planted()
  sampler = sampling.EpochSampler(matrix, batch_size=64, batches_per_chunk=3,
                                  num_negatives=3, seed=1)
  results = []
  for optimizer in (optax.adagrad(0.05), sparse_optim.sparse_adagrad(0.05)):
    step_fn = train_step.make_train_step(optimizer, margin=0.5, l2=1e-3)
    state, _ = _run_epochs(step_fn, _state(optimizer, matrix), sampler, 2)
    results.append(state)
  for name in ("user", "item"):
    np.testing.assert_allclose(results[0].params[name], results[1].params[name], atol=2e-5)
  assert int(results[0].step) == int(results[1].step)


@pytest.mark.parametrize("name, learning_rate", [("adam", 0.05), ("sparse_adam", 0.05),
                                                 ("sgd", 1.0)])
def test_training_separates_positives_from_negatives(name, learning_rate):
  matrix = _planted(40, 40, 8)
  config = TrainConfig(dataset="synthetic-tiny", optimizer=name, learning_rate=learning_rate,
                       dim=8, batch_size=32, steps_per_dispatch=10, schedule="cosine", epochs=6)
  sampler = sampling.EpochSampler(matrix, config.batch_size, config.steps_per_dispatch, 2,
                                  seed=0)
  optimizer = optimizers.make_optimizer(config, config.epochs * sampler.num_batches)
  step_fn = train_step.make_train_step(optimizer, config.margin)
  state, history = _run_epochs(step_fn, _state(optimizer, matrix), sampler, config.epochs)
  first = history[0]["loss_sum"].sum() / history[0]["triplets"].sum()
  last = history[-1]["loss_sum"].sum() / history[-1]["triplets"].sum()
  assert last < 0.5 * first, (first, last)


def test_prepare_training_passes_the_negative_exponent_to_the_sampler():
  matrix = sp.csr_matrix(np.eye(4, 6, dtype=bool))
  config = TrainConfig(dataset="synthetic-tiny", negative_exponent=0.5, batch_size=2)
  sampler, _, _ = loop.prepare_training(config, matrix)
  assert sampler.negative_exponent == 0.5 and sampler.negative_weights is not None
  sampler, _, _ = loop.prepare_training(dataclasses.replace(config, negative_exponent=0.0),
                                         matrix)
  assert sampler.negative_weights is None


def test_make_optimizer_kinds_and_schedules():
  config = TrainConfig(dataset="synthetic-tiny")
  assert isinstance(optimizers.make_optimizer(config, 10), optax.GradientTransformation)
  sparse = optimizers.make_optimizer(TrainConfig(dataset="synthetic-tiny", optimizer="sparse_adam"),
                                10)
  assert optimizers.is_row_optimizer(sparse)
  warm = optimizers.make_schedule(TrainConfig(dataset="synthetic-tiny", schedule="warmup_cosine",
                                         warmup_steps=5, learning_rate=0.1), 100)
  assert float(warm(0)) == 0.0 and float(warm(5)) == pytest.approx(0.1)
  assert float(warm(100)) == pytest.approx(0.0, abs=1e-6)


def test_check_finite_names_the_steps():
  state = train_step.TrainState({"user": jnp.ones((2, 2)), "item": jnp.ones((2, 2))}, (),
                           jnp.int32(30))
  loop.check_finite(np.array([0.3, 0.2]), state, 10, 8)  # finite: no error
  with pytest.raises(loop.TrainingDiverged, match="between steps 18 and 26"):
    loop.check_finite(np.array([0.3, np.nan]), state, 10, 8)
  bad = state._replace(params={"user": jnp.full((2, 2), jnp.inf), "item": jnp.ones((2, 2))})
  with pytest.raises(loop.TrainingDiverged, match="learning_rate"):
    loop.check_finite(np.array([0.3]), bad, 10, 8)


# --------------------------------------------------------------------------- whole runs

_RUN = TrainConfig(dataset="synthetic-tiny", dim=16, learning_rate=0.02, schedule="cosine",
                   batch_size=64, epochs=6, num_negatives=4, eval_every=3,
                   steps_per_dispatch=16)
_MODEL_KEYS = ("auc", "precision@20", "recall@20", "ndcg@20")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  return workdir, train.train_and_evaluate(_RUN, workdir)


def test_a_failed_overwrite_keeps_the_older_run(finished_run, tmp_path):
  # A setting the data cannot serve fails after the data has loaded: before the older run is
  # deleted, not after.
  workdir = tmp_path / "run"
  shutil.copytree(finished_run[0], workdir)
  files_before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()
                  and p.name != ".lock"}
  with pytest.raises(errors.InvalidInput, match="--user_features"):
    train.train_and_evaluate(dataclasses.replace(_RUN, user_features="age"), workdir,
                             overwrite=True)
  assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()
          and p.name != ".lock"} == files_before


def test_a_run_whose_data_changed_is_neither_resumed_nor_read(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run[0], workdir)
  recorded = json.loads((workdir / workdir_lib.DATA_FILE).read_text())
  assert recorded["train_positives"] > 0 and len(recorded["sha256"]) == 64
  (workdir / workdir_lib.RESULTS_FILE).unlink()  # so that the rerun would resume, not return
  (workdir / workdir_lib.DATA_FILE).write_text(json.dumps({**recorded, "sha256": "0" * 64}))
  with pytest.raises(errors.WorkdirError, match="changed since it trained"):
    train.train_and_evaluate(_RUN, workdir)
  with pytest.raises(errors.WorkdirError, match="changed since it trained"):
    train.restore_run(workdir)


def test_untrained_model_scores_auc_one_half():
  from tripjax import metrics, model  # pylint: disable=g-import-not-at-top
  _, train_m, test_m = registry.load_split(TrainConfig(dataset="synthetic-ml-100k"))
  params = model.init_params(jax.random.key(0), *train_m.shape, 64)
  auc = metrics.evaluate(model.score_fn(params), train_m, test_m).means["auc"]
  assert abs(auc - 0.5) <= 0.02


def test_short_run_beats_popularity_and_writes_its_files(finished_run):
  workdir, results = finished_run
  assert results["model"]["auc"] > results["popularity"]["auc"] + 0.02
  assert results["model"]["recall@20"] > results["popularity"]["recall@20"]
  assert results["dataset"]["users"] == 100 and results["steps"] > 0
  assert json.loads((workdir / "results.json").read_text())["model"] == results["model"]
  history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [h["epoch"] for h in history] == [3, 6]
  assert history[-1]["auc"] == results["model"]["auc"]
  assert TrainConfig.from_flagfile(workdir / "flags.txt") == _RUN
  phases = results["phase_seconds"]
  assert set(phases) == {"data", "compile", "train", "evaluate", "popularity"}
  assert all(seconds > 0 for seconds in phases.values()), phases
  assert phases["train"] == results["train_seconds"]
  assert phases["evaluate"] == history[-1]["eval_seconds"]


def _history(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


class _Killed(BaseException):
  """Stands for the process dying (not an Exception, so nothing catches it on the way)."""


def _raise_once(real, when):
  """`real`, except that the first call for which `when(*args, **kwargs)` holds raises."""
  def wrapper(*args, **kwargs):
    if not wrapper.raised and when(*args, **kwargs):
      wrapper.raised = True
      raise _Killed()
    return real(*args, **kwargs)
  wrapper.raised = False
  return wrapper


@pytest.mark.parametrize("interruption", ["stop_after_evaluation", "during_evaluation",
                                          "before_checkpoint_commit"])
def test_interrupted_run_resumes_to_the_same_metrics(finished_run, tmp_path, monkeypatch,
                                                     interruption):
  workdir, uninterrupted = finished_run
  if interruption == "stop_after_evaluation":
    partial = train.train_and_evaluate(_RUN, tmp_path, stop_after_epoch=3)  # eval_every=3
    assert partial == {"finished": False, "epoch": 3}
    assert [h["epoch"] for h in _history(tmp_path)] == [3]
    # A run already past the epoch to stop after stays where it is.
    assert train.train_and_evaluate(_RUN, tmp_path, stop_after_epoch=1) == partial
    assert [h["epoch"] for h in _history(tmp_path)] == [3]
  else:
    if interruption == "during_evaluation":
      # The first evaluation (of epoch 3) dies.
      monkeypatch.setattr(train, "evaluate", _raise_once(train.evaluate, lambda *a, **k: True))
    else:
      # Epoch 3's line is written, then the process dies before its checkpoint is committed.
      from tripjax import checkpoint  # pylint: disable=g-import-not-at-top
      monkeypatch.setattr(checkpoint.Checkpoints, "save", _raise_once(
          checkpoint.Checkpoints.save, lambda self, epoch, *a, **k: epoch == 3))
    with pytest.raises(_Killed):
      train.train_and_evaluate(_RUN, tmp_path, checkpoint_every="1")
    monkeypatch.undo()
    # Whatever metrics.jsonl holds, a restored run only shows lines its checkpoints back.
    assert train.restore_run(tmp_path).history == []
  assert not (tmp_path / "results.json").exists()
  resumed = train.train_and_evaluate(_RUN, tmp_path)  # same config and workdir: resumes
  assert resumed["model"] == uninterrupted["model"]
  assert resumed["steps"] == uninterrupted["steps"]
  expected, got = _history(workdir), _history(tmp_path)
  assert [h["epoch"] for h in got] == [h["epoch"] for h in expected] == [3, 6]
  for line, reference in zip(got, expected):
    assert {k: line[k] for k in ("step", "loss", "active_fraction") + _MODEL_KEYS} == {
        k: reference[k] for k in ("step", "loss", "active_fraction") + _MODEL_KEYS}
  # A finished run is not trained again.
  assert train.train_and_evaluate(_RUN, tmp_path)["model"] == uninterrupted["model"]


def test_resume_keeps_the_recorded_shuffle_when_the_default_differs(finished_run, tmp_path,
                                                                     monkeypatch):
  # The run starts with the CPU default (host shuffle) and resumes where the default is the
  # device shuffle (as on a GPU): the recorded shuffle must win, or the trajectory changes.
  _, uninterrupted = finished_run
  from tripjax import checkpoint  # pylint: disable=g-import-not-at-top
  assert sampling.default_shuffle_on() == "host"
  train.train_and_evaluate(_RUN, tmp_path, stop_after_epoch=1)
  ckpts = checkpoint.Checkpoints(tmp_path / "checkpoints")
  try:
    assert ckpts.metadata(1)["shuffle_on"] == "host"
  finally:
    ckpts.close()
  monkeypatch.setattr(sampling.epoch, "default_shuffle_on", lambda: "device")
  resumed = train.train_and_evaluate(_RUN, tmp_path)
  assert resumed["model"] == uninterrupted["model"]


def test_runs_saved_before_draw_order_resume_with_their_draw(finished_run, tmp_path,
                                                            monkeypatch):
  # A checkpoint written before the sampler recorded `draw_order` resumes with the draw that
  # version used ("shuffled"), so its trajectory is the one it would have had.
  from tripjax import checkpoint  # pylint: disable=g-import-not-at-top
  _, current = finished_run
  prepare = loop.prepare_training
  legacy = lambda config, matrix, shuffle_on=None, draw_order=None: prepare(
      config, matrix, shuffle_on, "shuffled")
  save = checkpoint.Checkpoints.save
  old_meta = lambda self, epoch, params, opt_state, step, meta: save(
      self, epoch, params, opt_state, step, {k: v for k, v in meta.items() if k != "draw_order"})
  with monkeypatch.context() as patch:
    patch.setattr(loop, "prepare_training", legacy)
    reference = train.train_and_evaluate(_RUN, tmp_path / "reference")
    patch.setattr(checkpoint.Checkpoints, "save", old_meta)
    train.train_and_evaluate(_RUN, tmp_path / "old", stop_after_epoch=1)
  resumed = train.train_and_evaluate(_RUN, tmp_path / "old")
  assert resumed["model"] == reference["model"]
  assert resumed["model"] != current["model"]  # the two draws do train different models


def test_restore_run(finished_run, tmp_path):
  workdir, results = finished_run
  run = train.restore_run(workdir)
  assert run.config == _RUN and run.results == results and len(run.history) == 2
  assert run.params["user"].shape == (run.train.shape[0], 16)
  from tripjax import metrics, model  # pylint: disable=g-import-not-at-top
  auc = metrics.evaluate(model.score_fn(run.params), run.train, run.test).means["auc"]
  assert auc == pytest.approx(results["model"]["auc"], abs=1e-6)
  with pytest.raises(FileNotFoundError, match="flags.txt"):
    train.restore_run(tmp_path)
  (tmp_path / "flags.txt").write_text(_RUN.to_flagfile())
  with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
    train.restore_run(tmp_path)


def test_workdir_with_other_flags_is_refused(finished_run, tmp_path):
  workdir, _ = finished_run
  other = dataclasses.replace(_RUN, margin=0.3)
  with pytest.raises(workdir_lib.WorkdirConflict, match="margin"):
    train.train_and_evaluate(other, workdir)
  assert TrainConfig.from_flagfile(workdir / "flags.txt") == _RUN  # untouched


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  real = train_step.make_train_step

  def poisoned(*args, **kwargs):
    step = real(*args, **kwargs)
    def nan_after_first_epoch(state, batches, skip_empty=True):
      state, metrics = step(state, batches, skip_empty=skip_empty)
      scale = jnp.where(state.step > 40, jnp.nan, 1.0)
      return state, dict(metrics, loss=metrics["loss"] * scale,
                         loss_sum=metrics["loss_sum"] * scale)
    return jax.jit(nan_after_first_epoch, donate_argnums=0, static_argnames="skip_empty")

  monkeypatch.setattr(loop, "make_train_step", poisoned)
  # synthetic-tiny has 38 batches of 64 per epoch: the loss goes NaN in epoch 2.
  with pytest.raises(loop.TrainingDiverged, match="NaN/Inf between steps") as diverged:
    train.train_and_evaluate(_RUN, tmp_path, checkpoint_every="1")
  assert "checkpoint of epoch 1 is kept" in str(diverged.value)
  from tripjax import checkpoint  # pylint: disable=g-import-not-at-top
  assert checkpoint.Checkpoints(tmp_path / "checkpoints").latest_epoch() == 1
  assert workdir_lib.read_config(tmp_path) == _RUN  # the run resumes from it


def test_divergence_before_any_checkpoint_promises_none(tmp_path, monkeypatch):
  monkeypatch.setattr(loop, "check_finite", _raise_diverged)
  with pytest.raises(loop.TrainingDiverged, match="No checkpoint was saved yet"):
    train.train_and_evaluate(_RUN, tmp_path)
  # Nothing could resume from the run: it takes its files back, so that a corrected command
  # (here a lower learning rate) starts anew in the same folder without --overwrite.
  assert not workdir_lib.holds_run_files(tmp_path)
  assert not workdir_lib.claim(dataclasses.replace(_RUN, learning_rate=0.01), tmp_path,
                               overwrite=False)


def test_a_failed_run_leaves_the_files_it_found(tmp_path, monkeypatch):
  # An earlier attempt's flags (no checkpoint): the failing rerun did not write them.
  workdir_lib.write_config(_RUN, tmp_path)
  monkeypatch.setattr(loop, "check_finite", _raise_diverged)
  with pytest.raises(loop.TrainingDiverged, match="No checkpoint was saved yet"):
    train.train_and_evaluate(_RUN, tmp_path)
  assert workdir_lib.read_config(tmp_path) == _RUN


def _raise_diverged(chunk_loss, state, first_step, steps_per_chunk, kept=""):
  del chunk_loss, state, first_step, steps_per_chunk
  raise loop.TrainingDiverged(f"the loss became NaN/Inf. {kept}try a lower --learning_rate.")


def _saved_epochs(monkeypatch):
  """Records the epoch of every checkpoint save."""
  from tripjax import checkpoint  # pylint: disable=g-import-not-at-top
  saved, real = [], checkpoint.Checkpoints.save
  def save(self, epoch, *args, **kwargs):
    saved.append(epoch)
    return real(self, epoch, *args, **kwargs)
  monkeypatch.setattr(checkpoint.Checkpoints, "save", save)
  return saved


def test_checkpoints_follow_the_schedule_and_the_end(finished_run, tmp_path, monkeypatch):
  _, uninterrupted = finished_run
  saved = _saved_epochs(monkeypatch)
  results = train.train_and_evaluate(_RUN, tmp_path, checkpoint_every="4")
  assert saved == [4, 6]
  assert results["model"] == uninterrupted["model"]  # the schedule never changes the run


@pytest.mark.parametrize("text,epochs,seconds,due", [
    ("2", 1, 1e9, False), ("2", 2, 0.0, True), ("10m", 99, 599.0, False), ("10m", 1, 600.0, True),
    ("1.5h", 9, 5399.0, False), ("1.5h", 1, 5400.0, True), ("3epochs", 3, 0.0, True)])
def test_checkpoint_schedules(text, epochs, seconds, due):
  from tripjax import checkpoint  # pylint: disable=g-import-not-at-top
  assert checkpoint.Every.parse(text).due(epochs, seconds) is due


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "ten", "5s", "0m", ""])
def test_bad_checkpoint_schedules_are_refused(text):
  from tripjax import checkpoint  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.InvalidInput, match="--checkpoint_every"):
    checkpoint.Every.parse(text)


def test_sigterm_saves_the_epoch_and_stops_then_the_run_resumes(finished_run, tmp_path,
                                                                 monkeypatch):
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  _, uninterrupted = finished_run
  saved = _saved_epochs(monkeypatch)
  real = train.evaluate
  refused = []
  def evaluate_then_terminate(*args, **kwargs):  # SIGTERM arrives during epoch 3's evaluation
    with pytest.raises(workdir_lib.WorkdirLocked) as e:  # the run holds its workdir throughout
      with workdir_lib.locked(tmp_path):
        pass
    refused.append(str(e.value))
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)
  monkeypatch.setattr(train, "evaluate", evaluate_then_terminate)
  with pytest.raises(errors.Stopped, match="SIGTERM after epoch 3 of 6") as stopped:
    train.train_and_evaluate(_RUN, tmp_path)  # default schedule: no save due before the end
  assert stopped.value.exit_code == 128 + signal.SIGTERM
  assert len(refused) == 1 and f"in use by process {os.getpid()}" in refused[0]
  assert saved == [3]
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back
  monkeypatch.setattr(train, "evaluate", real)
  resumed = train.train_and_evaluate(_RUN, tmp_path)
  assert saved == [3, 6]
  assert resumed["model"] == uninterrupted["model"]


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous(finished_run, tmp_path):
  _, uninterrupted = finished_run
  train.train_and_evaluate(_RUN, tmp_path, stop_after_epoch=4, checkpoint_every="1")
  latest = tmp_path / "checkpoints" / "4"
  largest = max((p for p in latest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  with open(largest, "r+b") as f:
    f.truncate(16)
  resumed = train.train_and_evaluate(_RUN, tmp_path)
  assert resumed["model"] == uninterrupted["model"]
  kept = list((tmp_path / workdir_lib.DAMAGED_DIR).iterdir())
  assert [p.name.split("-")[0] for p in kept] == ["4"]  # kept aside for inspection
  assert (kept[0] / largest.relative_to(latest)).stat().st_size == 16


def test_no_restorable_checkpoint_is_one_error(tmp_path):
  train.train_and_evaluate(_RUN, tmp_path, stop_after_epoch=1)
  for path in (tmp_path / "checkpoints" / "1").rglob("*"):
    if path.is_file() and path.stat().st_size > 100:
      path.write_bytes(b"")
  with pytest.raises(errors.WorkdirError, match="no checkpoint .* restores"):
    train.train_and_evaluate(_RUN, tmp_path)


def test_overwrite_with_the_same_flags_resumes(tmp_path):
  train.train_and_evaluate(_RUN, tmp_path, stop_after_epoch=3)
  before = _history(tmp_path)
  train.train_and_evaluate(_RUN, tmp_path, overwrite=True)
  after = _history(tmp_path)
  assert [h["epoch"] for h in after] == [3, 6]
  assert after[0] == before[0]  # epoch 3's line (its timings too) kept: not trained again


def test_overwrite_keeps_the_old_run_until_the_new_data_loads(finished_run, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  old = tmp_path / "old"
  shutil.copytree(finished_run[0], old)
  files = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}
  bad_data = dataclasses.replace(_RUN, test_per_user=500)  # more than any user has
  with pytest.raises(errors.InvalidInput, match="fewer than"):
    train.train_and_evaluate(bad_data, old, overwrite=True)
  assert {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()} == files


def test_a_run_exists_once_its_data_loads(tmp_path):
  bad_data = dataclasses.replace(_RUN, test_per_user=500)
  with pytest.raises(errors.InvalidInput):
    train.train_and_evaluate(bad_data, tmp_path)
  assert not (tmp_path / "flags.txt").exists()
  assert workdir_lib.claim(_RUN, tmp_path, overwrite=False) is False  # the fix is not refused
