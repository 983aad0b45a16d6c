"""recipes/audio_visual_bilinear_mmdigits.py: the missing-modality claims its table rests on.

The recipe feeds junk in place of a missing modality and relies on the presence mask to
keep it out. These tests build the recipe's models (at smoke size) and check that: the
predictions of an example whose modality is marked absent do not depend on what that
input holds (noise, silence or a black image give identical logits), while the same junk
marked present does change them; compact bilinear pooling with `missing="zeros"` reduces a
one-modality example to the classifier's bias (a zero bilinear feature); and the modality
dropout drops each modality with probability `drop / 2` and never both.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.recipes import load_recipe


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("audio_visual_bilinear_mmdigits.py")


def _inputs(rng, n=6):
    audio = np.clip(rng.normal(0, 0.2, (n, 16000)), -1, 1).astype("float32")
    image = rng.integers(0, 256, (n, 32, 32, 3), dtype="uint8")
    return audio, image


@pytest.mark.parametrize(
    "fusion, missing",
    [("compact", "learned"), ("compact", "zeros"), ("concat", None)],
)
def test_an_absent_modality_does_not_reach_the_prediction(recipe, fusion, missing):
    args = recipe.parse_args(["--smoke"])
    model = recipe.build(fusion, missing, args)
    rng = np.random.default_rng(0)
    audio, image = _inputs(rng)
    junk_audio, junk_image = _inputs(rng)
    # A second junk: silence / a black image. (NaN is no junk here: VGGish's frontend
    # refuses non-finite waveforms, and the images are uint8.)
    blank_audio, blank_image = np.zeros_like(audio), np.zeros_like(image)
    n = len(audio)
    for modality, real, junks in (
        ("audio", audio, (junk_audio, blank_audio)),
        ("image", image, (junk_image, blank_image)),
    ):
        absent = np.ones((n, 2), "float32")
        absent[:, recipe.MODALITIES.index(modality)] = 0.0

        def predict(value, presence, modality=modality):
            x = {"audio": audio, "image": image, "presence": presence, modality: value}
            return model.predict(x, verbose=0)

        reference = predict(real, absent)
        assert np.all(np.isfinite(reference))
        for junk in junks:
            np.testing.assert_array_equal(predict(junk, absent), reference)
        # Marked present, the junk does reach the prediction: the mask is what keeps it out.
        assert not np.allclose(predict(junks[0], np.ones((n, 2), "float32")), reference)


@pytest.mark.slow  # recipe training
def test_zeros_for_a_missing_modality_leave_only_the_classifier_bias(recipe):
    args = recipe.parse_args(["--smoke"])
    model = recipe.build("compact", "zeros", args)
    audio, image = _inputs(np.random.default_rng(1))
    bias = model.get_layer("classifier").bias.numpy()
    for presence_row in ([0.0, 1.0], [1.0, 0.0]):
        presence = np.tile(np.array(presence_row, "float32"), (len(audio), 1))
        logits = model.predict({"audio": audio, "image": image, "presence": presence}, verbose=0)
        np.testing.assert_allclose(logits, np.tile(bias, (len(audio), 1)), atol=1e-6)
    both = model.predict(
        {"audio": audio, "image": image, "presence": np.ones((len(audio), 2), "float32")},
        verbose=0,
    )
    assert not np.allclose(both, np.tile(bias, (len(audio), 1)), atol=1e-3)


def test_modality_dropout_rates(recipe):
    drop, n = 0.5, 4000
    add_presence, seeds = recipe.modality_dropout(drop, seed=3)
    examples = tf.data.Dataset.from_tensors(
        {"audio": tf.zeros(4), "image": tf.zeros((2, 2, 3), "uint8"), "label": 0}
    ).repeat(n)
    mapped = tf.data.Dataset.zip(examples, seeds).map(add_presence)
    presence = np.stack([x["presence"] for x, _ in mapped.as_numpy_iterator()])
    assert presence.shape == (n, 2)
    assert set(np.unique(presence)) <= {0.0, 1.0}
    assert not np.any(presence.sum(1) == 0), "both modalities dropped"
    # Each modality is dropped with probability drop / 2: within 4 binomial sigmas.
    sigma = np.sqrt(drop / 2 * (1 - drop / 2) / n)
    for column in range(2):
        assert abs(np.mean(presence[:, column] == 0) - drop / 2) < 4 * sigma
