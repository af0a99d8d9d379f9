"""Triplet sampling: epochs of (user, positive, exact negatives) batches."""

from tripjax.sampling.epoch import Batches
from tripjax.sampling.epoch import check_epoch_memory
from tripjax.sampling.epoch import default_shuffle_on
from tripjax.sampling.epoch import DRAW_ORDERS
from tripjax.sampling.epoch import EpochSampler
from tripjax.sampling.epoch import is_weighted
from tripjax.sampling.integers import multiply_high
from tripjax.sampling.integers import multiply_high48
from tripjax.sampling.integers import uniform_below
from tripjax.sampling.negatives import hardest_negatives
from tripjax.sampling.negatives import missing_items
from tripjax.sampling.negatives import missing_items_from_words
from tripjax.sampling.negatives import negative_weights
from tripjax.sampling.negatives import positives_before
from tripjax.sampling.negatives import warp_negatives
from tripjax.sampling.negatives import weighted_arrays
from tripjax.sampling.negatives import weighted_missing_items
