"""Exact rank-based evaluation: per-user ROC AUC and top-k metrics, in blocks of users."""

from tripjax.metrics.auc import roc_auc
from tripjax.metrics.auc import sortable_keys
from tripjax.metrics.evaluation import EvalResult
from tripjax.metrics.evaluation import evaluate
from tripjax.metrics.evaluation import metric_names
from tripjax.metrics.evaluation import ScoreFn
from tripjax.metrics.ranking import top_k_metrics
from tripjax.metrics.ranking import top_k_unseen
