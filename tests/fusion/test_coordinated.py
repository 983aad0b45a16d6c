"""CoordinatedEmbedding against a float64 numpy formula; temperature, missing data, training."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.fusion.coordinated import CoordinatedEmbedding
from mmrep.losses import ClipLoss
from mmrep.metrics import retrieval_scores
from tests.losses.test_contrastive import DualEncoder, ref_clip

RNG = np.random.default_rng(5)
IMAGE = RNG.standard_normal((5, 8)).astype("float32")
TEXT = RNG.standard_normal((5, 4)).astype("float32")
PRESENCE = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1]], "float32")


def _weights(layer):
    return {v.path.split("/", 1)[1]: v.numpy().astype("float64") for v in layer.weights}


def reference(layer, inputs, presence, activation):
    """float64: hidden Dense + activation, linear projection, unit norm, zeros if absent."""
    weights = _weights(layer)
    out = {}
    for column, m in enumerate(layer._order):
        x = inputs[m].astype("float64")
        i = 0
        while f"{m}_hidden_{i}/kernel" in weights:
            x = activation(x @ weights[f"{m}_hidden_{i}/kernel"] + weights[f"{m}_hidden_{i}/bias"])
            i += 1
        x = x @ weights[f"{m}_projection/kernel"] + weights[f"{m}_projection/bias"]
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        out[m] = x * presence[:, column : column + 1]
    return out


def test_matches_float64_formula_with_missing_modalities():
    layer = CoordinatedEmbedding(3, modalities=["text", "image"], hidden_dims=(6, 5))
    text = TEXT.copy()
    text[PRESENCE[:, 0] == 0] = np.nan  # column 0 is "text" in this layer's order
    out = layer({"image": IMAGE, "text": text}, presence=PRESENCE)
    expected = reference(
        layer, {"image": IMAGE, "text": TEXT}, PRESENCE, lambda x: np.maximum(x, 0)
    )
    for m in ("image", "text"):
        np.testing.assert_allclose(out[m].numpy(), expected[m], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["text"].numpy()[PRESENCE[:, 0] == 0], 0.0)
    np.testing.assert_allclose(out["logit_scale"].numpy(), np.full((5, 1), 1 / 0.07), rtol=1e-6)


def test_absent_inputs_reach_neither_output_nor_gradients():
    layer = CoordinatedEmbedding(4, hidden_dims=(3,), hidden_activation="tanh")
    image = IMAGE.copy()
    image[PRESENCE[:, 0] == 0] = np.nan
    with tf.GradientTape() as tape:
        out = layer({"image": image, "text": TEXT}, presence=PRESENCE.astype(bool))
        loss = ClipLoss()(None, out)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert np.isfinite(loss.numpy())
    assert all(np.all(np.isfinite(out[m].numpy())) for m in out)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


def test_without_presence_every_embedding_has_unit_norm():
    out = CoordinatedEmbedding(6)({"image": IMAGE, "text": TEXT})
    for m in ("image", "text"):
        np.testing.assert_allclose(np.linalg.norm(out[m].numpy(), axis=1), 1.0, rtol=1e-6)


def test_unit_norm_under_mixed_precision():
    layer = CoordinatedEmbedding(6, dtype="mixed_float16")
    out = layer({"image": IMAGE, "text": TEXT})
    assert out["image"].dtype == "float16" and layer.log_logit_scale.dtype == "float32"
    norms = np.linalg.norm(out["image"].numpy().astype("float32"), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)


def test_forward_clamps_the_scale_at_the_cap():
    layer = CoordinatedEmbedding(3, max_logit_scale=100.0)
    layer({"image": IMAGE, "text": TEXT})
    layer.log_logit_scale.assign(math.log(1000.0))
    np.testing.assert_allclose(float(layer.logit_scale()), 100.0, rtol=1e-6)
    out = layer({"image": IMAGE, "text": TEXT})
    np.testing.assert_allclose(out["logit_scale"].numpy(), 100.0, rtol=1e-6)


def test_optimizer_step_never_takes_the_weight_above_the_cap():
    layer = CoordinatedEmbedding(3, logit_scale_init=math.log(99.0))
    inputs = {"image": IMAGE, "text": IMAGE}
    layer(inputs)
    # Identical heads on identical inputs: every pair is aligned, so a larger scale
    # lowers the loss and the gradient step pushes the weight up.
    weights = _weights(layer)
    for name in ("kernel", "bias"):
        variable = next(v for v in layer.weights if v.path.endswith(f"text_projection/{name}"))
        variable.assign(weights[f"image_projection/{name}"])
    with tf.GradientTape() as tape:
        loss = ClipLoss()(None, layer(inputs))
    grad = tape.gradient(loss, layer.log_logit_scale)
    learning_rate = 1000.0
    # The unconstrained step would cross the cap.
    assert math.log(99.0) - learning_rate * float(grad) > math.log(100.0)
    keras.optimizers.SGD(learning_rate).apply([grad], [layer.log_logit_scale])
    assert float(layer.log_logit_scale.numpy()) == pytest.approx(math.log(100.0), abs=1e-6)


def test_learned_temperature_gradient_matches_finite_differences():
    layer = CoordinatedEmbedding(4, logit_scale_init=1.5)
    with tf.GradientTape() as tape:
        out = layer({"image": IMAGE, "text": TEXT})
        loss = ClipLoss()(None, out)
    grad = float(tape.gradient(loss, layer.log_logit_scale))
    a, b = out["image"].numpy().astype("float64"), out["text"].numpy().astype("float64")
    h = 1e-5
    expected = (ref_clip(a, b, math.exp(1.5 + h)) - ref_clip(a, b, math.exp(1.5 - h))) / (2 * h)
    assert abs(expected) > 1e-3
    np.testing.assert_allclose(grad, expected, rtol=1e-4)


def test_fixed_temperature_is_not_trainable():
    layer = CoordinatedEmbedding(3, learn_logit_scale=False, logit_scale_init=0.0)
    out = layer({"image": IMAGE, "text": TEXT})
    assert not any(v is layer.log_logit_scale for v in layer.trainable_weights)
    np.testing.assert_allclose(out["logit_scale"].numpy(), 1.0)


@pytest.mark.slow  # convergence
def test_clip_training_aligns_two_noisy_views_of_a_latent():
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((712, 8))
    image = latent @ rng.standard_normal((8, 16)) + 0.3 * rng.standard_normal((712, 16))
    text = np.tanh(latent @ rng.standard_normal((8, 12))) + 0.1 * rng.standard_normal((712, 12))
    data = {"image": image.astype("float32"), "text": text.astype("float32")}
    train = {m: x[:512] for m, x in data.items()}
    test = {m: x[512:] for m, x in data.items()}

    inputs = {m: keras.Input((x.shape[1],), name=m) for m, x in data.items()}
    outputs = CoordinatedEmbedding(16, hidden_dims=(32,))(inputs)
    model = DualEncoder(inputs, outputs, contrastive=ClipLoss())
    model.compile(optimizer=keras.optimizers.Adam(3e-3))

    def recall_at_1():
        out = model.predict(test, batch_size=200, verbose=0)
        return retrieval_scores(out["image"], out["text"], ks=(1,))["recall@1"]

    before = recall_at_1()
    model.fit(train, batch_size=64, epochs=40, verbose=0)  # 320 steps
    after = recall_at_1()
    chance = 1 / 200
    # Measured: 0.01 before, 0.80 after (chance 0.005).
    assert after > 0.5 and after > 20 * chance and after > 5 * before, (before, after)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"embedding_dim": 4, "hidden_dims": (0,)}, "hidden_dims"),
        ({"embedding_dim": 4, "modalities": ["image", "image"]}, "distinct"),
        ({"embedding_dim": 4, "modalities": ["logit_scale", "text"]}, "logit_scale"),
        ({"embedding_dim": 4, "modalities": []}, "non-empty"),
        ({"embedding_dim": 4, "max_logit_scale": 0.0}, "max_logit_scale"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoordinatedEmbedding(**kwargs)


@pytest.mark.parametrize(
    ("inputs", "presence", "error", "match"),
    [
        ({"image": IMAGE}, None, ValueError, r"expected one input per modality"),
        (
            {"image": IMAGE, "text": TEXT[:, None]},
            None,
            ValueError,
            r"modality 'text' to be `\[batch, features\]`.*\(5, 1, 4\)",
        ),
        ({"image": IMAGE, "text": TEXT}, PRESENCE[:, :1], ValueError, r"\[batch, 2\].*\(5, 1\)"),
        ({"image": IMAGE, "text": TEXT.astype("int32")}, None, TypeError, "'text'.*int32"),
    ],
)
def test_bad_input_is_named(inputs, presence, error, match):
    with pytest.raises(error, match=match):
        CoordinatedEmbedding(4, modalities=["image", "text"])(inputs, presence=presence)
