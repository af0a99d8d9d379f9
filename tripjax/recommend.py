"""Using a trained model: top-k recommendations, similar items, title look-up, fold-in of new users.

The names live in `tripjax.retrieval` (top-k and similar items, on the device),
`tripjax.catalogue` (titles, user ids and printable rows; no JAX) and `tripjax.foldin`.
"""

from tripjax.catalogue import check_placeable
from tripjax.catalogue import find_item
from tripjax.catalogue import item_rows
from tripjax.catalogue import split_titles
from tripjax.catalogue import user_index
from tripjax.foldin import fold_in
from tripjax.retrieval import check_k
from tripjax.retrieval import similar_items
from tripjax.retrieval import top_k
from tripjax.retrieval import top_k_for_vectors
from tripjax.retrieval import top_k_scored
