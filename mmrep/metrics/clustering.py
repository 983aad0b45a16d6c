"""Clustering accuracy: the best one-to-one matching of clusters to classes (Hungarian method).

The standard score of deep clustering papers (VaDE, DEC): the fraction of examples whose
cluster is matched to their class, under the cluster-to-class assignment that maximises it.
The assignment is found by the Hungarian method on the cluster-by-class contingency table.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment


def _as_labels(values, name):
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"Expected `{name}` to be a 1-D array of integer ids. Received shape: {array.shape}"
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(
                f"Expected `{name}` to hold integer ids. Received non-integer values such as "
                f"{array[~np.isfinite(array) | (array != np.round(array))][:3].tolist()}"
            )
    elif array.dtype.kind not in "iub":
        raise ValueError(f"Expected `{name}` to hold integer ids. Received dtype: {array.dtype}")
    return array


def clustering_accuracy(labels, clusters):
    """The accuracy of cluster assignments under the best one-to-one cluster-to-class map.

    `max over injective maps m of mean(labels == m(clusters))`, found with the Hungarian
    method (`scipy.optimize.linear_sum_assignment`) on the contingency table. Ids need not
    be contiguous, and the numbers of clusters and classes may differ: with more clusters
    than classes, the examples of unmatched clusters count as errors; with fewer, some
    classes are never predicted.

    Args:
        labels: array-like `[N]` of integer class ids (the ground truth).
        clusters: array-like `[N]` of integer cluster ids (e.g. `argmax` responsibilities).

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: if either argument is not a 1-D array of integer ids, if their lengths
            differ, or if they are empty.

    Example:

    >>> clustering_accuracy([0, 0, 1, 1, 2], [5, 5, 3, 3, 3])
    0.8

    Reference:
        Xie, Girshick & Farhadi, "Unsupervised Deep Embedding for Clustering Analysis",
        ICML 2016 (the metric); Kuhn, "The Hungarian method for the assignment problem", 1955.
    """
    labels = _as_labels(labels, "labels")
    clusters = _as_labels(clusters, "clusters")
    if labels.shape != clusters.shape:
        raise ValueError(
            "Expected `labels` and `clusters` of the same length. "
            f"Received: {labels.shape[0]} labels and {clusters.shape[0]} clusters"
        )
    if labels.size == 0:
        raise ValueError("Expected at least one example. Received empty `labels` and `clusters`")
    _, class_index = np.unique(labels, return_inverse=True)
    _, cluster_index = np.unique(clusters, return_inverse=True)
    counts = np.zeros((cluster_index.max() + 1, class_index.max() + 1), dtype=np.int64)
    np.add.at(counts, (cluster_index, class_index), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / labels.size)
