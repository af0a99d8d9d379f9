"""Tests of `tripjax.models`: the registry, the popularity model, refusals, old workdirs."""

import dataclasses
import shutil

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import baselines
from tripjax import config as config_lib
from tripjax import errors
from tripjax import metrics
from tripjax import model
from tripjax import models
from tripjax import recommend
from tripjax import train as train_lib
from tripjax import workdir as workdir_lib


def _split(seed=0, num_users=40, num_items=30):
  rng = np.random.default_rng(seed)
  # Integer-valued popularity with many ties (count ties must be scored as the baseline does).
  matrix = rng.random((num_users, num_items)) < np.linspace(0.05, 0.6, num_items)
  test = matrix & (rng.random(matrix.shape) < 0.3)
  return sp.csr_matrix(matrix & ~test), sp.csr_matrix(test)


def test_registry_names_and_lookup():
  assert models.NAMES == ("triplet", "popularity", "ease", "ials", "rp3beta", "itemknn",
                          "pagerank")
  for name in models.NAMES:
    assert models.get(name).name == name
  with pytest.raises(errors.InvalidInput, match="unknown model 'nope'.*triplet, popularity"):
    models.get("nope")


def test_config_model_field_comes_from_the_registry():
  assert config_lib.TrainConfig().model == "triplet"
  meta = config_lib.TrainConfig.__dataclass_fields__["model"].metadata
  assert meta["choices"] == models.NAMES
  with pytest.raises(errors.InvalidInput, match="model must be one of"):
    config_lib.TrainConfig(model="nope")


def test_flags_txt_without_model_reads_back_as_triplet(tmp_path):
  text = config_lib.TrainConfig(model="popularity", dim=8).to_flagfile()
  assert "--model=popularity\n" in text
  (tmp_path / "flags.txt").write_text(text.replace("--model=popularity\n", ""))
  config = config_lib.TrainConfig.from_flagfile(tmp_path / "flags.txt")
  assert config.model == "triplet" and config.dim == 8


@pytest.mark.parametrize("penalty", [0.0, 0.3])
def test_popularity_model_evaluates_as_the_baseline(penalty):
  train, test = _split()
  popularity = models.get("popularity")
  params = popularity.fit(config_lib.TrainConfig(model="popularity"), train,
                          key=jax.random.key(0))
  like = popularity.params_like(None, train)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == jax.tree.map(
      lambda x: (x.shape, x.dtype), like)
  got = metrics.evaluate(popularity.score_fn(params), train, test, block_size=16)
  want = metrics.evaluate(baselines.popularity_scores(train), train, test, block_size=16)
  np.testing.assert_array_equal(np.asarray(got.auc), np.asarray(want.auc))
  np.testing.assert_array_equal(np.asarray(got.top_items), np.asarray(want.top_items))
  assert got.means == want.means
  # The run's popularity offset is added to any model's scores.
  offset = model.popularity_offset(train, penalty)
  scores = np.asarray(jax.jit(popularity.score_fn(params, offset))(np.arange(3, dtype=np.int32)))
  counts = baselines.item_counts(train).astype(np.float32)
  np.testing.assert_array_equal(scores, np.broadcast_to(
      counts if offset is None else counts + offset, scores.shape))


def test_triplet_model_scores_as_model_score_fn():
  train, test = _split(1)
  triplet = models.get("triplet")
  config = config_lib.TrainConfig(dim=4, seed=2)
  params = triplet.init(config, *train.shape)
  offset = model.popularity_offset(train, 0.2)
  got = metrics.evaluate(triplet.score_fn(params, offset), train, test, block_size=16)
  want = metrics.evaluate(model.score_fn(params, offset), train, test, block_size=16)
  np.testing.assert_array_equal(np.asarray(got.auc), np.asarray(want.auc))
  assert triplet.item_vectors(params) is params["item"]
  like = triplet.params_like(config, train)
  assert {k: v.shape for k, v in like.items()} == {k: v.shape for k, v in params.items()}


def test_top_k_scored_equals_top_k_and_evaluation():
  train, test = _split(2)
  params = models.get("triplet").init(config_lib.TrainConfig(dim=4), *train.shape)
  offset = model.popularity_offset(train, 0.2)
  users = np.arange(train.shape[0])
  score_fn = models.get("triplet").score_fn(params, offset)
  got_items, got_scores = recommend.top_k_scored(score_fn, users, k=5, exclude=train,
                                                 batch_size=16)
  want_items, want_scores = recommend.top_k(params, users, k=5, exclude=train,
                                            item_offset=offset)
  np.testing.assert_array_equal(got_items, want_items)
  np.testing.assert_allclose(got_scores, want_scores, atol=1e-6)
  evaluated = metrics.evaluate(score_fn, train, test, ks=(5,), block_size=16)
  np.testing.assert_array_equal(got_items, np.asarray(evaluated.top_items)[:, :5])
  with pytest.raises(errors.InvalidInput, match="user index 99 is out of range"):
    recommend.top_k_scored(score_fn, np.array([99]), k=5, exclude=train)


def test_similar_items_and_fold_in_refused_without_item_vectors():
  train, _ = _split(3)
  popularity = models.get("popularity")
  params = popularity.fit(None, train)
  assert popularity.item_vectors(params) is None
  with pytest.raises(errors.InvalidInput) as e:
    popularity.similar_items(params, 0, k=3)
  assert "\n" not in str(e.value) and "--similar_to" in str(e.value)
  assert "popularity model has no item vectors" in str(e.value)
  with pytest.raises(errors.InvalidInput) as e:
    popularity.fold_in_user(params, [0, 1], jax.random.key(0), steps=2, margin=0.5)
  assert "\n" not in str(e.value) and "--liked" in str(e.value)
  assert "popularity model cannot fold in" in str(e.value)
  triplet = models.get("triplet")
  tables = triplet.init(config_lib.TrainConfig(dim=4), *train.shape)
  items, _ = triplet.similar_items(tables, 0, k=3)
  assert items.shape == (3,) and 0 not in items


def test_old_workdir_without_model_restores_as_triplet(smoke_run, tmp_path):
  workdir = tmp_path / "old"
  shutil.copytree(smoke_run[0], workdir)
  (workdir / workdir_lib.CONFIG_FILE).unlink(missing_ok=True)
  flags = workdir / workdir_lib.FLAGS_FILE
  lines = [l for l in flags.read_text().splitlines() if not l.startswith("--model=")]
  assert len(lines) < len(flags.read_text().splitlines())  # the line was there
  flags.write_text("\n".join(lines) + "\n")
  run = train_lib.restore_run(workdir)
  assert run.config.model == "triplet"
  assert set(run.params) == {"user", "item"}
  assert run.params["item"].shape == (run.train.shape[1], run.config.dim)
  assert dataclasses.asdict(run.config) == run.results["config"]


def test_reading_a_run_leaves_a_save_in_progress_alone(smoke_run, tmp_path):
  # recommend and analyze may read a run while its training writes the next checkpoint.
  workdir = tmp_path / "run"
  shutil.copytree(smoke_run[0], workdir)
  in_flight = workdir / workdir_lib.CHECKPOINT_DIR / "4.orbax-checkpoint-tmp-1700000000"
  (in_flight / "params").mkdir(parents=True)
  run = train_lib.restore_run(workdir)
  assert in_flight.is_dir() and run.history[-1]["epoch"] == 3


def test_similar_items_use_the_models_own_item_item_scores_without_vectors():
  from tripjax.models import base  # pylint: disable=g-import-not-at-top
  row = np.array([0.5, 9.0, 0.1, 0.7, 0.7], np.float32)
  toy = base.Model(name="toy", fit=None, score=None, params_like=None,
                   similar=lambda params, item: row if item == 1 else None)
  items, scores = toy.similar_items({}, 1, k=3)
  assert items.tolist() == [3, 4, 0]  # item 1 itself left out; the tie goes to the lower index
  np.testing.assert_allclose(scores, [0.7, 0.7, 0.5])
  bare = base.Model(name="bare", fit=None, score=None, params_like=None)
  with pytest.raises(errors.InvalidInput, match="--similar_to: the bare model has no item"):
    bare.similar_items({}, 1, k=3)
