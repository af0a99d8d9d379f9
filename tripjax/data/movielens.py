"""MovieLens loaders (placeholder; the loaders land in a later commit)."""

DATASETS = {}


def load_movielens(name, data_dir=None, download=True):
  """Returns (ratings, items) for a MovieLens release. Not yet implemented."""
  raise NotImplementedError
