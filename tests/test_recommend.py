"""Tests for tripjax.recommend: top-k, similar items, title look-up, fold-in."""

import difflib
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from tripjax import errors
from tripjax import losses
from tripjax import model
from tripjax import recommend
from tripjax import retrieval


def _params_with_ties(seed=0, num_users=13, num_unique=40, dim=6):
  """Items are 40 distinct random vectors, each used twice (exact ties), in shuffled order."""
  rng = np.random.default_rng(seed)
  unique = rng.normal(size=(num_unique, dim)).astype(np.float32)
  order = rng.permutation(2 * num_unique)
  items = np.concatenate([unique, unique])[order]
  users = rng.normal(size=(num_users, dim)).astype(np.float32)
  return {"user": jnp.asarray(users), "item": jnp.asarray(items)}


def _cosine64(a, b):
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  return a @ b.T


def _reference_top_k(scores, k, exclude=None):
  """Stable numpy reference: score descending, then item index ascending; -1/-inf padding."""
  items = np.full((scores.shape[0], k), -1)
  values = np.full((scores.shape[0], k), -np.inf)
  for u, row in enumerate(scores):
    allowed = np.ones(row.size, bool) if exclude is None else ~exclude[u]
    order = np.argsort(-row, kind="stable")
    order = order[allowed[order]][:k]
    items[u, :order.size] = order
    values[u, :order.size] = row[order]
  return items, values


def _random_csr(rng, shape, density):
  return sp.csr_matrix(rng.random(shape) < density)


@pytest.mark.parametrize("batch_size", [1, 4, 1024])
@pytest.mark.parametrize("with_exclude", [False, True])
def test_top_k_matches_numpy_argsort_with_ties(batch_size, with_exclude):
  params = _params_with_ties()
  rng = np.random.default_rng(1)
  exclude = _random_csr(rng, (13, 80), 0.3) if with_exclude else None
  users = np.array([3, 0, 12, 5, 5, 7, 1], np.int32)
  items, scores = recommend.top_k(params, users, k=17, exclude=exclude, batch_size=batch_size)
  reference = _cosine64(params["user"], params["item"])[users]
  ref_items, ref_scores = _reference_top_k(
      reference, 17, None if exclude is None else exclude.toarray()[users])
  assert items.dtype == np.int32 and items.shape == (7, 17)
  assert scores.dtype == np.float32 and scores.shape == (7, 17)
  np.testing.assert_array_equal(items, ref_items)
  np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
  # The test really has ties in the answer: some pair of returned items share a score exactly.
  assert any(len(set(row.tolist())) < len(row) for row in np.round(ref_scores, 9))


def test_top_k_pads_users_with_too_few_unseen_items():
  params = _params_with_ties()
  exclude = np.zeros((13, 80), bool)
  exclude[2, 5:] = True  # user 2 has only items 0..4 unseen
  items, scores = recommend.top_k(params, np.array([2, 3]), k=8, exclude=sp.csr_matrix(exclude))
  assert set(items[0, :5].tolist()) == set(range(5))
  np.testing.assert_array_equal(items[0, 5:], -1)
  assert np.isneginf(scores[0, 5:]).all() and np.isfinite(scores[1]).all()


def test_top_k_accepts_raw_vectors_and_index_lists():
  params = _params_with_ties()
  exclude = _random_csr(np.random.default_rng(2), (13, 80), 0.2)
  by_index = recommend.top_k(params, np.arange(13), k=9, exclude=exclude)
  by_vector = recommend.top_k_for_vectors(params, params["user"], k=9, exclude=exclude)
  np.testing.assert_array_equal(by_index[0], by_vector[0])
  np.testing.assert_allclose(by_index[1], by_vector[1])
  seen = exclude[4].indices
  one_items, one_scores = recommend.top_k_for_vectors(params, params["user"][4], k=9,
                                                      exclude=seen)
  assert one_items.shape == (9,)
  np.testing.assert_array_equal(one_items, by_index[0][4])
  plain = recommend.top_k(params, np.asarray(params["user"][:3]), k=5)
  np.testing.assert_array_equal(plain[0], recommend.top_k(params, np.arange(3), k=5)[0])


@pytest.mark.parametrize("k", [0, -1, 81, 2.5])
def test_top_k_rejects_bad_k(k):
  with pytest.raises(ValueError, match="k"):
    recommend.top_k(_params_with_ties(), np.arange(3), k=k)


def test_check_k_returns_an_int_and_names_the_candidates():
  assert recommend.check_k(np.int64(3), 5) == 3 and type(recommend.check_k(3.0, 5)) is int
  with pytest.raises(ValueError, match=r"larger than the shortlist \(4 items\)"):
    recommend.check_k(5, 4, "shortlist")
  for bad in (True, 0, 1.5):
    with pytest.raises(ValueError, match="positive integer"):
      recommend.check_k(bad, 4)


def test_top_k_rejects_unknown_user_and_bad_exclude():
  params = _params_with_ties()
  with pytest.raises(ValueError, match="user index 13 is out of range.*13 users"):
    recommend.top_k(params, np.array([0, 13]), k=3)
  with pytest.raises(ValueError, match="exclude has shape"):
    recommend.top_k(params, np.array([0]), k=3, exclude=sp.csr_matrix((13, 79), dtype=bool))
  with pytest.raises(ValueError, match="user_vecs"):
    recommend.top_k_for_vectors(params, np.ones(5, np.float32), k=3)


def test_similar_items_excludes_itself_and_is_symmetric():
  params = _params_with_ties(dim=8)
  num_items = params["item"].shape[0]
  cosine = _cosine64(params["item"], params["item"])
  neighbours = {}
  for item in range(num_items):
    items, scores = recommend.similar_items(params, item, k=num_items - 1)
    assert item not in items.tolist()
    assert sorted(items.tolist()) == sorted(set(range(num_items)) - {item})
    assert np.all(np.diff(scores) <= 0)
    np.testing.assert_allclose(scores, cosine[item, items], atol=1e-5)
    neighbours[item] = dict(zip(items.tolist(), scores.tolist()))
  for a in range(num_items):
    for b, score in neighbours[a].items():
      assert abs(score - neighbours[b][a]) < 1e-5
  # The copy of an item is its nearest neighbour, at cosine 1.
  items, scores = recommend.similar_items(params, 0, k=1)
  np.testing.assert_allclose(scores, [1.0], atol=1e-5)
  np.testing.assert_array_equal(params["item"][items[0]], params["item"][0])


@pytest.mark.parametrize("item,k,message", [(80, 3, "item index 80"), (-1, 3, "item index -1"),
                                            (0, 80, "k=80"), (0, 0, "k")])
def test_similar_items_rejects_bad_input(item, k, message):
  with pytest.raises(ValueError, match=message):
    recommend.similar_items(_params_with_ties(), item, k=k)


TITLES = np.array(["Toy Story (1995)", "Fargo (1996)", "Usual Suspects, The (1995)",
                   "Hamlet (1990)", "Hamlet (1996)", "Toy Story 2 (1999)", "Star Wars (1977)",
                   "Star Trek: Generations (1994)", "Star Trek: First Contact (1996)"], object)


@pytest.mark.parametrize("query,expected", [
    ("fargo", 1), ("FARGO", 1), ("Fargo (1996)", 1), ("  fargo  ", 1),
    ("toy story", 0),               # exact title without year beats the substring in 'Toy Story 2'
    ("Toy Story 2", 5), ("the usual suspects", 2), ("usual suspects", 2),
    ("hamlet (1996)", 4), ("first contact", 8), ("star wars", 6)])
def test_find_item_matches(query, expected):
  assert recommend.find_item(TITLES, query) == expected


def test_find_item_ambiguous_lists_candidates():
  with pytest.raises(ValueError, match=r"ambiguous.*'Hamlet \(1990\)'.*'Hamlet \(1996\)'"):
    recommend.find_item(TITLES, "hamlet")
  with pytest.raises(ValueError, match=r"ambiguous.*Generations.*First Contact"):
    recommend.find_item(TITLES, "star trek")


def test_find_item_missing_suggests_closest():
  with pytest.raises(ValueError, match=r"no item title matches 'Fargoo'.*closest: 'Fargo \(1996\)'"):
    recommend.find_item(TITLES, "Fargoo")
  with pytest.raises(ValueError, match="no item title matches 'zzzzzz' among 9 titles"):
    recommend.find_item(TITLES, "zzzzzz")
  with pytest.raises(ValueError, match="empty"):
    recommend.find_item(TITLES, "  ")


@pytest.mark.parametrize("query", ["zzzqqq", "Fargoo", "starwars 1977"])
def test_find_item_missing_always_lists_the_closest_titles(query):
  with pytest.raises(ValueError, match=f"no item title matches '{query}'") as info:
    recommend.find_item(TITLES, query, max_candidates=3)
  listed = str(info.value).split("; closest: ")[1].rstrip(".").split("; ")
  assert len(listed) == 3 and set(listed) <= {repr(t) for t in TITLES}
  best = max(TITLES, key=lambda t: max(
      difflib.SequenceMatcher(None, form, query.lower()).ratio()
      for form in (t.lower(), t.lower().rsplit(" (", 1)[0])))
  assert listed[0] == repr(best)


def _planted_split(seed=0, num_users=300, num_items=200, dim=6, per_user=40, test_per_user=6):
  """Users like the items nearest their planted vector; a few likes per user are held out."""
  rng = np.random.default_rng(seed)
  users = rng.normal(size=(num_users, dim))
  items = rng.normal(size=(num_items, dim))
  noisy = users @ items.T + rng.gumbel(size=(num_users, num_items))
  liked = np.argsort(-noisy, axis=1)[:, :per_user]
  test = np.zeros((num_users, num_items), bool)
  train = np.zeros((num_users, num_items), bool)
  for u in range(num_users):
    held = rng.choice(per_user, test_per_user, replace=False)
    test[u, liked[u, held]] = True
    train[u, np.delete(liked[u], held)] = True
  return train, test


def _train_triplet(train, dim=8, epochs=100, seed=0, margin=0.5):
  """A small full-batch triplet model (uniform negatives among non-train items)."""
  rows, cols = np.nonzero(train)
  not_seen_first = np.argsort(train, axis=1, kind="stable")  # each row: its non-train items first
  num_candidates = (~train).sum(1)[rows]
  rng = np.random.default_rng(seed)
  draws = (rng.random((epochs, rows.size)) * num_candidates).astype(np.int64)
  negatives = not_seen_first[rows, draws]
  params = {"user": 0.1 * jax.random.normal(jax.random.key(seed), (train.shape[0], dim)),
            "item": 0.1 * jax.random.normal(jax.random.key(seed + 1), (train.shape[1], dim))}
  optimizer = optax.adam(0.05)

  def loss_fn(p, neg):
    return losses.triplet_cosine_loss(p["user"][rows], p["item"][cols], p["item"][neg],
                                      margin).mean()

  def step(carry, neg):
    p, state = carry
    updates, state = optimizer.update(jax.grad(loss_fn)(p, neg), state, p)
    return (optax.apply_updates(p, updates), state), None

  (params, _), _ = jax.jit(lambda p, n: jax.lax.scan(step, (p, optimizer.init(p)), n))(
      params, jnp.asarray(negatives))
  return params


def _user_auc(user_vec, item_table, train_row, test_row):
  scores = _cosine64(user_vec[None], item_table)[0]
  candidates = ~train_row
  return roc_auc_score(test_row[candidates], scores[candidates])


@pytest.fixture(scope="module")
def planted_model():
  train, test = _planted_split()
  return train, test, _train_triplet(train)


def test_fold_in_recovers_trained_users_auc(planted_model):
  train, test, params = planted_model
  users = np.arange(0, 300, 20)  # 15 users
  trained, folded = [], []
  for u in users:
    trained.append(_user_auc(params["user"][u], params["item"], train[u], test[u]))
    vec = recommend.fold_in(params, np.flatnonzero(train[u]), jax.random.key(int(u)))
    assert vec.shape == (8,) and vec.dtype == jnp.float32
    folded.append(_user_auc(vec, params["item"], train[u], test[u]))
  assert np.mean(trained) > 0.8  # the model learned something worth recovering
  assert abs(np.mean(folded) - np.mean(trained)) < 0.02, (np.mean(folded), np.mean(trained))


def test_fold_in_is_deterministic_and_usable_by_top_k(planted_model):
  train, _, params = planted_model
  liked = np.flatnonzero(train[3])
  a = recommend.fold_in(params, liked, jax.random.key(7), steps=30)
  b = recommend.fold_in(params, list(liked[::-1]), jax.random.key(7), steps=30)
  c = recommend.fold_in(params, liked, jax.random.key(8), steps=30)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  items, _ = recommend.top_k(params, np.asarray(a)[None], k=10)
  assert items.shape == (1, 10)
  items, _ = recommend.top_k_for_vectors(params, a, k=10, exclude=liked)
  assert not set(items.tolist()) & set(liked.tolist())


def test_fold_in_training_lowers_the_loss(planted_model):
  train, _, params = planted_model
  liked = np.flatnonzero(train[5])
  rng = np.random.default_rng(0)
  negatives = rng.choice(np.flatnonzero(~train[5]), size=(liked.size, 64))

  def loss(vec):
    u = jnp.broadcast_to(vec, (negatives.size, vec.shape[0]))
    return float(losses.triplet_cosine_loss(u, params["item"][np.repeat(liked, 64)],
                                            params["item"][negatives.ravel()], 0.5).mean())

  start = recommend.fold_in(params, liked, jax.random.key(0), steps=0)
  folded = recommend.fold_in(params, liked, jax.random.key(0), steps=200)
  # The mean of the liked items is already a good start; the steps must still improve on it and
  # reach the loss of the user vector that was trained jointly with the items.
  assert loss(folded) < loss(start) - 0.002, (loss(folded), loss(start))
  assert loss(folded) < loss(params["user"][5]) + 0.005, (loss(folded), loss(params["user"][5]))


@pytest.mark.parametrize("liked,message", [([], "at least one liked"), ([0, 200], "200"),
                                           (list(range(200)), "not liked")])
def test_fold_in_rejects_bad_input(planted_model, liked, message):
  with pytest.raises(ValueError, match=message):
    recommend.fold_in(planted_model[2], liked, jax.random.key(0))


def test_user_index_finds_original_ids_and_names_what_exists():
  user_ids = np.array([4, 9, 17, 30])
  assert recommend.user_index(user_ids, 17) == 2
  with pytest.raises(ValueError, match=r"unknown user id 5: the dataset keeps 4 users \(ids 4..30"):
    recommend.user_index(user_ids, 5)


@pytest.mark.parametrize("text,expected", [
    ("Toy Story,Fargo", ["Toy Story", "Fargo"]),
    ("Usual Suspects, The (1995),Fargo", ["Usual Suspects, The (1995)", "Fargo"]),
    ("Usual Suspects, The, fargo ", ["Usual Suspects, The", "fargo"]),
    ("Crumb (1994); Fargo, the movie", ["Crumb (1994)", "Fargo, the movie"]),
    ("a|b", ["a", "b"]), (" , ", [])])
def test_split_titles(text, expected):
  assert recommend.split_titles(text) == expected


def test_item_rows_drops_padding_and_marks_test_items():
  rows = recommend.item_rows(TITLES, [("Comedy",), ("Crime", "Drama")] + [()] * 7,
                             np.arange(100, 109), np.array([1, 0, -1]),
                             np.array([0.9, 0.5, -np.inf]),
                             marked=np.arange(9) == 1)
  assert rows == [
      {"rank": 1, "item_id": 101, "title": "Fargo (1996)", "genres": "Crime|Drama",
       "score": pytest.approx(0.9), "in_test": True},
      {"rank": 2, "item_id": 100, "title": "Toy Story (1995)", "genres": "Comedy",
       "score": pytest.approx(0.5), "in_test": False}]


def test_top_k_scores_are_the_models_cosine_scores():
  params = model.init_params(jax.random.key(4), 9, 30, 5)
  items, scores = recommend.top_k(params, np.arange(9), k=30)
  full = np.asarray(model.cosine_scores(params, np.arange(9)))
  np.testing.assert_allclose(scores, np.take_along_axis(full, items, axis=1), atol=1e-6)


def _dot_precisions(jaxpr) -> list:
  """The `precision` of every dot_general in a (closed) jaxpr, sub-jaxprs included."""
  found = []
  for eqn in jaxpr.jaxpr.eqns if hasattr(jaxpr, "jaxpr") else jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn.params["precision"])
    for value in eqn.params.values():
      if hasattr(value, "eqns") or hasattr(value, "jaxpr"):
        found += _dot_precisions(value)
  return found


def test_evaluation_and_recommendations_score_with_one_precision():
  params = _params_with_ties()
  users = jnp.arange(3, dtype=jnp.int32)
  unit = losses.normalize(params["item"])
  highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
  paths = {
      "score_fn": jax.make_jaxpr(model.score_fn(params))(users),
      "cosine_scores": jax.make_jaxpr(model.cosine_scores)(params, users),
      "top_k": jax.make_jaxpr(retrieval._masked_top_k, static_argnums=3)(
          params["user"][:3], unit, jnp.zeros((3, 80), bool), 5),
  }
  for name, jaxpr in paths.items():
    precisions = _dot_precisions(jaxpr)
    assert precisions and all(p == highest for p in precisions), (name, precisions)


@pytest.mark.parametrize("k", [5, 20])
def test_top_k_lists_what_evaluation_ranks(k):
  from tripjax import metrics  # pylint: disable=g-import-not-at-top
  params = _params_with_ties()  # exact ties between items
  rng = np.random.default_rng(2)
  dense = _random_csr(rng, (13, 80), 0.3).toarray()
  dense[4] = np.arange(80) >= 10  # user 4 has 10 unseen items: padding at k=20
  train = sp.csr_matrix(dense)
  test = sp.csr_matrix(_random_csr(rng, (13, 80), 0.2).toarray() & ~dense)
  evaluated = metrics.evaluate(model.score_fn(params), train, test, ks=(k,), block_size=4)
  items, _ = recommend.top_k(params, np.arange(13), k=k, exclude=train, batch_size=4)
  np.testing.assert_array_equal(items, evaluated.top_items)
  assert (items[4] == -1).sum() == max(k - 10, 0)


@pytest.mark.parametrize("batch_size", [4, 1024])
def test_top_k_with_the_item_offset_lists_what_evaluation_ranks(batch_size):
  from tripjax import metrics  # pylint: disable=g-import-not-at-top
  params = _params_with_ties()
  rng = np.random.default_rng(3)
  train = _random_csr(rng, (13, 80), 0.3)
  test = sp.csr_matrix(_random_csr(rng, (13, 80), 0.2).toarray() & ~train.toarray())
  offset = model.popularity_offset(train, 0.5)
  evaluated = metrics.evaluate(model.score_fn(params, offset), train, test, ks=(10,),
                               block_size=4)
  items, scores = recommend.top_k(params, np.arange(13), k=10, exclude=train,
                                  batch_size=batch_size, item_offset=offset)
  np.testing.assert_array_equal(items, evaluated.top_items)
  plain, _ = recommend.top_k(params, np.arange(13), k=10, exclude=train, batch_size=batch_size)
  assert not np.array_equal(items, plain)  # the offset changes the lists
  full = np.asarray(model.score_fn(params, offset)(np.arange(13)))
  np.testing.assert_allclose(scores, np.take_along_axis(full, items, axis=1), atol=1e-6)
  # Raw vectors (e.g. fold-in users) rank by the same rule.
  vec_items, vec_scores = recommend.top_k_for_vectors(
      params, params["user"], k=10, exclude=train, batch_size=batch_size, item_offset=offset)
  np.testing.assert_array_equal(vec_items, items)
  np.testing.assert_allclose(vec_scores, scores, atol=1e-6)
  one_items, _ = recommend.top_k_for_vectors(params, params["user"][2], k=10,
                                             exclude=train[2].indices, item_offset=offset)
  np.testing.assert_array_equal(one_items, items[2])


def test_top_k_compiles_once_for_all_blocks_with_an_offset():
  params = _params_with_ties()
  offset = np.linspace(-1, 1, 80).astype(np.float32)
  cache_size = retrieval._masked_top_k._cache_size  # pylint: disable=protected-access
  before = cache_size()
  recommend.top_k(params, np.arange(13), k=11, batch_size=4, item_offset=offset)  # 4 blocks
  assert cache_size() == before + 1
  recommend.top_k(params, np.arange(13), k=11, batch_size=4, item_offset=offset[::-1].copy())
  assert cache_size() == before + 1  # another offset of the same shape: no new compile


def test_top_k_rejects_a_bad_item_offset():
  params = _params_with_ties()
  with pytest.raises(ValueError, match=r"item_offset must be float32\[80\]"):
    recommend.top_k(params, np.arange(3), k=5, item_offset=np.zeros(79, np.float32))
  with pytest.raises(ValueError, match="item_offset holds NaN"):
    recommend.top_k(params, np.arange(3), k=5, item_offset=np.full(80, np.nan, np.float32))


def test_similar_items_ignores_popularity():
  """similar_items is item-item cosine: it has no offset to apply (documented)."""
  params = _params_with_ties()
  items, scores = recommend.similar_items(params, 5, k=6)
  unit = _cosine64(params["item"], params["item"])[5]
  np.testing.assert_allclose(scores, unit[items], atol=1e-6)


def test_only_item_features_place_a_cold_item():
  cold = np.array([1, 3])
  place = functools.partial(recommend.check_placeable, titles=TITLES, flag="--liked")
  place(0, cold_items=cold, has_item_features=False, takes_item_features=True)
  place(3, cold_items=None, has_item_features=False, takes_item_features=True)
  place(3, cold_items=cold, has_item_features=True, takes_item_features=True)
  with pytest.raises(errors.InvalidInput, match=rf"^--liked: '{re.escape(TITLES[3])}' is one "
                     "of the run's cold items .*, or train with --item_features=genres.$"):
    place(3, cold_items=cold, has_item_features=False, takes_item_features=True)
  with pytest.raises(errors.InvalidInput, match="ask about an item it trained on.$"):
    place(3, cold_items=cold, has_item_features=False, takes_item_features=False)
