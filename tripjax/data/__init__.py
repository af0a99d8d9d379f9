"""Data: MovieLens loaders, synthetic data, the lab's implicit-feedback pipeline and splits."""

from tripjax.data.download import ChecksumError, DownloadError, fetch_archive, remove_leftovers
from tripjax.data.feedback import STEP_NAMES, ImplicitDataset, implicit_feedback
from tripjax.data.movielens import (DATASETS, MovieLensSpec, ReleaseNotFound, load_movielens,
                                    read_items, read_ratings, read_release)
from tripjax.data.registry import DATASET_NAMES, load_dataset, prepare
from tripjax.data.split import leave_k_out, leave_last_k_out
from tripjax.data.stats import describe, steps_table
from tripjax.data.synthetic import (GENRE_NAMES, PRESETS, SyntheticConfig, make_synthetic,
                                    planted_factors)
