"""tripjax: implicit-feedback recommenders in JAX.

The public API, by module (docs/DESIGN.md has the map):
  data       load_movielens, load_dataset, implicit_feedback, leave_k_out, prepare, load_split
  config     TrainConfig
  train      train_and_evaluate, restore_run          loop    fit
  model      init_params, score_fn                    metrics evaluate, roc_auc
  models     get, NAMES, Model (the model protocol)
  recommend  top_k, similar_items, find_item, fold_in baselines popularity_scores
  errors     TripjaxError and its subclasses
"""

from tripjax import baselines
from tripjax import data
from tripjax import errors
from tripjax import metrics
from tripjax import model
from tripjax import models
from tripjax import recommend
from tripjax.config import TrainConfig
from tripjax.errors import TripjaxError
from tripjax.loop import fit
from tripjax.metrics import evaluate, roc_auc
from tripjax.recommend import find_item, fold_in, similar_items, top_k
from tripjax.train import restore_run, train_and_evaluate

__version__ = "0.1.0"
