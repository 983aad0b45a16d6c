"""Evaluation metrics: cross-modal retrieval (recall@k, median rank) and clustering accuracy.

Numpy functions (`retrieval_ranks`, `recall_at_k`, `median_rank`, `retrieval_scores`)
evaluate a whole query-by-gallery set; the Keras metrics (`RecallAtK`, `MedianRank`)
monitor within-batch retrieval during training. `clustering_accuracy` scores a clustering
against labels under the best one-to-one matching (Hungarian algorithm);
`linear_probe_accuracy` measures a frozen representation by a logistic-regression probe.
"""

from mmrep.metrics.clustering import clustering_accuracy
from mmrep.metrics.linear_probe import linear_probe_accuracy
from mmrep.metrics.retrieval import (
    MedianRank,
    RecallAtK,
    median_rank,
    recall_at_k,
    retrieval_ranks,
    retrieval_scores,
)

__all__ = [
    "MedianRank",
    "RecallAtK",
    "clustering_accuracy",
    "linear_probe_accuracy",
    "median_rank",
    "recall_at_k",
    "retrieval_ranks",
    "retrieval_scores",
]
