"""Evaluation metrics: cross-modal retrieval (recall@k, median rank).

Numpy functions (`retrieval_ranks`, `recall_at_k`, `median_rank`, `retrieval_scores`)
evaluate a whole query-by-gallery set; the Keras metrics (`RecallAtK`, `MedianRank`)
monitor within-batch retrieval during training.
"""

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
    "median_rank",
    "recall_at_k",
    "retrieval_ranks",
    "retrieval_scores",
]
