"""Data: MovieLens loaders, synthetic data, the lab's implicit-feedback pipeline and splits."""

from tripjax.data.feedback import ImplicitDataset, implicit_feedback
from tripjax.data.movielens import DATASETS, load_movielens
