"""MultimodalAutoencoder against float64 numpy formulas, autodiff Jacobians and finite differences."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.fusion.autoencoder import MultimodalAutoencoder
from mmrep.fusion.autoencoder_corruption import corrupt, drop_modalities
from mmrep.fusion.autoencoder_penalties import antiderivative

RNG = np.random.default_rng(11)
IMAGE = RNG.standard_normal((6, 5))
TEXT = RNG.standard_normal((6, 3))
# Both, image only, text only, none, both, text only.
PRESENCE = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1], [0, 1]], "float32")
ORDER = ["image", "text"]


def inputs(dtype="float32", nan_absent=False):
    values = {"image": IMAGE.astype(dtype), "text": TEXT.astype(dtype)}
    if nan_absent:
        for i, m in enumerate(ORDER):
            values[m][PRESENCE[:, i] == 0] = np.nan
    return values


def act(name, a):
    return {
        None: lambda: a,
        "relu": lambda: np.maximum(a, 0.0),
        "sigmoid": lambda: 1.0 / (1.0 + np.exp(-a)),
        "tanh": lambda: np.tanh(a),
    }[name]()


def weights_of(layer):
    return {v.path.split("/")[-1]: np.asarray(v.numpy(), "float64") for v in layer.weights}


def reference(layer, x, presence, **cfg):
    """float64 numpy forward pass with the layer's weights: code and reconstructions."""
    w, hidden = weights_of(layer), cfg.get("activation", "relu")
    total = 0.0
    for i, m in enumerate(ORDER):
        on = presence[:, i : i + 1] > 0
        h = np.where(on, x[m].astype("float64"), 0.0)
        for j in range(len(cfg.get("encoder_units", ()))):
            h = act(hidden, h @ w[f"{m}_encoder_{j}_kernel"] + w[f"{m}_encoder_{j}_bias"])
        total = total + np.where(on, h @ w[f"{m}_to_code_kernel"], 0.0)
    count = np.maximum(presence.sum(1, keepdims=True), 1.0)
    scale = 1.0 / count if cfg.get("fusion", "mean") == "mean" else 1.0
    code = act(cfg.get("code_activation", "sigmoid"), total * scale + w["code_bias"])
    out = {"code": code}
    for m in ORDER:
        h = code
        for j in range(len(cfg.get("decoder_units", ()))):
            h = act(hidden, h @ w[f"{m}_decoder_{j}_kernel"] + w[f"{m}_decoder_{j}_bias"])
        kernel = w.get(f"{m}_output_kernel")
        kernel = w[f"{m}_to_code_kernel"].T if kernel is None else kernel
        out[f"{m}_reconstruction"] = act(
            cfg.get("output_activation"), h @ kernel + w[f"{m}_output_bias"]
        )
    return out


def reconstruction_loss(out, x, presence, weights):
    total = 0.0
    for i, m in enumerate(ORDER):
        target = np.where(presence[:, i : i + 1] > 0, x[m], 0.0)
        error = ((out[f"{m}_reconstruction"] - target) ** 2).mean(-1)
        total += weights.get(m, 1.0) * (error * presence[:, i]).mean()
    return total


CONFIGS = [
    {},
    {"fusion": "concat", "code_activation": "tanh", "output_activation": "sigmoid"},
    {"encoder_units": (4, 3), "decoder_units": (5,), "activation": "tanh"},
    {"encoder_units": (4,), "activation": "relu", "code_activation": "relu", "fusion": "concat"},
    {"tied_weights": True, "code_activation": None},
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_outputs_and_reconstruction_loss_match_float64_formula(cfg):
    layer = MultimodalAutoencoder(4, modalities=ORDER, reconstruction_weight={"text": 0.3}, **cfg)
    x = inputs(nan_absent=True)
    out = layer(x, presence=PRESENCE)
    expected = reference(layer, x, PRESENCE, **cfg)
    for key, value in expected.items():
        np.testing.assert_allclose(out[key].numpy(), value, rtol=1e-5, atol=1e-5, err_msg=key)
    # The example with no modality present gets the code of the bias alone.
    code_of_bias = act(cfg.get("code_activation", "sigmoid"), weights_of(layer)["code_bias"])
    np.testing.assert_allclose(out["code"].numpy()[3], code_of_bias, rtol=1e-6, atol=1e-6)
    (loss,) = layer.losses
    want = reconstruction_loss(expected, x, PRESENCE, {"text": 0.3})
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_absent_inputs_reach_neither_outputs_nor_gradients():
    layer = MultimodalAutoencoder(
        3,
        encoder_units=(4,),
        decoder_units=(4,),
        contractive_weight=0.5,
        sparsity="l1",
        modality_dropout=0.5,
        noise="gaussian",
        seed=2,
    )
    clean, poisoned = inputs(), inputs(nan_absent=True)
    poisoned_t = {m: tf.constant(v) for m, v in poisoned.items()}
    for training in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(list(poisoned_t.values()))
            out = layer(poisoned_t, presence=PRESENCE, training=training)
            loss = tf.add_n(layer.losses) + sum(tf.reduce_sum(v) for v in out.values())
        grads = tape.gradient(loss, [*poisoned_t.values(), *layer.trainable_variables])
        assert all(np.all(np.isfinite(v.numpy())) for v in out.values()), training
        assert all(np.all(np.isfinite(g.numpy())) for g in grads), training
        for i in range(len(ORDER)):  # no gradient flows into an absent input
            assert np.all(grads[i].numpy()[PRESENCE[:, i] == 0] == 0.0)
    # At inference, whatever an absent input holds changes nothing.
    a, b = layer(clean, presence=PRESENCE), layer(poisoned, presence=PRESENCE)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def test_without_presence_everything_is_present():
    layer = MultimodalAutoencoder(3)
    out = layer(inputs())
    expected = reference(layer, inputs(), np.ones((6, 2)))
    np.testing.assert_allclose(out["code"].numpy(), expected["code"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["l1", "kl"])
def test_sparsity_penalty_matches_float64_formula(kind):
    layer = MultimodalAutoencoder(4, sparsity=kind, sparsity_weight=0.7, sparsity_target=0.2)
    x = inputs()
    layer(x, presence=PRESENCE)
    h = reference(layer, x, PRESENCE)["code"]
    if kind == "l1":
        want = np.abs(h).sum(-1).mean()
    else:
        rho, rate = 0.2, h.mean(0)
        want = (rho * np.log(rho / rate) + (1 - rho) * np.log((1 - rho) / (1 - rate))).sum()
    np.testing.assert_allclose(float(layer.losses[1]), 0.7 * want, rtol=1e-5)


@pytest.mark.parametrize(
    "cfg",
    [
        {"code_activation": "sigmoid"},  # Rifai et al.'s closed form
        {"code_activation": "tanh", "fusion": "concat"},
        {"encoder_units": (4, 3), "activation": "tanh"},  # chain rule through a stack
        {"encoder_units": (5,), "activation": "softplus", "code_activation": "relu"},
    ],
    ids=["sigmoid", "tanh-concat", "deep-tanh", "deep-softplus-relu"],
)
def test_contractive_penalty_matches_autodiff_jacobian(cfg):
    layer = MultimodalAutoencoder(4, contractive_weight=0.3, dtype="float64", **cfg)
    x = {m: tf.constant(v) for m, v in inputs("float64").items()}
    layer(x, presence=PRESENCE)
    penalty = float(layer.losses[-1])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(list(x.values()))
        code = layer(x, presence=PRESENCE)["code"]
    squared = sum(
        np.sum(tape.batch_jacobian(code, x[m]).numpy() ** 2, axis=(1, 2)) * PRESENCE[:, i]
        for i, m in enumerate(ORDER)
    )
    assert squared.min() >= 0 and squared.max() > 0
    np.testing.assert_allclose(penalty, 0.3 * squared.mean(), rtol=1e-9)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "linear", "relu"])
@pytest.mark.parametrize("fusion", ["mean", "concat"])
def test_energy_gradient_is_reconstruction_minus_input(activation, fusion):
    layer = MultimodalAutoencoder(
        4, tied_weights=True, code_activation=activation, fusion=fusion, dtype="float64"
    )
    x = inputs("float64")
    out = layer(x, presence=PRESENCE)
    step = 1e-6
    for i, m in enumerate(ORDER):
        numeric = np.zeros_like(x[m])
        for d in range(x[m].shape[1]):
            up, down = dict(x), dict(x)
            up[m], down[m] = x[m].copy(), x[m].copy()
            up[m][:, d] += step
            down[m][:, d] -= step
            diff = layer.energy(up, PRESENCE).numpy() - layer.energy(down, PRESENCE).numpy()
            numeric[:, d] = diff / (2 * step)
        rows = PRESENCE[:, i] > 0
        expected = out[f"{m}_reconstruction"].numpy() - x[m]
        np.testing.assert_allclose(numeric[rows], expected[rows], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(numeric[~rows], 0.0)  # absent: left out of F


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "linear", "relu"])
def test_antiderivatives_differentiate_to_their_activation(activation):
    a = np.linspace(-6, 6, 121) + 0.05  # off the ReLU kink
    step = 1e-6
    slope = (
        antiderivative(activation, tf.constant(a + step)).numpy()
        - antiderivative(activation, tf.constant(a - step)).numpy()
    ) / (2 * step)
    np.testing.assert_allclose(
        slope, act(None if activation == "linear" else activation, a), atol=1e-7
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "tied weights"),
        ({"tied_weights": True, "output_activation": "sigmoid"}, "linear reconstructions"),
        ({"tied_weights": True, "code_activation": "softplus"}, "antiderivative.*softplus"),
    ],
)
def test_energy_is_refused_where_it_does_not_exist(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultimodalAutoencoder(3, **kwargs).energy(inputs())


def test_noise_corrupts_the_encoder_input_but_not_the_target():
    layer = MultimodalAutoencoder(3, noise="gaussian", noise_level=2.0, seed=4)
    x = inputs()
    out = layer(x, presence=PRESENCE, training=True)
    (loss,) = layer.losses
    clean_code = layer(x, presence=PRESENCE)["code"].numpy()
    present_rows = PRESENCE.sum(1) > 0
    assert np.abs(out["code"].numpy() - clean_code)[present_rows].min() > 0
    produced = {k: v.numpy().astype("float64") for k, v in out.items()}
    np.testing.assert_allclose(
        float(loss), reconstruction_loss(produced, x, PRESENCE, {}), rtol=1e-5
    )


def test_training_randomness_is_seeded_and_off_at_inference():
    def run(seed, training):
        layer = MultimodalAutoencoder(3, modality_dropout=0.5, noise="masking", seed=seed)
        layer.build({"image": (None, 5), "text": (None, 3)})
        layer.set_weights(reference_layer.get_weights())
        return layer(inputs(), presence=PRESENCE, training=training)["code"].numpy()

    reference_layer = MultimodalAutoencoder(3)
    reference_layer.build({"image": (None, 5), "text": (None, 3)})
    np.testing.assert_array_equal(run(1, True), run(1, True))
    assert not np.array_equal(run(1, True), run(2, True))
    np.testing.assert_array_equal(
        run(1, False), reference_layer(inputs(), presence=PRESENCE)["code"]
    )


def test_fit_trains_and_reports_reconstruction_metrics():
    image, text = keras.Input((5,), name="image"), keras.Input((3,), name="text")
    presence = keras.Input((2,), name="presence")
    layer = MultimodalAutoencoder(3, modality_dropout=0.3, seed=0, reconstruction_metrics=True)
    out = layer({"image": image, "text": text}, presence=presence)
    model = keras.Model({"image": image, "text": text, "presence": presence}, out)
    model.compile(keras.optimizers.Adam(0.05))
    feed = {**inputs(), "presence": PRESENCE}
    history = model.fit(feed, epochs=15, batch_size=6, verbose=0).history
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert {"image_reconstruction_error", "text_reconstruction_error"} <= set(history)
    assert all(np.isfinite(history["image_reconstruction_error"]))


def test_code_only_output_and_output_shapes():
    layer = MultimodalAutoencoder(3, return_reconstructions=False)
    code = layer(inputs(), presence=PRESENCE)
    assert tuple(code.shape) == (6, 3) and len(layer.losses) == 1
    shapes = MultimodalAutoencoder(2).compute_output_shape({"a": (None, 4), "b": (None, 7)})
    assert shapes == {
        "code": (None, 2),
        "a_reconstruction": (None, 4),
        "b_reconstruction": (None, 7),
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"code_dim": 0}, "code_dim"),
        ({"encoder_units": (4, -1)}, "encoder_units"),
        ({"fusion": "sum"}, "fusion"),
        ({"tied_weights": True, "encoder_units": (4,)}, "Tied weights need single-layer"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
        ({"noise": "salt"}, "noise"),
        ({"noise": "masking", "noise_level": 1.5}, "noise_level"),
        ({"sparsity": "kl", "code_activation": "relu"}, "code_activation='sigmoid'"),
        ({"sparsity": "kl", "sparsity_target": 0.0}, "sparsity_target"),
        ({"sparsity": "l2"}, "sparsity"),
        ({"contractive_weight": 1.0, "code_activation": "gelu"}, "contractive.*gelu"),
        ({"contractive_weight": -1.0}, "non-negative"),
        ({"activation": "no_such_activation"}, "activation"),
        ({"modalities": ["a", "a"]}, "distinct"),
        ({"modalities": ["a"], "reconstruction_weight": {"b": 1.0}}, r"unknown modalities \['b'\]"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultimodalAutoencoder(**{"code_dim": 3, **kwargs})


@pytest.mark.parametrize(
    ("call_inputs", "presence", "error", "match"),
    [
        ({"image": IMAGE}, None, ValueError, r"expected one input per modality"),
        (
            {"image": IMAGE, "text": IMAGE},
            None,
            ValueError,
            r"'text' of shape \[batch, 3\].*\(6, 5\)",
        ),
        (
            {"image": IMAGE, "text": TEXT},
            PRESENCE[:, :1],
            ValueError,
            r"`presence` of shape \[batch, 2\]",
        ),
        (
            {"image": IMAGE, "text": TEXT.astype("int32")},
            None,
            TypeError,
            "floating tensor for modality 'text'",
        ),
    ],
)
def test_bad_inputs_are_named(call_inputs, presence, error, match):
    layer = MultimodalAutoencoder(3, modalities=ORDER)
    layer(inputs())
    with pytest.raises(error, match=match):
        layer(call_inputs, presence=presence)


def test_modality_dropout_keeps_one_and_respects_the_rate():
    # 3 modalities; rows with 3, 2, 1 and 0 present, 6000 of each pattern.
    patterns = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0]], bool)
    present = np.repeat(patterns, 6000, axis=0)
    rate = 0.6
    kept = drop_modalities(tf.constant(present), rate, keras.random.SeedGenerator(5)).numpy()
    assert not np.any(kept & ~present), "a modality absent from the input was kept"
    assert np.all(kept.any(1) == present.any(1)), "an example lost all of its modalities"
    for pattern in patterns[:3]:
        rows = np.all(present == pattern, axis=1)
        n = pattern.sum()
        expected = rate - rate**n / n  # each dropped w.p. rate, one restored when all go
        for column in np.flatnonzero(pattern):
            dropped = 1.0 - kept[rows, column].mean()
            bound = 5 * np.sqrt(expected * (1 - expected) / rows.sum()) + 1e-9
            assert abs(dropped - expected) < bound, (pattern, column, dropped, expected)


def test_layer_modality_dropout_codes_come_from_a_nonempty_subset():
    rng = np.random.default_rng(0)
    x = {"image": rng.standard_normal((3000, 5)), "text": rng.standard_normal((3000, 3))}
    x = {m: v.astype("float32") for m, v in x.items()}
    layer = MultimodalAutoencoder(4, modality_dropout=0.5, seed=9)
    trained = layer(x, training=True)["code"].numpy()
    subsets = {
        "both": [1, 1],
        "image": [1, 0],
        "text": [0, 1],
        "none": [0, 0],
    }
    candidates = {
        k: layer(x, presence=np.tile(np.array(p, "float32"), (3000, 1)))["code"].numpy()
        for k, p in subsets.items()
    }
    distance = np.stack([np.abs(trained - c).max(1) for c in candidates.values()], 1)
    assert np.all(distance.min(1) < 1e-6), "a training code matches no subset of modalities"
    frequency = np.bincount(distance.argmin(1), minlength=4) / 3000
    # P(both) = 0.25; P(one only) = 0.25 + 0.25 / 2 each (the rescued half); never none.
    np.testing.assert_allclose(frequency, [0.25, 0.375, 0.375, 0.0], atol=0.04)


@pytest.mark.parametrize("noise", ["gaussian", "masking"])
def test_corruption_statistics(noise):
    x = np.full((400, 50), 3.0, "float32")
    out = corrupt(tf.constant(x), noise, 0.3, keras.random.SeedGenerator(8)).numpy()
    if noise == "gaussian":
        # 20,000 draws: 5 standard errors are 0.011 for the mean, 0.008 for the std.
        np.testing.assert_allclose((out - x).mean(), 0.0, atol=0.011)
        np.testing.assert_allclose((out - x).std(), 0.3, atol=0.008)
    else:
        assert set(np.unique(out)) == {0.0, 3.0}
        np.testing.assert_allclose((out == 0).mean(), 0.3, atol=0.016)  # 5 standard errors
