"""The run's metric computations against independent references, and its input helpers."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from mmrep.data import with_modality_dropout
from mmrep.job import build_run_model, builtin_config
from mmrep.job.metrics import (
    _accuracies,
    _condition_rows,
    conditions,
    format_table,
    retrieval,
    run_condition,
)
from mmrep.job.model import vector_models
from tests.job.tiny import MODALITIES, VOCABULARY, raw_inputs, serve, tiny_config

CLASSES = [str(d) for d in range(10)]
CAPTIONS = {"text": np.array([" ".join(VOCABULARY)], dtype=object)}
DROP_RATE = builtin_config()["train"]["modality_dropout"]


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


def every_row(arrays):
    """`retrieval`'s input when every row has every modality."""
    return {m: (np.arange(len(v)), v) for m, v in arrays.items()}


def test_retrieval_on_a_hand_made_case():
    labels = np.array([0, 1, 0])
    image = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    embeddings = every_row({"image": image, "text": text, "audio": image, "video": text})
    scores = retrieval(embeddings, labels, MODALITIES, same_row=False)
    # image query 0 (digit 0): best is text 0, a 0 -> rank 1. Query 1 (digit 1): its only
    # 1 is text 1 (cos 0.994), behind text 0 (cos 1) -> rank 2. Query 2: text 2 -> rank 1.
    assert scores["image->text"] == {
        "recall@1": pytest.approx(2 / 3),
        "recall@5": 1.0,
        "queries": 3,
    }
    # Images 0 and 1 are equal, of digits 0 and 1: text queries 0 and 1 each tie with
    # the wrong one, and ties count against -> rank 2. Text query 2 finds image 2.
    assert scores["text->image"]["recall@1"] == pytest.approx(1 / 3)
    assert len(scores) == 12

    # Positives are the query's own row (task "retrieval"): image query 1 scores text 0
    # (cos 1) above its own text 1 -> rank 2; queries 0 and 2 find their own -> rank 1.
    own = retrieval(embeddings, None, MODALITIES, same_row=True)
    assert own["image->text"]["recall@1"] == pytest.approx(2 / 3)
    # Text queries 0 and 1 tie on images 0 and 1 -> both rank 2 (ties against).
    assert own["text->image"]["recall@1"] == pytest.approx(1 / 3)


def test_retrieval_uses_the_rows_that_have_both_modalities():
    labels = np.array([0, 1, 2, 3])
    image = np.eye(4)[[0, 1, 2]]  # rows 0, 1, 2 have an image
    text = np.eye(4)[[1, 2, 3]] + 0.1  # rows 1, 2, 3 have a caption, each near its image
    embeddings = {"image": (np.array([0, 1, 2]), image), "text": (np.array([1, 2, 3]), text)}
    scores = retrieval(embeddings, labels, ["image", "text"], same_row=False)
    # Rows 1 and 2 have both: two queries, each finds its own row first.
    assert scores == {
        "image->text": {"recall@1": 1.0, "recall@5": 1.0, "queries": 2},
        "text->image": {"recall@1": 1.0, "recall@5": 1.0, "queries": 2},
    }
    # A pair with fewer than two rows in common is left out.
    lonely = {"image": (np.array([0, 1]), image[:2]), "text": (np.array([1, 3]), text[:2])}
    assert retrieval(lonely, labels, ["image", "text"], same_row=False) == {}


def test_retrieval_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 40)
    centres = rng.standard_normal((5, 8))
    embeddings = {
        m: (centres[labels] + rng.standard_normal((40, 8)) * (1.0 + i)).astype("float32")
        for i, m in enumerate(MODALITIES)
    }
    scores = retrieval(every_row(embeddings), labels, MODALITIES, same_row=False)
    for query in MODALITIES:
        for gallery in MODALITIES:
            if query == gallery:
                continue
            assert scores[f"{query}->{gallery}"]["queries"] == 40
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
    names = conditions(MODALITIES)
    assert list(names) == [
        "all",
        *(f"{m} missing" for m in MODALITIES),
        *(f"{m} only" for m in MODALITIES),
    ]
    assert names["all"] is None
    assert names["audio missing"] == {"image", "text", "video"} and names["text only"] == {"text"}
    results = {}
    for i, name in enumerate(names):
        predicted = labels.copy()
        predicted[: i % 5] = 9  # condition i gets (i mod 5) of 4 wrong
        results[name] = ({"probabilities": np.eye(10)[predicted]}, np.arange(4))
    table = _accuracies(results, labels, MODALITIES)
    assert table["all_modalities"] == 1.0
    assert table["missing"] == {"image": 0.75, "text": 0.5, "audio": 0.25, "video": 0.0}
    assert table["only"] == {"image": 1.0, "text": 0.75, "audio": 0.5, "video": 0.25}

    # A condition is scored on its own rows' labels; one with no rows has no accuracy.
    results["text only"] = ({"probabilities": np.eye(10)[[3, 0]]}, np.array([3, 1]))
    results["audio only"] = ({}, np.array([], int))
    table = _accuracies(results, labels, MODALITIES)
    assert table["only"]["text"] == 0.5 and table["only"]["audio"] is None


def test_format_table_shows_the_numbers():
    pairs = {
        f"{a}->{b}": {"recall@1": 0.5, "recall@5": 0.9, "queries": 270}
        for a in MODALITIES
        for b in MODALITIES
        if a != b
    }
    pairs["image->text"]["recall@1"] = 0.8  # image's mean over its three pairs: 0.6
    metrics = {
        "split": "test",
        "modalities": list(MODALITIES),
        "classes": CLASSES,
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
    lines = table.splitlines()
    assert lines[0] == "Results on the test split (270 rows, chance 0.10)"
    assert "0.987" in table and "0.950" in table
    assert len(lines) == 7
    image = lines[2].split()
    assert image == ["image", "0.900", "0.600", "0.800", "0.600"]
    assert lines[3].split() == ["text", "0.900", "0.600", "0.800", "0.500"]

    # A retrieval run: no classes, no accuracy; its cells are dashes.
    retrieval_only = {
        k: v for k, v in metrics.items() if k not in ("accuracy", "linear_probe_accuracy")
    }
    table = format_table({**retrieval_only, "classes": None})
    lines = table.splitlines()
    assert lines[0] == "Results on the test split (270 rows)"
    assert lines[2].split() == ["image", "-", "-", "-", "0.600"]
    assert lines[-1].split()[:3] == ["all", "-", "-"]


def test_modality_dropout_keeps_one_modality_and_drops_half():
    assert DROP_RATE == 0.5
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


def test_modality_dropout_keeps_a_rows_missing_modalities_missing():
    patterns = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]], "float32")
    own = np.tile(patterns, (1000, 1))
    examples = tf.data.Dataset.from_tensor_slices({"label": np.arange(4000), "presence": own})
    dropped = np.stack(
        [e["presence"] for e in with_modality_dropout(examples, MODALITIES, seed=7, rate=0.5)]
    )
    assert dropped.shape == (4000, 4) and set(np.unique(dropped)) == {0.0, 1.0}
    assert not np.any(dropped > own), "a missing modality was made present"
    assert dropped.sum(axis=1).min() == 1, "a row lost every modality it has"
    # A row with one modality always keeps it.
    np.testing.assert_array_equal(dropped[1::4], own[1::4])
    # A row with two: each is kept with probability 1/2, plus half of the 1/4 of rows
    # that would lose both (the fallback picks one of the row's own by the row's seed).
    two = dropped[0::4]
    np.testing.assert_allclose(two[:, [0, 2]].mean(axis=0), 0.5 + 0.25 / 2, atol=0.04)
    lone = two[two.sum(axis=1) == 1]
    assert set(map(tuple, lone)) == {(1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0)}
    full = dropped[2::4]
    np.testing.assert_allclose(full.mean(axis=0), 1 - 0.5 + 0.5**4 / 4, atol=0.04)
    # A complete example is treated as one without a presence: the same masks.
    complete = tf.data.Dataset.from_tensor_slices(
        {"label": np.arange(400), "presence": np.ones((400, 4), "float32")}
    )
    plain = tf.data.Dataset.from_tensor_slices({"label": np.arange(400)})
    masks = [
        np.stack([e["presence"] for e in with_modality_dropout(d, MODALITIES, seed=7, rate=0.5)])
        for d in (complete, plain)
    ]
    np.testing.assert_array_equal(masks[0], masks[1])


# A presence pattern of five rows, and the rows each condition is scored on.
PRESENCE = np.array(
    [[1, 1, 1, 1], [1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [1, 1, 0, 1]], "float32"
)
CONDITION_ROWS = {
    "all": [0, 1, 2, 3, 4],
    # Rows that had the modality and have another one: row 1 has nothing but an image.
    "image missing": [0, 4],
    "text missing": [0, 2, 4],
    "audio missing": [0],
    "video missing": [0, 2, 4],
    # Rows that have the modality.
    "image only": [0, 1, 4],
    "text only": [0, 2, 4],
    "audio only": [0, 3],
    "video only": [0, 2, 4],
}


def test_condition_rows_and_their_presence():
    for name, present in conditions(MODALITIES).items():
        rows, presence = _condition_rows(PRESENCE, list(MODALITIES), present)
        np.testing.assert_array_equal(rows, CONDITION_ROWS[name], err_msg=name)
        if present is None:
            np.testing.assert_array_equal(presence, PRESENCE)
            continue
        keep = np.array([m in present for m in MODALITIES], "float32")
        np.testing.assert_array_equal(presence, PRESENCE[rows] * keep, err_msg=name)
        assert presence.sum(axis=1).min() >= 1, name


@functools.cache
def tiny_model(fusion, head):
    task = "both" if fusion == "coordinated" else "classification"
    return build_run_model(tiny_config(fusion, head, task=task), classes=CLASSES, captions=CAPTIONS)


@pytest.mark.parametrize(
    ("fusion", "head"),
    [("bilinear", "none"), ("autoencoder", "none"), ("coordinated", "none")]
    + [("concat", "vae"), ("coordinated", "fisher")],
)
def test_run_condition_is_the_serving_model_and_ignores_junk(fusion, head):
    model = tiny_model(fusion, head)
    config = model.config
    encoders, fusion_model = vector_models(model.layers, config)
    inputs = raw_inputs(batch=5, seed=11)
    feed = {k: tf.constant(v) for k, v in inputs.items() if k != "text"}
    feed["text"] = tf.constant(inputs["text"].astype(bytes))
    vectors = {m: np.asarray(v) for m, v in encoders(feed).items()}
    encoded = {"vectors": vectors, "presence": PRESENCE, "labels": np.arange(5)}
    for name, present in conditions(MODALITIES).items():
        out, rows = run_condition(fusion_model, encoded, list(MODALITIES), present, seed=0)
        np.testing.assert_array_equal(rows, CONDITION_ROWS[name], err_msg=name)
        assert set(out) == {"embedding", "probabilities"}
        assert out["embedding"].shape[0] == len(rows)
        # Other junk in the absent vectors gives the same outputs.
        again, _ = run_condition(fusion_model, encoded, list(MODALITIES), present, seed=1)
        for key in out:
            np.testing.assert_allclose(again[key], out[key], atol=1e-5, err_msg=f"{name} {key}")
        if name not in ("all", "video missing", "audio only"):
            continue
        # The fusion on the encoders' vectors is the serving model on the raw inputs.
        _, presence = _condition_rows(PRESENCE, list(MODALITIES), present)
        subset = {k: v[rows] for k, v in inputs.items()}
        served = serve(model.serving, {**subset, "presence": presence})
        for key in out:
            np.testing.assert_allclose(served[key], out[key], atol=1e-5, err_msg=f"{name} {key}")
    # A modality alone is its one-modality embedding model.
    out, rows = run_condition(fusion_model, encoded, list(MODALITIES), {"image"})
    alone = np.asarray(model.embeddings["image"](tf.constant(inputs["image"][rows])))
    np.testing.assert_allclose(out["embedding"], alone, atol=1e-5)
    # Vectors marked present do change the outputs.
    lied = {**encoded, "vectors": {**vectors, "image": vectors["image"] + 3.0}}
    changed, _ = run_condition(fusion_model, lied, list(MODALITIES), {"image"})
    assert not np.allclose(changed["embedding"], out["embedding"], atol=1e-4)
