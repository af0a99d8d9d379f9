"""Tests for tripjax.metrics: AUC against sklearn, top-k metrics against numpy, blocked evaluate."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st
from sklearn.metrics import roc_auc_score

from tripjax import metrics

METHODS = [None, 64]  # sort path, compare path


@functools.lru_cache(maxsize=None)
def _jit_auc(max_positives):
  return jax.jit(functools.partial(metrics.roc_auc, max_positives=max_positives))


def _sk_auc(scores, positives, exclude):
  """sklearn per user over the candidates; NaN when a class is missing."""
  out = []
  for s, p, e in zip(np.asarray(scores, np.float32), positives, exclude):
    y, c = p[~e], s[~e]
    out.append(roc_auc_score(y, c) if 0 < y.sum() < y.size else np.nan)
  return np.array(out)


def _random_case(seed, users=40, items=60, decimals=None, pos_rate=0.15):
  rng = np.random.default_rng(seed)
  scores = rng.standard_normal((users, items)).astype(np.float32)
  if decimals is not None:
    scores = np.round(scores, decimals).astype(np.float32)
  exclude = rng.random((users, items)) < 0.3
  positives = (rng.random((users, items)) < pos_rate) & ~exclude
  positives[:, 0] = ~exclude[:, 0] | positives[:, 0]  # at least one positive for most users
  positives &= ~exclude
  return scores, positives, exclude


@pytest.mark.parametrize("max_positives", METHODS)
@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_roc_auc_matches_sklearn(max_positives, decimals):
  scores, pos, exc = _random_case(0, decimals=decimals)
  got = np.asarray(_jit_auc(max_positives)(scores, pos, exc))
  want = _sk_auc(scores, pos, exc)
  assert np.array_equal(np.isnan(got), np.isnan(want))
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("max_positives", METHODS)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_roc_auc_dtypes_equal_sklearn_on_the_float32_values(max_positives, dtype):
  scores, pos, exc = _random_case(1)
  low = jnp.asarray(scores, dtype)  # many ties after rounding to 8-11 bits
  got = np.asarray(_jit_auc(max_positives)(low, pos, exc))
  want = _sk_auc(np.asarray(low.astype(jnp.float32)), pos, exc)
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("max_positives", METHODS)
def test_roc_auc_edge_cases(max_positives):
  items = 8
  scores = np.tile(np.arange(items, dtype=np.float32), (6, 1))
  pos = np.zeros((6, items), bool)
  exc = np.zeros((6, items), bool)
  pos[0, 5:] = True                        # perfect ranking
  pos[1, :3] = True                        # reversed
  pos[2, 4] = True
  scores[2] = 1.0                          # all equal -> 0.5
  pos[3, 6] = True                         # a single positive: 6 of 7 negatives below
  pos[4, 2:] = True
  exc[4, :2] = True                        # every candidate positive -> NaN
  # row 5: no positive -> NaN
  got = np.asarray(_jit_auc(max_positives)(scores, pos, exc))
  np.testing.assert_allclose(got[:4], [1.0, 0.0, 0.5, 6 / 7], atol=1e-7)
  assert np.isnan(got[4]) and np.isnan(got[5])
  np.testing.assert_allclose(got[:4], _sk_auc(scores, pos, exc)[:4], atol=1e-6)


def test_roc_auc_signed_zero_and_infinities_tie_like_numpy():
  scores = np.array([[-0.0, 0.0, np.inf, -np.inf, 0.0]], np.float32)
  pos = np.array([[True, False, True, False, False]])
  exc = np.zeros_like(pos)
  for mp in METHODS:
    got = np.asarray(_jit_auc(mp)(scores, pos, exc))
    # sklearn rejects inf, so count by hand: -0.0 ties 2 zeros, beats -inf; inf beats all 3.
    np.testing.assert_allclose(got, [(1 + 0.5 * 2 + 3) / 6], atol=1e-7)


def test_roc_auc_nan_score_gives_nan_and_shape_mismatch_raises():
  scores, pos, exc = _random_case(2, users=3)
  scores[1, np.flatnonzero(~exc[1])[0]] = np.nan
  got = np.asarray(_jit_auc(None)(scores, pos, exc))
  assert np.isnan(got[1]) and not np.isnan(got[0])
  with pytest.raises(ValueError, match="same"):
    metrics.roc_auc(scores, pos[:, :-1], exc)


# Float32 subnormals (|x| < 1.2e-38), e.g. sigmoids of logits below -87: XLA on CPU flushes them
# to zero in float ops, so an AUC that compared them as floats would tie them all (0.5).
_TINY = np.finfo(np.float32).smallest_subnormal  # 1.4e-45
_SUBNORMAL_ROWS = [
    ([1e-40, 3e-41, 5e-42, 2e-39, 7e-41, 1e-39], [1, 0, 0, 1, 0, 0]),
    ([1e-40, -3e-41, -1e-40, 2e-41, -5e-42, 0.0], [1, 0, 1, 1, 0, 0]),         # mixed signs
    ([0.0, -0.0, 1e-40, -1e-40, 0.0, -0.0, 1e-40, _TINY], [1, 0, 1, 0, 0, 1, 0, 0]),  # zero ties
    ([_TINY, 0.0, -_TINY, 2 * _TINY, -0.0, _TINY], [1, 0, 0, 1, 0, 0]),     # a few ulps of 0
    ([1.1754942e-38, 1.1754944e-38, 1e-38, 1.0, -1e-45, 0.5], [0, 1, 1, 0, 1, 0]),  # at FLT_MIN
]


def _subnormal_case():
  width = max(len(s) for s, _ in _SUBNORMAL_ROWS) + 1
  scores = np.ones((len(_SUBNORMAL_ROWS) + 1, width), np.float32)
  pos = np.zeros(scores.shape, bool)
  exc = np.ones(scores.shape, bool)
  for u, (s, p) in enumerate(_SUBNORMAL_ROWS):
    scores[u, :len(s)], pos[u, :len(p)], exc[u, :len(s)] = s, p, False
  # Sigmoids of very negative logits, computed in numpy (float32, not flushed): 8e-40 ... 1e-43.
  logits = -np.linspace(90.0, 99.0, width, dtype=np.float32)
  scores[-1] = np.exp(logits) / (1 + np.exp(logits))  # sigmoid, in the form that does not overflow
  pos[-1] = np.arange(width) % 3 == 0
  exc[-1] = False
  return scores, pos, exc


@pytest.mark.parametrize("max_positives", METHODS)
def test_roc_auc_ranks_subnormal_scores_exactly(max_positives):
  scores, pos, exc = _subnormal_case()
  assert np.all(((np.abs(scores) < np.finfo(np.float32).tiny) & (scores != 0)).sum(1) >= 2)
  want = _sk_auc(scores, pos, exc)
  assert np.all(want != 0.5)  # a flushed comparison gives 0.5 (all tied) on the subnormal rows
  got = np.asarray(_jit_auc(max_positives)(scores, pos, exc))
  np.testing.assert_allclose(got, want, atol=1e-7, rtol=0)
  # bfloat16 has float32's exponent range, so it has subnormals too.
  low = jnp.asarray(scores, jnp.bfloat16)
  got = np.asarray(_jit_auc(max_positives)(low, pos, exc))
  np.testing.assert_allclose(got, _sk_auc(np.asarray(low.astype(jnp.float32)), pos, exc),
                             atol=1e-7, rtol=0)


def test_sortable_keys_order_subnormals_and_merge_signed_zeros():
  values = np.array([-np.inf, -1e30, -1.0, -np.finfo(np.float32).tiny, -1e-40, -_TINY, -0.0, 0.0,
                     _TINY, 2 * _TINY, 1e-40, np.finfo(np.float32).tiny, 1.0, 1e30, np.inf],
                    np.float32)
  keys = np.asarray(jax.jit(metrics.sortable_keys)(values))
  assert keys[6] == keys[7] == 0  # -0.0 and 0.0
  assert np.all(np.diff(np.delete(keys, 6)) > 0)


# Special float32 values the property test mixes into its draws: subnormals, signed zeros, the
# normal/subnormal boundary, huge values, and values that tie after a large offset.
_SPECIAL = [0.0, -0.0, 1e-40, -1e-40, 3e-41, -3e-41, float(_TINY), -float(_TINY), 1.1754942e-38,
            float(np.finfo(np.float32).tiny), 1e30, -1e30, 16777216.0, 16777217.0, 1e6 + 0.03]
_PROP_USERS, _PROP_ITEMS = 5, 24  # fixed shapes: one compilation per method for every example


@st.composite
def _auc_cases(draw):
  """(scores float32[U, I], positives, exclude): values drawn from a small pool (so ties occur),
  itself drawn from every float32 (subnormals and infinities included) and `_SPECIAL`."""
  values = st.one_of(st.floats(width=32, allow_nan=False), st.sampled_from(_SPECIAL))
  pool = np.array(draw(st.lists(values, min_size=1, max_size=12)), np.float32)
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  if draw(st.booleans()):
    pool = pool + np.float32(draw(st.sampled_from([1e6, -3e7, 1e-38])))  # rounding makes ties
  scores = rng.choice(pool, size=(_PROP_USERS, _PROP_ITEMS)).astype(np.float32)
  exclude = rng.random(scores.shape) < draw(st.floats(0.0, 0.8))
  positives = (rng.random(scores.shape) < draw(st.floats(0.05, 0.6))) & ~exclude
  return scores, positives, exclude


def _rank_auc(scores, positives, exclude):
  """sklearn per user on the scores, or on their dense ranks (same AUC) where one is infinite."""
  out = []
  for s, p, e in zip(scores, positives, exclude):
    y, c = p[~e], s[~e]
    if not 0 < y.sum() < y.size:
      out.append(np.nan)
      continue
    ranks = c if np.isfinite(c).all() else np.unique(c, return_inverse=True)[1]
    out.append(roc_auc_score(y, ranks))
  return np.array(out)


@settings(max_examples=150, deadline=None)
@given(case=_auc_cases())
def test_roc_auc_property_equals_sklearn_on_any_float32(case):
  scores, pos, exc = case
  want = _rank_auc(scores, pos, exc)
  for max_positives in METHODS:
    got = np.asarray(_jit_auc(max_positives)(scores, pos, exc))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, err_msg=f"{max_positives=}")


@functools.lru_cache(maxsize=None)
def _jit_top_k(k):
  return jax.jit(functools.partial(metrics.top_k_unseen, k=k))


@settings(max_examples=100, deadline=None)
@given(case=_auc_cases(), k=st.integers(1, _PROP_ITEMS))
def test_top_k_unseen_property_equals_numpy_order(case, k):
  scores, _, exc = case
  got = np.asarray(_jit_top_k(k)(scores, ~exc))
  lowest = np.finfo(np.float32).min  # a -inf candidate ranks with the lowest finite score
  for u, (s, e) in enumerate(zip(scores, exc)):
    cand = np.flatnonzero(~e)
    order = cand[np.lexsort((cand, -np.maximum(s[cand], lowest)))][:k]
    np.testing.assert_array_equal(got[u], np.pad(order, (0, k - order.size), constant_values=-1))


def test_compare_path_flags_users_with_too_many_positives():
  scores, pos, exc = _random_case(3, pos_rate=0.5)
  got = np.asarray(_jit_auc(3)(scores, pos, exc))
  many = (pos & ~exc).sum(1) > 3
  assert many.any() and np.isnan(got[many]).all()


# ---------------------------------------------------------------- evaluate


def _split(seed, users=37, items=50, test_per_user=4):
  rng = np.random.default_rng(seed)
  train = rng.random((users, items)) < 0.25
  test = np.zeros_like(train)
  for u in range(users):
    free = np.flatnonzero(~train[u])
    test[u, rng.choice(free, size=min(test_per_user, free.size), replace=False)] = True
  test[3] = False                          # a user with no test item: skipped
  train[5] = ~test[5]                      # a user whose candidates are all positive: skipped
  return sp.csr_matrix(train), sp.csr_matrix(test)


def _table_score_fn(table):
  table = jnp.asarray(table)
  return lambda users: table[users]


def _numpy_reference(scores, train, test, ks):
  """Plain per-user numpy definitions (the docstring of `evaluate`)."""
  train, test = train.toarray(), test.toarray()
  out = {name: [] for name in metrics.metric_names(ks)}
  for s, tr, te in zip(scores, train, test):
    cand = np.flatnonzero(~tr)
    labels = te[cand]
    ok = 0 < labels.sum() < labels.size
    out["auc"].append(roc_auc_score(labels, s[cand]) if ok else np.nan)
    order = cand[np.lexsort((cand, -s[cand]))]  # score desc, lower index first
    n_test = te.sum()
    for k in ks:
      hits = te[order[:k]]
      h = hits.sum()
      dcg = np.sum(hits / np.log2(np.arange(2, hits.size + 2)))
      idcg = np.sum(1 / np.log2(np.arange(2, min(k, n_test) + 2)))
      vals = {"precision": h / k, "recall": h / max(n_test, 1), "ndcg": dcg / max(idcg, 1e-30),
              "hit_rate": float(h > 0)}
      for name, v in vals.items():
        out[f"{name}@{k}"].append(v if ok else np.nan)
  return {name: np.array(v) for name, v in out.items()}


@pytest.mark.parametrize("block_size", [1024, 37, 8, 5])
def test_evaluate_matches_numpy_reference_for_any_block_size(block_size):
  train, test = _split(0)
  rng = np.random.default_rng(1)
  scores = np.round(rng.standard_normal(train.shape), 1).astype(np.float32)  # ties
  ks = (3, 10)
  res = metrics.evaluate(_table_score_fn(scores), train, test, ks=ks, block_size=block_size)
  ref = _numpy_reference(scores, train, test, ks)
  for name in metrics.metric_names(ks):
    np.testing.assert_allclose(res.per_user[name], ref[name], atol=1e-6, err_msg=name)
  assert res.users_skipped == 2 and res.users_evaluated == train.shape[0] - 2
  assert res.means["auc"] == pytest.approx(np.nanmean(ref["auc"]), abs=1e-6)
  assert res.top_items.shape == (train.shape[0], 10) and res.top_items.dtype == np.int32
  for u in (0, 10, 36):
    cand = np.flatnonzero(~train[u].toarray()[0])
    order = cand[np.lexsort((cand, -scores[u, cand]))]
    np.testing.assert_array_equal(res.top_items[u], order[:10])


def test_evaluate_sort_path_for_many_test_items(monkeypatch):
  train, test = _split(4, test_per_user=9)
  scores = np.round(np.random.default_rng(2).standard_normal(train.shape), 1).astype(np.float32)
  monkeypatch.setattr(metrics.evaluation, "_COMPARE_MAX_POSITIVES", 4)  # max_test 9 > 4: sort path
  res = metrics.evaluate(_table_score_fn(scores), train, test, ks=(5,), block_size=16)
  np.testing.assert_allclose(res.auc, _numpy_reference(scores, train, test, (5,))["auc"],
                             atol=1e-6)


def test_top_k_ties_lower_index_first_and_short_lists_padded():
  scores = jnp.array([[1.0, 2.0, 2.0, -0.0, 0.0, 2.0]])
  cand = jnp.array([[True, True, False, True, True, True]])
  np.testing.assert_array_equal(metrics.top_k_unseen(scores, cand, 5), [[1, 5, 0, 3, 4]])
  # A candidate scored -inf still beats every excluded item.
  inf_scores = jnp.array([[5.0, -jnp.inf, 1.0, -jnp.inf]])
  np.testing.assert_array_equal(
      metrics.top_k_unseen(inf_scores, jnp.array([[False, False, True, True]]), 3), [[2, 3, -1]])
  few = jnp.array([[False, False, True, False, False, False]])
  np.testing.assert_array_equal(metrics.top_k_unseen(scores, few, 3), [[2, -1, -1]])
  # Subnormals rank exactly (XLA on CPU would flush them to 0 in float ops); -0.0 ties 0.0.
  tiny = jnp.array([[1e-40, -0.0, 3e-41, -1e-40, 0.0, 1e-45, -3e-41]])
  np.testing.assert_array_equal(metrics.top_k_unseen(tiny, jnp.ones(tiny.shape, bool), 7),
                                [[0, 2, 5, 1, 4, 6, 3]])


@pytest.mark.parametrize("compare_max", [64, 2])  # compare path, sort path (4 test items > 2)
def test_evaluate_ranks_subnormal_scores_exactly(monkeypatch, compare_max):
  train, test = _split(9, users=12, items=30)
  rng = np.random.default_rng(4)
  logits = rng.uniform(-100.0, -88.0, train.shape).astype(np.float32)
  scores = np.exp(logits) / (1 + np.exp(logits))  # sigmoid in numpy: subnormals kept (4e-44..6e-39)
  scores[::2, ::3] = rng.choice([0.0, -0.0, 1e-40, -1e-40], scores[::2, ::3].shape)
  assert scores.dtype == np.float32 and np.all(np.abs(scores) < np.finfo(np.float32).tiny)
  assert np.mean(scores != 0) > 0.9
  monkeypatch.setattr(metrics.evaluation, "_COMPARE_MAX_POSITIVES", compare_max)
  ks = (3, 10)
  res = metrics.evaluate(_table_score_fn(scores), train, test, ks=ks, block_size=8)
  ref = _numpy_reference(scores, train, test, ks)
  for name in metrics.metric_names(ks):
    np.testing.assert_allclose(res.per_user[name], ref[name], atol=1e-6, err_msg=name)
  for u in range(train.shape[0]):
    cand = np.flatnonzero(~train[u].toarray()[0])
    order = cand[np.lexsort((cand, -scores[u, cand]))][:10]
    np.testing.assert_array_equal(res.top_items[u], np.pad(order, (0, 10 - order.size),
                                                            constant_values=-1))


def test_evaluate_compiles_once_across_blocks():
  train, test = _split(5, users=23)
  scores = np.random.default_rng(3).standard_normal(train.shape).astype(np.float32)
  before = metrics.evaluation.trace_count
  metrics.evaluate(_table_score_fn(scores), train, test, ks=(4,), block_size=6)  # 4 blocks
  assert metrics.evaluation.trace_count - before == 1
  metrics.evaluate(_table_score_fn(scores), train, test, ks=(4,), block_size=6)
  assert metrics.evaluation.trace_count - before == 1


def test_evaluate_passes_fixed_size_blocks_padded_with_user_zero():
  train, test = _split(6, users=10)
  seen = []

  def score_fn(users):
    seen.append(np.asarray(users))
    return jnp.zeros((users.shape[0], train.shape[1]))

  metrics.evaluate(score_fn, train, test, ks=(2,), block_size=4)
  assert [s.tolist() for s in seen] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]


def test_evaluate_bad_inputs():
  train, test = _split(7, users=6, items=12)
  fn = _table_score_fn(np.zeros(train.shape, np.float32))
  with pytest.raises(ValueError, match="shape"):
    metrics.evaluate(fn, train, test[:, :-1], ks=(2,))
  with pytest.raises(ValueError, match="leakage"):
    metrics.evaluate(fn, train, (test + train[:, :]).tocsr(), ks=(2,))
  with pytest.raises(ValueError, match="number of items"):
    metrics.evaluate(fn, train, test, ks=(13,))
  with pytest.raises(ValueError, match="block_size"):
    metrics.evaluate(fn, train, test, ks=(2,), block_size=0)
  with pytest.raises(ValueError, match="score_fn returned shape"):
    metrics.evaluate(lambda u: jnp.zeros((u.shape[0], 3)), train, test, ks=(2,))
  nan_scores = np.zeros(train.shape, np.float32)
  nan_scores[4, 7] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    metrics.evaluate(_table_score_fn(nan_scores), train, test, ks=(2,), block_size=4)


def test_eval_result_to_dict_is_json_ready():
  import json
  train, test = _split(8, users=9)
  res = metrics.evaluate(_table_score_fn(np.ones(train.shape, np.float32)), train, test, ks=(2,))
  d = json.loads(json.dumps(res.to_dict()))
  assert d["users_evaluated"] == res.users_evaluated and d["ks"] == [2]
  assert d["means"]["auc"] == pytest.approx(0.5)
  assert set(d["means"]) == set(metrics.metric_names((2,)))
