"""ConcatFusion against a float64 numpy formula, and its handling of missing and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.fusion import ConcatFusion

RNG = np.random.default_rng(7)
IMAGE = RNG.standard_normal((5, 8)).astype("float32")
TEXT = RNG.standard_normal((5, 4)).astype("float32")
PRESENCE = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1]], "float32")


def reference(inputs, presence, weights, order, activation, normalization):
    """float64 numpy: project, activate, normalise, zero-fill absent, append presence."""
    parts = []
    for i, m in enumerate(order):
        x = inputs[m].astype("float64")
        if m in weights:
            kernel, bias = (w.astype("float64") for w in weights[m])
            x = x @ kernel + bias
            if activation == "relu":
                x = np.maximum(x, 0.0)
        if normalization == "l2":
            x = x / np.sqrt(np.maximum((x**2).sum(-1, keepdims=True), 1e-12))
        elif normalization == "layer":
            mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
            x = (x - mean) / np.sqrt(var + 1e-3)
        parts.append(x * presence[:, i : i + 1])
    parts.append(presence.astype("float64"))
    return np.concatenate(parts, axis=-1)


def projection_weights(layer):
    return {
        m: dense.get_weights()
        for m, dense in zip(layer._order, layer._projections, strict=True)
        if dense
    }


@pytest.mark.parametrize("normalization", [None, "l2", "layer"])
@pytest.mark.parametrize("projection_dim", [None, 3, {"text": 6}])
def test_matches_float64_formula(normalization, projection_dim):
    activation = "relu" if projection_dim else None
    layer = ConcatFusion(
        modalities=["text", "image"],
        projection_dim=projection_dim,
        projection_activation=activation,
        normalization=normalization,
    )
    inputs = {"image": IMAGE, "text": TEXT}
    out = layer(inputs, presence=PRESENCE).numpy()
    expected = reference(
        inputs, PRESENCE, projection_weights(layer), ["text", "image"], activation, normalization
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_default_order_is_sorted_keys_and_presence_may_be_bool():
    layer = ConcatFusion()
    out = layer({"text": TEXT, "image": IMAGE}, presence=PRESENCE.astype(bool)).numpy()
    np.testing.assert_array_equal(out[:, :8], IMAGE * PRESENCE[:, :1])
    np.testing.assert_array_equal(out[:, 8:12], TEXT * PRESENCE[:, 1:])
    np.testing.assert_array_equal(out[:, 12:], PRESENCE)


def test_without_presence_every_modality_counts_as_present():
    layer = ConcatFusion(modalities=["image", "text"])
    out = layer({"image": IMAGE, "text": TEXT}).numpy()
    np.testing.assert_array_equal(out, np.concatenate([IMAGE, TEXT, np.ones((5, 2))], -1))


def test_absent_modality_values_never_reach_output_or_gradient():
    layer = ConcatFusion(modalities=["image", "text"], projection_dim=3, normalization="l2")
    text = TEXT.copy()
    text[PRESENCE[:, 1] == 0] = np.nan
    with tf.GradientTape() as tape:
        out = layer({"image": IMAGE, "text": text}, presence=PRESENCE)
        loss = tf.reduce_sum(out * RNG.standard_normal(out.shape).astype("float32"))
    grads = tape.gradient(loss, layer.trainable_variables)
    assert np.all(np.isfinite(out.numpy()))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    np.testing.assert_array_equal(out.numpy()[PRESENCE[:, 1] == 0, 3:6], 0.0)


def test_sequence_inputs_broadcast_the_presence_mask():
    audio = RNG.standard_normal((5, 7, 2)).astype("float32")
    video = RNG.standard_normal((5, 7, 3)).astype("float32")
    out = ConcatFusion(modalities=["audio", "video"])(
        {"audio": audio, "video": video}, presence=PRESENCE
    )
    expected = np.concatenate(
        [
            audio * PRESENCE[:, None, :1],
            video * PRESENCE[:, None, 1:],
            np.repeat(PRESENCE[:, None], 7, 1),
        ],
        -1,
    )
    np.testing.assert_array_equal(out.numpy(), expected)


def test_trains_in_a_model_with_dict_inputs():
    image, text = keras.Input((8,), name="image"), keras.Input((4,), name="text")
    presence = keras.Input((2,), name="presence")
    fused = ConcatFusion(modalities=["image", "text"], projection_dim=4)(
        {"image": image, "text": text}, presence=presence
    )
    model = keras.Model([image, text, presence], keras.layers.Dense(1)(fused))
    model.compile("adam", "mse")
    history = model.fit([IMAGE, TEXT, PRESENCE], np.ones((5, 1)), epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize(
    ("inputs", "presence", "match"),
    [
        (
            {"image": IMAGE},
            None,
            r"expected one input per modality \['image', 'text'\].*Received keys: \['image'\]",
        ),
        (
            {"image": IMAGE, "text": TEXT, "audio": TEXT},
            None,
            "Received keys: \\['audio', 'image', 'text'\\]",
        ),
        ({"image": IMAGE, "text": None}, None, r"received `None` for modalities \['text'\]"),
        ([IMAGE, TEXT], None, "expected a dict"),
        (
            {"image": IMAGE, "text": TEXT},
            PRESENCE[:, :1],
            r"expected `presence` of shape \[batch, 2\].*\(5, 1\)",
        ),
        (
            {"image": IMAGE, "text": RNG.standard_normal((5, 2, 4)).astype("float32")},
            None,
            "same rank",
        ),
    ],
)
def test_bad_input_is_named(inputs, presence, match):
    with pytest.raises(ValueError, match=match):
        ConcatFusion(modalities=["image", "text"])(inputs, presence=presence)


def test_integer_modality_is_refused():
    with pytest.raises(TypeError, match=r"expected a floating tensor for modality 'text'.*int32"):
        ConcatFusion()({"image": IMAGE, "text": np.ones((5, 4), "int32")})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"normalization": "batch"}, "normalization"),
        ({"projection_dim": 0}, "projection_dim"),
        ({"projection_dim": {"audio": 3}, "modalities": ["image"]}, "projection_dim"),
        ({"modalities": ["image", "image"]}, "distinct"),
        ({"modalities": []}, "non-empty"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConcatFusion(**kwargs)
