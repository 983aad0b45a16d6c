"""clustering_accuracy: the Hungarian matching equals a brute force over every injective map."""

import itertools

import numpy as np
import pytest

from mmrep.metrics.clustering import clustering_accuracy


def brute_force_accuracy(labels, clusters):
    """max over injective maps (clusters -> classes) of the fraction matched, by enumeration."""
    classes, cluster_ids = np.unique(labels), np.unique(clusters)
    best = 0
    if len(cluster_ids) <= len(classes):
        for image in itertools.permutations(classes, len(cluster_ids)):
            mapping = dict(zip(cluster_ids, image, strict=True))
            best = max(best, sum(mapping[c] == y for c, y in zip(clusters, labels, strict=True)))
    else:
        for preimage in itertools.permutations(cluster_ids, len(classes)):
            mapping = dict(zip(preimage, classes, strict=True))
            best = max(
                best, sum(mapping.get(c) == y for c, y in zip(clusters, labels, strict=True))
            )
    return best / len(labels)


@pytest.mark.parametrize(
    "n_classes, n_clusters, seed",
    [(3, 3, 0), (4, 4, 1), (5, 5, 2), (3, 5, 3), (5, 3, 4), (2, 6, 5), (6, 2, 6), (1, 4, 7)],
)
def test_matches_brute_force(n_classes, n_clusters, seed):
    rng = np.random.default_rng(seed)
    n = 60
    labels = rng.integers(0, n_classes, n)
    # Clusters correlated with the labels (a noisy relabelling), so the best map is not trivial.
    relabel = rng.permutation(max(n_classes, n_clusters))[:n_classes] % n_clusters
    clusters = np.where(rng.random(n) < 0.6, relabel[labels], rng.integers(0, n_clusters, n))
    expected = brute_force_accuracy(labels, clusters)
    assert clustering_accuracy(labels, clusters) == pytest.approx(expected, abs=1e-12)


def test_permuted_ids_and_non_contiguous_ids():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 4, 50)
    clusters = np.array([7, 30, -2, 11])[labels]  # a perfect clustering under other names
    assert clustering_accuracy(labels, clusters) == 1.0
    assert clustering_accuracy(labels * 10 + 3, clusters) == 1.0
    clusters[:5] = 99  # five examples in a new, unmatched cluster
    assert clustering_accuracy(labels, clusters) == pytest.approx(45 / 50)


def test_one_cluster_scores_the_largest_class():
    labels = np.array([0, 1, 1, 2, 2, 2])
    assert clustering_accuracy(labels, np.zeros(6, int)) == pytest.approx(3 / 6)
    assert clustering_accuracy(labels.astype("float32"), np.zeros(6)) == pytest.approx(3 / 6)


@pytest.mark.parametrize(
    "labels, clusters, message",
    [
        ([[0, 1]], [0, 1], "`labels` to be a 1-D"),
        ([0, 1], [0, 1, 1], "same length"),
        ([], [], "at least one example"),
        ([0, 1.5], [0, 1], "integer ids"),
        ([0, 1], ["a", "b"], "`clusters` to hold integer ids"),
        ([0, np.nan], [0, 1], "integer ids"),
    ],
)
def test_bad_input(labels, clusters, message):
    with pytest.raises(ValueError, match=message):
        clustering_accuracy(labels, clusters)
