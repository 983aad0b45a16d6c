"""Fisher distance and similarity against float64 formulas, and the similarity callback.

The similarity is checked against a transcription of `utils.fisher_sim` of the authors'
code (apple/ml-afv): `exp(−10 · mean_p((mean_real_p − mean_fake_p)² / (var_p + 1e-12)))`
over raw gradients, where `var_p` is the fake samples' variance. The callback runs inside
a short `fit` of a tiny EBM-like model (a discriminator and a deterministic sampler); its
logged values are recomputed after training with an independent AFV layer on a copy of
the trained discriminator and the same samples.
"""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.heads import AdversarialFisherVector, FisherSimilarityCallback
from mmrep.heads.gan.fisher_set_distance import fisher_distance, fisher_similarity
from tests.heads.afv_cases import conv_discriminator


def test_distance_is_zero_for_identical_sets_symmetric_and_the_mean_gap():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(1.0, 2.0, size=(4, 5))
    assert fisher_distance(a, a) == 0.0
    assert fisher_distance(a, a[::-1]) == pytest.approx(0.0, abs=1e-15)
    assert fisher_distance(a, b) == fisher_distance(b, a)
    gap = a.sum(axis=0) / len(a) - b.sum(axis=0) / len(b)
    assert fisher_distance(a, b) == pytest.approx(np.sqrt(np.sum(gap**2)), rel=1e-12)
    assert fisher_distance(tf.constant(a, tf.float32), b) == pytest.approx(
        np.sqrt(np.sum(gap**2)), rel=1e-6
    )


def test_similarity_is_the_authors_fisher_sim():
    rng = np.random.default_rng(1)
    fake = rng.normal(0.5, 3.0, size=(50, 8))  # raw per-example gradients
    real = rng.normal(1.0, 2.0, size=(30, 8))
    mean, var = fake.mean(axis=0), fake.var(axis=0)
    authors = np.exp(-10 * np.mean((real.mean(axis=0) - mean) ** 2 / (var + 1e-12)))
    normalise = lambda g: (g - mean) / np.sqrt(var)  # noqa: E731  the AFV of each set
    assert fisher_similarity(normalise(real), normalise(fake)) == pytest.approx(authors, rel=1e-9)
    assert fisher_similarity(real, real) == 1.0
    values = [fisher_similarity(real, real + shift) for shift in (0.1, 0.5, 2.0)]
    assert 1.0 > values[0] > values[1] > values[2] > 0.0
    assert fisher_similarity(real, real + 0.5, scale=1.0) == pytest.approx(np.exp(-0.25))


@pytest.mark.parametrize(
    "a, b, message",
    [
        (np.zeros((3, 4)), np.zeros((3, 5)), "same dimension P"),
        (np.zeros((0, 4)), np.zeros((3, 4)), "non-empty"),
        (np.zeros(4), np.zeros((3, 4)), r"\[N, P\]"),
        (np.full((2, 4), np.nan), np.zeros((3, 4)), "finite"),
        (np.array([["a"]]), np.zeros((1, 1)), "numeric"),
    ],
)
def test_bad_sets_are_named(a, b, message):
    with pytest.raises(ValueError, match=message):
        fisher_distance(a, b)
    with pytest.raises(ValueError, match=message):
        fisher_similarity(a, b)
    with pytest.raises(ValueError, match="`scale`"):
        fisher_similarity(np.zeros((1, 1)), np.zeros((1, 1)), scale=0.0)


class TinyEBM(keras.Model):
    """A discriminator fitted by a stub regression, and a sampler drawing fixed noise."""

    def __init__(self):
        super().__init__()
        self.discriminator = conv_discriminator()
        self.drawn = []

    def call(self, x):
        return self.discriminator(x)

    def sample(self, n):
        x = np.random.default_rng(100 + len(self.drawn)).normal(size=(n, 6, 6, 2))
        self.drawn.append(x.astype("float32"))
        return self.drawn[-1]


def _images(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 6, 6, 2)).astype("float32")


class LogsRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))


def _events(folder):
    """`{tag: {"steps", "values", "plugins"}}` of the summaries in a folder's event files."""
    paths = glob.glob(os.path.join(folder, "events.out.tfevents*"))
    assert paths, f"no event file in {folder}"
    found = {}
    for path in paths:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                entry = found.setdefault(value.tag, {"steps": [], "values": [], "plugins": set()})
                entry["steps"].append(event.step)
                entry["values"].append(float(tf.make_ndarray(value.tensor)))
                entry["plugins"].add(value.metadata.plugin_data.plugin_name)
    return found


def test_callback_logs_to_history_and_tensorboard(tmp_path):
    model = TinyEBM()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    train, val = _images(24, 1), _images(10, 2)
    afv = AdversarialFisherVector(model.discriminator, batch_size=16)
    callback = FisherSimilarityCallback(
        afv, val, model.sample, num_samples=32, reference_data=train[:8], every=2,
        log_dir=str(tmp_path / "fisher"),
    )  # fmt: skip
    later = LogsRecorder()  # where a TensorBoard callback would be
    targets = np.random.default_rng(3).normal(size=(24, 1)).astype("float32")
    start = [w.copy() for w in model.discriminator.get_weights()]
    history = model.fit(train, targets, epochs=4, batch_size=8, verbose=0,
                        callbacks=[callback, later])  # fmt: skip
    keys = [
        f"fisher_{kind}_{split}"
        for kind in ("similarity", "distance")
        for split in ("val", "train")
    ]
    for key in keys:
        values = history.history[key]
        assert len(values) == 2 and np.isfinite(values).all(), (key, values)
    assert all(0.0 < s <= 1.0 for s in history.history["fisher_similarity_val"])
    assert len(model.drawn) == 2 and len(history.history["loss"]) == 4

    # Recomputed independently after training: the callback saw the trained discriminator.
    end = model.discriminator.get_weights()
    assert not all(np.allclose(a, b) for a, b in zip(start, end, strict=True))
    copy = keras.models.clone_model(model.discriminator)
    copy.set_weights(model.discriminator.get_weights())
    fresh = AdversarialFisherVector(copy)
    fresh.adapt(model.drawn[-1], verbose=0)
    generated, real = fresh.transform(model.drawn[-1]), fresh.transform(val)
    assert history.history["fisher_distance_val"][-1] == pytest.approx(
        fisher_distance(real, generated), rel=1e-4
    )
    assert history.history["fisher_similarity_val"][-1] == pytest.approx(
        fisher_similarity(real, generated), rel=1e-4
    )

    # Our own TensorBoard scalars (steps = epochs 1 and 3), and the logs a callback after
    # ours (such as keras.callbacks.TensorBoard) receives.
    ours = _events(str(tmp_path / "fisher"))
    for key in keys:
        assert ours[key]["steps"] == [1, 3] and ours[key]["plugins"] == {"scalars"}
        np.testing.assert_allclose(ours[key]["values"], history.history[key], rtol=1e-6)
        assert [logs.get(key) for logs in later.logs][1::2] == history.history[key]
        assert [key in logs for logs in later.logs] == [False, True, False, True]


def test_callback_arguments_are_checked(tmp_path):
    d = conv_discriminator()
    afv = AdversarialFisherVector(d)
    sample = lambda n: _images(n, 0)  # noqa: E731
    with pytest.raises(ValueError, match="AdversarialFisherVector"):
        FisherSimilarityCallback(d, _images(2, 0), sample)
    with pytest.raises(ValueError, match="`sampler`"):
        FisherSimilarityCallback(afv, _images(2, 0), _images(2, 0))
    with pytest.raises(ValueError, match="`num_samples`"):
        FisherSimilarityCallback(afv, _images(2, 0), sample, num_samples=1)
    with pytest.raises(ValueError, match="`every`"):
        FisherSimilarityCallback(afv, _images(2, 0), sample, every=0)
    with pytest.raises(ValueError, match="`scale`"):
        FisherSimilarityCallback(afv, _images(2, 0), sample, scale=-1.0)
