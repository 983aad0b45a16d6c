"""The main job's metric computations against independent references, and its input helpers."""

import numpy as np
import pytest
import tensorflow as tf

from mmrep.data import with_modality_dropout
from mmrep.data.mmdigits import MODALITIES
from mmrep.job.data import DROP_RATE, with_absent
from mmrep.job.metrics import accuracies, conditions, format_table, retrieval


def reference_recall(query, gallery, labels, k):
    """Recall@k with same-label positives, in float64 numpy, ties counted against."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    hits = []
    for i, row in enumerate(q @ g.T):
        correct = labels == labels[i]
        best = row[correct].max()
        rank = 1 + np.sum((row >= best) & ~correct)
        hits.append(rank <= k)
    return float(np.mean(hits))


def test_retrieval_on_a_hand_made_case():
    labels = np.array([0, 1, 0])
    image = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    embeddings = {"image": image, "text": text, "audio": image, "video": text}
    scores = retrieval(embeddings, labels)
    # image query 0 (digit 0): best is text 0, a 0 -> rank 1. Query 1 (digit 1): its only
    # 1 is text 1 (cos 0.994), behind text 0 (cos 1) -> rank 2. Query 2: text 2 -> rank 1.
    assert scores["image->text"] == {"recall@1": pytest.approx(2 / 3), "recall@5": 1.0}
    # Images 0 and 1 are equal, of digits 0 and 1: text queries 0 and 1 each tie with
    # the wrong one, and ties count against -> rank 2. Text query 2 finds image 2.
    assert scores["text->image"]["recall@1"] == pytest.approx(1 / 3)
    assert len(scores) == 12


def test_retrieval_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 40)
    centres = rng.standard_normal((5, 8))
    embeddings = {
        m: (centres[labels] + rng.standard_normal((40, 8)) * (1.0 + i)).astype("float32")
        for i, m in enumerate(MODALITIES)
    }
    scores = retrieval(embeddings, labels)
    for query in MODALITIES:
        for gallery in MODALITIES:
            if query == gallery:
                continue
            for k in (1, 5):
                expected = reference_recall(
                    embeddings[query].astype(np.float64),
                    embeddings[gallery].astype(np.float64),
                    labels,
                    k,
                )
                got = scores[f"{query}->{gallery}"][f"recall@{k}"]
                assert got == pytest.approx(expected, abs=1e-12), (query, gallery, k)


def test_accuracies_per_condition():
    labels = np.array([0, 1, 2, 3])
    names = conditions()
    assert list(names) == [
        "all",
        *(f"{m} missing" for m in MODALITIES),
        *(f"{m} only" for m in MODALITIES),
    ]
    assert names["audio missing"] == {"image", "text", "video"} and names["text only"] == {"text"}
    outputs = {}
    for i, name in enumerate(names):
        predicted = labels.copy()
        predicted[: i % 5] = 9  # condition i gets (i mod 5) of 4 wrong
        outputs[name] = {"probabilities": np.eye(10)[predicted]}
    table = accuracies(outputs, labels)
    assert table["all_modalities"] == 1.0
    assert table["missing"] == {"image": 0.75, "text": 0.5, "audio": 0.25, "video": 0.0}
    assert table["only"] == {"image": 1.0, "text": 0.75, "audio": 0.5, "video": 0.25}


def test_format_table_shows_the_numbers():
    pairs = {
        f"{a}->{b}": {"recall@1": 0.5, "recall@5": 0.9} for a in MODALITIES for b in MODALITIES
    }
    metrics = {
        "examples": 270,
        "accuracy": {
            "all_modalities": 0.987,
            "missing": dict.fromkeys(MODALITIES, 0.9),
            "only": dict.fromkeys(MODALITIES, 0.6),
        },
        "linear_probe_accuracy": {**dict.fromkeys(MODALITIES, 0.8), "fused": 0.95},
        "retrieval": {"pairs": pairs},
    }
    table = format_table(metrics)
    assert "270 examples" in table and "0.987" in table and "0.950" in table
    assert len(table.splitlines()) == 7


def test_modality_dropout_keeps_one_modality_and_drops_half():
    examples = tf.data.Dataset.from_tensor_slices({"label": np.arange(4000)})
    first = np.stack(
        [e["presence"] for e in with_modality_dropout(examples, MODALITIES, seed=5, rate=DROP_RATE)]
    )
    second = np.stack(
        [e["presence"] for e in with_modality_dropout(examples, MODALITIES, seed=5, rate=DROP_RATE)]
    )
    assert first.shape == (4000, 4) and set(np.unique(first)) == {0.0, 1.0}
    assert first.sum(axis=1).min() == 1, "an example lost every modality"
    # Each modality is kept with probability 1 - p, plus the fallback's share when all
    # four are dropped (p^4 / 4).
    keep = 1 - DROP_RATE + DROP_RATE**4 / 4
    np.testing.assert_allclose(first.mean(axis=0), keep, atol=0.03)
    np.testing.assert_array_equal(first, second)  # reproducible from the seed
    fixed = with_modality_dropout(examples, MODALITIES, seed=5, rerandomize=False)
    once, again = ([e["presence"].numpy() for e in fixed] for _ in range(2))
    np.testing.assert_array_equal(once, again)
    with pytest.raises(ValueError, match="rate"):
        with_modality_dropout(examples, MODALITIES, seed=0, rate=1.0)


def test_with_absent_fills_junk_and_the_mask():
    features = {
        "image": np.full((3, 32, 32, 3), 7, np.uint8),
        "text": np.array(["a one", "a two", "a three"], dtype=object),
        "audio": np.zeros((3, 16000), np.float32),
        "video": np.full((3, 16, 32, 32, 3), 7, np.uint8),
    }
    feed = with_absent(features, {"text", "video"})
    np.testing.assert_array_equal(feed["presence"], [[0, 1, 0, 1]] * 3)
    assert list(feed["text"]) == [b"a one", b"a two", b"a three"]
    assert not np.array_equal(feed["image"], features["image"])
    assert np.abs(feed["audio"]).max() > 0.5
    np.testing.assert_array_equal(feed["video"], features["video"])
