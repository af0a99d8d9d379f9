"""Models behind one interface (`base.Model`): `get(name)` and `NAMES`.

A new model is one module defining a `base.Model` and one line in `_MODELS`.
"""

from tripjax import errors
from tripjax.models import ease
from tripjax.models import ials
from tripjax.models import itemknn
from tripjax.models import pagerank
from tripjax.models import popularity
from tripjax.models import rp3beta
from tripjax.models import triplet
from tripjax.models.base import Model

_MODELS = {m.name: m for m in (triplet.MODEL, popularity.MODEL, ease.MODEL, ials.MODEL,
                               rp3beta.MODEL, itemknn.MODEL, pagerank.MODEL)}
NAMES = tuple(_MODELS)


def get(name: str) -> Model:
  """The registered model called `name`; InvalidInput listing the names otherwise."""
  try:
    return _MODELS[name]
  except KeyError:
    raise errors.InvalidInput(f"unknown model {name!r}; the models are: "
                              f"{', '.join(NAMES)}.") from None
