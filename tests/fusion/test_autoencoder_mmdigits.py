"""MultimodalAutoencoder on mmdigits: a dropped modality is rebuilt from the others, held out.

Cheap vector features per modality: the image block-averaged to its 8×8 source grid, a
binary bag of words of the caption (vocabulary of the training captions), and the log-mel
spectrogram of the audio averaged over time (standardised with training statistics).
Trained with modality dropout on the training split, the autoencoder reconstructs a
modality marked absent (its input filled with NaN) on the test split, and is compared with
the per-modality training mean, the best prediction that ignores the other modalities.

Measured over seeds 0-3 (40 epochs; reconstruction MSE / MSE of the training mean on the
test split): image 0.61, audio 0.63-0.71; the class-conditional means (an oracle that knows
the digit) reach 0.55 and 0.63. Without modality dropout the same model gets 1.20 and 0.92
(seed 0): the MSE with dropout is 0.51-0.54 (image) and 0.66-0.74 (audio) of it, so
modality dropout is what teaches cross-modal reconstruction. The caption's bag of
words is mostly template words unrelated to the digit (even the oracle reaches only 0.92),
so text serves as an input here and is not asserted as a target.
"""

import re

import keras
import numpy as np
import pytest

from mmrep.data import load_mmdigits
from mmrep.encoders import LogMelSpectrogram
from mmrep.fusion.autoencoder import MultimodalAutoencoder

# The slow tier (--run-slow): convergence on mmdigits.
pytestmark = pytest.mark.slow

MODALITIES = ("image", "text", "audio")
TARGETS = ("image", "audio")  # the modalities whose reconstruction is asserted


def _tokens(caption):
    return re.findall(r"[a-z]+|\d", caption.decode().lower())


def _features(data, vocabulary, frontend):
    pixels = data["image"][..., 0].astype("float32") / 255.0
    image = pixels.reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(-1, 64)
    index = {w: i for i, w in enumerate(vocabulary)}
    text = np.zeros((len(data["text"]), len(vocabulary)), "float32")
    for row, caption in enumerate(data["text"]):
        for word in _tokens(caption):
            if word in index:
                text[row, index[word]] = 1.0
    audio = frontend(data["audio"]).numpy().mean(axis=1)
    return {"image": image, "text": text, "audio": audio}


@pytest.fixture(scope="module")
def splits():
    # No audio augmentation: the features are fixed, and test audio is not augmented.
    train = load_mmdigits("train", modalities=MODALITIES, augment=False, as_numpy=True)
    test = load_mmdigits("test", modalities=MODALITIES, as_numpy=True)
    vocabulary = sorted({w for caption in train["text"] for w in _tokens(caption)})
    frontend = LogMelSpectrogram()
    train, test = (_features(d, vocabulary, frontend) for d in (train, test))
    mean, std = train["audio"].mean(0), train["audio"].std(0) + 1e-6
    for split in (train, test):
        split["audio"] = ((split["audio"] - mean) / std).astype("float32")
    return train, test


def _train(features, modality_dropout):
    keras.utils.set_random_seed(0)
    inputs = {m: keras.Input((features[m].shape[1],), name=m) for m in MODALITIES}
    presence = keras.Input((len(MODALITIES),), name="presence")
    autoencoder = MultimodalAutoencoder(
        32,
        modalities=list(MODALITIES),
        encoder_units=(64,),
        decoder_units=(64,),
        activation="tanh",
        modality_dropout=modality_dropout,
        # Each modality's error relative to its variance: no modality dominates the loss.
        reconstruction_weight={m: float(1.0 / features[m].var(0).mean()) for m in MODALITIES},
        seed=1,
    )
    outputs = autoencoder(inputs, presence=presence)
    model = keras.Model({**inputs, "presence": presence}, outputs)
    model.compile(keras.optimizers.Adam(3e-3))
    count = len(features["image"])
    feed = {**features, "presence": np.ones((count, len(MODALITIES)), "float32")}
    model.fit(feed, epochs=40, batch_size=64, verbose=0)
    return model


def _dropped_mse(model, test, modality):
    """MSE of `modality` rebuilt from the others, its input NaN and marked absent."""
    count = len(test[modality])
    presence = np.ones((count, len(MODALITIES)), "float32")
    presence[:, MODALITIES.index(modality)] = 0.0
    feed = {**test, modality: np.full_like(test[modality], np.nan), "presence": presence}
    rebuilt = model.predict(feed, batch_size=count, verbose=0)[f"{modality}_reconstruction"]
    assert np.all(np.isfinite(rebuilt))
    return float(((rebuilt - test[modality]) ** 2).mean())


def test_dropped_modality_is_reconstructed_better_than_the_mean(splits):
    train, test = splits
    with_dropout = _train(train, modality_dropout=0.5)
    without = _train(train, modality_dropout=0.0)
    for modality in TARGETS:
        baseline = float(((train[modality].mean(0) - test[modality]) ** 2).mean())
        mse = _dropped_mse(with_dropout, test, modality)
        control = _dropped_mse(without, test, modality)
        assert mse <= 0.8 * baseline, (modality, mse / baseline)
        assert mse <= 0.85 * control, (modality, mse / control)
