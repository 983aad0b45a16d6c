"""recipes/retrieval_mmdigits.py: the scoring its table rests on, and the model it trains.

The recipe scores retrieval at the digit level (any item of the query's digit is
correct). Checked against embeddings whose answers are known: one-hot digit embeddings
retrieve perfectly, embeddings of a shifted digit never at rank 1, and random embeddings
score recall@1 at the fraction of same-digit items (the chance level, computed here from
the labels). The model: unit-norm embeddings of the requested width, a text embedding
that ignores padding (the padding token's word vector can be anything), and a few steps
of `fit` lower the contrastive loss.
"""

import os

import numpy as np
import pytest

from tests.recipes import load_recipe

RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "retrieval_mmdigits.py")


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("retrieval_mmdigits.py")


def _labels(n, seed):
    return np.random.default_rng(seed).integers(0, 10, n)


def test_one_hot_digit_embeddings_retrieve_perfectly(recipe):
    train, test = _labels(200, 0), _labels(150, 1)
    embed = lambda y: {m: np.eye(10)[y] for m in ("image", "text")}  # noqa: E731
    scores = recipe.score(embed(train), embed(test), train, test)
    for direction in ("image->text", "text->image"):
        assert scores[direction] == {
            "recall@1": 1.0,
            "recall@5": 1.0,
            "recall@10": 1.0,
            "median_rank": 1.0,
        }
    assert scores["probe image"] == scores["probe text"] == 1.0


def test_a_shifted_digit_is_never_first(recipe):
    train, test = _labels(200, 0), _labels(150, 1)

    def embed(y):
        return {"image": np.eye(10)[y], "text": np.eye(10)[(y + 1) % 10]}

    scores = recipe.score(embed(train), embed(test), train, test)
    assert scores["image->text"]["recall@1"] == 0.0
    assert scores["text->image"]["recall@1"] == 0.0
    # Each embedding alone still separates the digits.
    assert scores["probe image"] == scores["probe text"] == 1.0


def test_random_embeddings_score_chance(recipe):
    train, test = _labels(300, 2), _labels(1000, 3)
    scores = recipe.random_baseline(train, test, dim=32, seed=0)
    # Chance recall@1: the expected fraction of the gallery that is of the query's digit.
    chance = np.mean(np.bincount(test, minlength=10)[test] / len(test))
    for direction in ("image->text", "text->image"):
        assert abs(scores[direction]["recall@1"] - chance) < 0.04
    assert scores["probe image"] < 0.25 and scores["probe text"] < 0.25


def test_model_embeddings_are_unit_norm_and_ignore_padding(recipe):
    args = recipe.parse_args(["--smoke"])
    args.text_width, args.text_layers, args.embedding_dim = 16, 1, 8
    vocabulary = 30
    model = recipe.build(vocabulary, args)
    rng = np.random.default_rng(0)
    n, length = 3, args.sequence_length
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype="uint8")
    ids = np.zeros((n, length), "int32")  # 0 is TextVectorization's padding
    for i, words in enumerate((3, 5, length)):
        ids[i, :words] = rng.integers(2, vocabulary, words)
    x = {"image": images, "token_ids": ids}
    out = model.embed(x)
    for name in ("image", "text"):
        assert out[name].shape == (n, args.embedding_dim)
        np.testing.assert_allclose(np.linalg.norm(out[name], axis=1), 1.0, atol=1e-5)

    # Padding is masked out of attention and of the mean: rewriting the padding token's
    # word vector leaves every text embedding as it was, while rewriting a used token's
    # vector changes the rows that hold it.
    (table,) = [
        w
        for w in model.embedding_model.get_layer("text_encoder").weights
        if tuple(w.shape) == (vocabulary, args.text_width)
    ]
    values = table.numpy()
    table.assign(np.concatenate([rng.normal(0, 5, (1, args.text_width)), values[1:]]))
    np.testing.assert_allclose(model.embed(x, "text"), out["text"], atol=1e-5)
    used = ids[0, 0]
    table.assign(np.where(np.arange(vocabulary)[:, None] == used, 5.0, values))
    changed = model.embed(x, "text")
    holds = (ids == used).any(axis=1)
    assert not np.allclose(changed[holds], out["text"][holds], atol=1e-3)
    np.testing.assert_allclose(changed[~holds], out["text"][~holds], atol=1e-5)


@pytest.mark.slow  # recipe training
def test_a_training_step_lowers_the_loss(recipe):
    args = recipe.parse_args(["--smoke"])
    args.text_width, args.text_layers, args.embedding_dim = 16, 1, 8
    model = recipe.build(30, args)
    model.compile(optimizer="adam")
    rng = np.random.default_rng(0)
    x = {
        "image": rng.integers(0, 256, (16, 32, 32, 3), dtype="uint8"),
        "token_ids": rng.integers(1, 30, (16, args.sequence_length)).astype("int32"),
    }
    before = model.evaluate(x, batch_size=16, verbose=0)
    model.fit(x, batch_size=16, epochs=5, verbose=0)
    assert model.evaluate(x, batch_size=16, verbose=0) < before
