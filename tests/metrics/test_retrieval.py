"""Retrieval metrics against ranks computed by sorting, and hand-built cases with known ranks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.metrics import (
    MedianRank,
    RecallAtK,
    median_rank,
    recall_at_k,
    retrieval_ranks,
    retrieval_scores,
)
from tests.harness import two_device_strategy

RNG = np.random.default_rng(21)


def argsort_ranks(similarity, positives, ties):
    """Sort each row (best first); ties put wrong items first (pessimistic) or last."""
    ranks = []
    for scores, correct in zip(similarity, positives, strict=True):
        tie_break = correct if ties == "pessimistic" else ~correct
        order = np.lexsort((tie_break, -scores))  # last key is the primary one
        ranks.append(1 + np.flatnonzero(correct[order])[0])
    return np.array(ranks)


def cosine(a, b):
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return unit(a) @ unit(b).T


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("rounded", [False, True], ids=["distinct", "with_ties"])
def test_ranks_match_argsort_with_diagonal_positives(ties, rounded):
    similarity = RNG.uniform(-1, 1, (30, 40))
    if rounded:  # many exact ties, also with the correct item
        similarity = np.round(similarity, 1)
    expected = argsort_ranks(similarity, np.eye(30, 40, dtype=bool), ties)
    np.testing.assert_array_equal(retrieval_ranks(similarity, ties=ties), expected)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_ranks_with_several_correct_items_and_index_positives(ties):
    similarity = np.round(RNG.uniform(0, 1, (12, 20)), 1)
    mask = RNG.uniform(size=(12, 20)) < 0.2
    mask[np.arange(12), RNG.integers(0, 20, 12)] = True
    expected = argsort_ranks(similarity, mask, ties)
    np.testing.assert_array_equal(retrieval_ranks(similarity, mask, ties), expected)
    index = RNG.integers(0, 20, 12)
    one_hot = np.eye(20, dtype=bool)[index]
    np.testing.assert_array_equal(
        retrieval_ranks(similarity, index, ties), argsort_ranks(similarity, one_hot, ties)
    )


def test_hand_built_ranks_recall_and_median():
    similarity = np.array(
        [
            [0.9, 0.1, 0.2, 0.0],  # correct item best: rank 1
            [0.5, 0.4, 0.6, 0.0],  # two items above: rank 3
            [0.3, 0.3, 0.3, 0.3],  # all tied: 4 (pessimistic) or 1 (optimistic)
            [0.6, 0.2, 0.1, 0.6],  # tied with one item: 2 (pessimistic) or 1
        ]
    )
    np.testing.assert_array_equal(retrieval_ranks(similarity), [1, 3, 4, 2])
    np.testing.assert_array_equal(retrieval_ranks(similarity, ties="optimistic"), [1, 3, 1, 1])
    ranks = retrieval_ranks(similarity)
    assert recall_at_k(ranks, (1, 3, 4)) == {1: 0.25, 3: 0.75, 4: 1.0}
    assert median_rank(ranks) == 2.5
    assert median_rank(np.array([1, 2, 3, 10])) == 2.5
    assert median_rank(np.array([7, 1, 4])) == 4.0


def test_constant_scores_get_the_worst_rank():
    ranks = retrieval_ranks(np.zeros((5, 5)))
    np.testing.assert_array_equal(ranks, 5)
    assert recall_at_k(ranks, 1) == {1: 0.0}


def test_retrieval_scores_on_embeddings():
    query = RNG.standard_normal((50, 6))
    gallery = query + 0.8 * RNG.standard_normal((50, 6))
    ranks = argsort_ranks(cosine(query, gallery), np.eye(50, dtype=bool), "pessimistic")
    scores = retrieval_scores(query, gallery, ks=(1, 5))
    assert scores == {
        "recall@1": np.mean(ranks <= 1),
        "recall@5": np.mean(ranks <= 5),
        "median_rank": np.median(ranks),
    }
    assert 0 < scores["recall@1"] < 1  # a case where ranking matters


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: retrieval_ranks(np.array([[np.nan, 1.0]])), "finite"),
        (lambda: retrieval_ranks(np.ones(3)), r"\[queries, gallery\]"),
        (lambda: retrieval_ranks(np.ones((3, 2))), "queries <= gallery"),
        (lambda: retrieval_ranks(np.ones((2, 3)), np.array([0, 3])), r"index the gallery"),
        (lambda: retrieval_ranks(np.ones((2, 3)), np.zeros((2, 3), bool)), r"Queries \[0, 1\]"),
        (lambda: retrieval_ranks(np.ones((2, 3)), np.zeros((3, 3), bool)), "positives"),
        (lambda: retrieval_ranks(np.ones((2, 3)), ties="random"), "ties"),
        (lambda: recall_at_k(np.array([1, 2]), (0,)), "ks"),
        (lambda: median_rank(np.array([])), "non-empty"),
        (lambda: retrieval_scores(np.ones((2, 3)), np.ones((2, 4))), "same D"),
        (lambda: RecallAtK("image", "image"), "two different"),
        (lambda: MedianRank("image", "text", max_rank=0), "max_rank"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# === Keras metrics: within-batch ranks accumulated over batches ===


def _batches(count=3, batch=10, seed=0):
    """Batches of paired embeddings where missing rows are zeros, as CoordinatedEmbedding gives."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = rng.standard_normal((batch, 4)).astype("float32")
        text = (image + rng.standard_normal((batch, 4))).astype("float32")
        image[rng.uniform(size=batch) < 0.2] = 0.0
        text[rng.uniform(size=batch) < 0.2] = 0.0
        out.append({"image": image, "text": text})
    return out


def _reference_ranks(batches, query, gallery, ties="pessimistic"):
    ranks = []
    for b in batches:
        valid = np.any(b[query] != 0, axis=1) & np.any(b[gallery] != 0, axis=1)
        similarity = cosine(b[query][valid].astype("float64"), b[gallery][valid])
        ranks.append(argsort_ranks(similarity, np.eye(valid.sum(), dtype=bool), ties))
    return np.concatenate(ranks)


@pytest.mark.parametrize(("query", "gallery"), [("image", "text"), ("text", "image")])
def test_keras_metrics_match_the_numpy_reference(query, gallery):
    recall = RecallAtK(query, gallery, ks=(1, 3))
    median = MedianRank(query, gallery)
    batches = _batches()
    for b in batches:
        recall.update_state(None, b)
        median.update_state(None, b)
    ranks = _reference_ranks(batches, query, gallery)
    result = {k: float(v) for k, v in recall.result().items()}
    expected = {f"{query}_to_{gallery}_recall@{k}": np.mean(ranks <= k) for k in (1, 3)}
    assert result == pytest.approx(expected, abs=1e-7)
    assert 0 < result[f"{query}_to_{gallery}_recall@1"] < 1
    assert float(median.result()) == np.median(ranks)
    recall.reset_state()
    assert all(float(v) == 0.0 for v in recall.result().values())


@pytest.mark.parametrize(("ties", "expected"), [("pessimistic", 4.0), ("optimistic", 1.0)])
def test_keras_metrics_ties_and_explicit_presence(ties, expected):
    # Every query is the same vector: all gallery items tie. Row 4 is marked missing.
    batch = {"image": np.ones((5, 3), "float32"), "text": np.ones((5, 3), "float32")}
    presence = np.array([[1, 1], [1, 1], [1, 1], [1, 1], [1, 0]], "float32")
    median = MedianRank("image", "text", ties=ties)
    median.update_state(presence, batch)
    assert float(median.result()) == expected


def test_median_rank_overflow_bin_is_a_lower_bound():
    median = MedianRank("image", "text", max_rank=2, ties="pessimistic")
    median.update_state(None, {"image": np.ones((6, 2), "float32"), "text": np.ones((6, 2))})
    assert float(median.result()) == 3.0  # every rank is 6 > max_rank


def test_metric_config_round_trip():
    metric = RecallAtK("text", "image", ks=(2, 4), ties="optimistic", name="t2i")
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(revived) is RecallAtK and revived.get_config() == metric.get_config()


@pytest.mark.parametrize("metric_cls", [RecallAtK, MedianRank])
def test_under_two_replicas_the_gallery_is_the_global_batch(metric_cls):
    strategy = two_device_strategy()
    batch = _batches(count=1, batch=12, seed=4)[0]
    single = metric_cls("image", "text")
    single.update_state(None, batch)
    with strategy.scope():
        mirrored = metric_cls("image", "text")

    def shard(context):
        rows = slice(6 * context.replica_id_in_sync_group, 6 * context.replica_id_in_sync_group + 6)
        return {m: x[rows] for m, x in batch.items()}

    @tf.function
    def update():
        values = strategy.experimental_distribute_values_from_function(shard)
        strategy.run(lambda v: mirrored.update_state(None, v), args=(values,))

    update()
    np.testing.assert_allclose(
        keras.tree.flatten(mirrored.result()), keras.tree.flatten(single.result()), rtol=1e-6
    )
