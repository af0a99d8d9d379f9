"""Asks a trained run for recommendations.

  python -m experiments.recommend --workdir=W --user=196 [--k=20]          # a known user
  python -m experiments.recommend --workdir=W --similar_to="Fargo" [--k=10]
  python -m experiments.recommend --workdir=W --liked="Toy Story;Fargo"   # a new user (fold-in)
  add --format=json for machine-readable output.

Any model of `tripjax.models` (the run's `--model`). `--user` and `--liked` rank as the run's
evaluation does (the model's scores plus the run's `--popularity_penalty` offset);
`--similar_to` is item-item cosine of the model's item vectors, and `--liked` folds the new user
in; models without item vectors or fold-in refuse them in one line.
Titles match case-insensitively, with or without the year. `--liked` separates titles by ';'
(or ',' when there is no ';'). Errors (unknown user or title, bad k, a workdir without a
finished checkpoint) print one line saying what was asked and what exists, and exit 1.
"""

import json

from absl import flags
import jax
import numpy as np
import pandas as pd

from experiments import run_cli
from tripjax import errors
from tripjax import model
from tripjax import models
from tripjax import recommend
from tripjax import train
from tripjax.config import SEED_LIMIT

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's folder.", required=True)
_USER = flags.DEFINE_integer("user", None, "Original user id to recommend for.")
_SIMILAR_TO = flags.DEFINE_string("similar_to", None, "Title to find similar items for.")
_LIKED = flags.DEFINE_string("liked", None, "Titles a new user liked (';'- or ','-separated).")
_K = flags.DEFINE_integer("k", None, "How many items (default 20, or 10 with --similar_to).")
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "json"], "Output format.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed of the fold-in (--liked).", lower_bound=0,
                             upper_bound=SEED_LIMIT - 1)
_STEPS = flags.DEFINE_integer("fold_in_steps", 200, "Optimisation steps of the fold-in.",
                              lower_bound=1)


def _answer():
  """Returns (query dict, item rows); raises a `tripjax.errors.TripjaxError` on bad input."""
  modes = [name for name, holder in (("--user", _USER), ("--similar_to", _SIMILAR_TO),
                                      ("--liked", _LIKED)) if holder.value is not None]
  if len(modes) != 1:
    raise errors.InvalidInput(f"give exactly one of --user, --similar_to, --liked (got "
                              f"{', '.join(modes) or 'none'}).")
  k = _K.value if _K.value is not None else (10 if _SIMILAR_TO.value is not None else 20)
  run = train.restore_run(_WORKDIR.value)
  ds = run.dataset
  the_model = models.get(run.config.model)
  offset = model.popularity_offset(run.train, run.config.popularity_penalty)

  def placeable(item, flag):
    recommend.check_placeable(item, ds.titles, ds.cold_items, "item_features" in run.params,
                              run.config.model == "triplet", flag)
  if _USER.value is not None:
    row = recommend.user_index(ds.user_ids, _USER.value)
    items, scores = recommend.top_k_scored(the_model.score_fn(run.params, offset),
                                           np.array([row]), k=k, exclude=run.train)
    test_items = np.zeros(ds.num_items, bool)
    test_items[run.test[row].indices] = True
    query = {"user": _USER.value, "k": k, "train_items": int(run.train[row].nnz),
             "test_items": int(run.test[row].nnz)}
    return query, recommend.item_rows(ds.titles, ds.genres, ds.item_ids, items[0], scores[0],
                                      test_items)
  if _SIMILAR_TO.value is not None:
    item = recommend.find_item(ds.titles, _SIMILAR_TO.value)
    items, scores = the_model.similar_items(run.params, item, k=k)  # the model's refusals first
    placeable(item, "--similar_to")
    query = {"similar_to": str(ds.titles[item]), "k": k}
    return query, recommend.item_rows(ds.titles, ds.genres, ds.item_ids, items, scores)
  liked = [recommend.find_item(ds.titles, t) for t in recommend.split_titles(_LIKED.value)]
  if not liked:
    raise errors.InvalidInput(f"--liked={_LIKED.value!r} names no title.")
  vec = the_model.fold_in_user(run.params, liked, jax.random.key(_SEED.value),
                               steps=_STEPS.value, margin=run.config.margin)
  for item in liked:
    placeable(item, "--liked")
  item_table = {"item": the_model.item_table(run.params, "--liked")}
  items, scores = recommend.top_k_for_vectors(item_table, vec, k=k, exclude=np.unique(liked),
                                              item_offset=offset)
  query = {"liked": [str(ds.titles[i]) for i in liked], "k": k}
  return query, recommend.item_rows(ds.titles, ds.genres, ds.item_ids, items, scores)


def main(argv):
  del argv
  run_cli.quiet_checkpoint_logs()
  query, rows = _answer()
  if _FORMAT.value == "json":
    print(json.dumps({"query": query, "items": rows}, indent=2))
    return
  print(", ".join(f"{key}: {value}" for key, value in query.items()))
  with pd.option_context("display.width", 200, "display.max_colwidth", 60):
    print(pd.DataFrame(rows).to_string(index=False, float_format="{:.4f}".format))


if __name__ == "__main__":
  run_cli.run(main)
