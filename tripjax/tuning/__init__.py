"""Hyperparameter search for the triplet model on a validation split carved out of train.

- `validation`: the validation split, one fit and its score, the popularity-penalty scan.
- `grid_search`: the search space, the coarse-to-fine grid search, ablation, the best trial.
- `run`: `tune`, the whole run behind `experiments/tune.py`, and its outputs.
"""

from tripjax.tuning.grid_search import (DEFAULT_SPACE, DEFAULT_SPACES, SEARCHABLE, Space,
                                        ablation, best_trial, check_space, initial_points,
                                        neighbours, parse_space, point_values, search)
from tripjax.tuning.run import (check_seeds, check_select_metric, flagfile_text, previous_trials,
                                summary, tune)
from tripjax.tuning.validation import (check_penalties, fit, penalty_scan, popularity_offset,
                                       tuning_split, validate, validate_mean)
