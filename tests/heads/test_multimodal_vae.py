"""MultimodalVAE: its loss against a float64 numpy ELBO, missing modalities, mmdigits, tf.distribute.

The numpy reference re-derives every term from the model's weights alone: experts of
linear encoders, the closed-form product of Gaussians with the N(0, I) prior, a fixed
noise draw, linear decoders, and the Gaussian / Bernoulli / categorical log-likelihoods
and the Gaussian KL written out in float64.
"""

import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from mmrep.data import load_mmdigits
from mmrep.heads import MultimodalVAE
from mmrep.heads.vae.kl_annealing import annealed_layers
from tests.harness import two_device_strategy

KINDS = {"a": "gaussian", "b": "bernoulli", "c": "categorical"}
DIMS = {"a": 5, "b": 4, "c": 3}
LATENT = 3


class FixedNoiseVAE(MultimodalVAE):
    """Draws `z` with a noise array set by the test (`noise=None`: the posterior mean)."""

    noise = None

    def sample_latent(self, z_mean, z_log_var, training=False):
        if self.noise is None:
            return ops.cast(z_mean, "float32")
        return ops.cast(z_mean, "float32") + ops.exp(0.5 * z_log_var) * self.noise


def _linear_model(cls=FixedNoiseVAE, num_subsets=0, **kwargs):
    return cls(
        encoders={m: keras.layers.Dense(4, name=f"{m}_encoder") for m in KINDS},
        decoders={m: keras.layers.Dense(DIMS[m], name=f"{m}_decoder") for m in KINDS},
        reconstruction_losses=KINDS,
        latent_dim=LATENT,
        beta=0.5,
        num_subsets=num_subsets,
        reconstruction_weights={"c": 3.0},
        seed=1,
        **kwargs,
    )


def _data(batch=6, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "a": rng.standard_normal((batch, 5)).astype("float32"),
        "b": rng.uniform(size=(batch, 4)).astype("float32"),
        "c": np.eye(3, dtype="float32")[rng.integers(0, 3, batch)],
        "presence": np.array(
            [[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0], [0, 0, 1]][:batch], "float32"
        ),
    }


def _with_nan_in_absent(data):
    data = dict(data)
    for i, m in enumerate(KINDS):
        data[m] = data[m].copy()
        data[m][data["presence"][:, i] == 0] = np.nan
    return data


def _numpy_terms(model, data, subsets, noise):
    """Float64 negative-ELBO terms `[S, B]` from the weights, masks and noise."""
    w = {"/".join(v.path.split("/")[-2:]): v.numpy().astype("float64") for v in model.weights}

    def dense(x, name):
        return x @ w[f"{name}/kernel"] + w[f"{name}/bias"]

    presence = data["presence"].astype(bool)
    xs = {
        m: np.where(presence[:, [i]], data[m], 0.0).astype("float64") for i, m in enumerate(KINDS)
    }
    stats = np.stack([dense(dense(xs[m], f"{m}_encoder"), f"{m}_expert") for m in KINDS], 1)
    means, log_vars = stats[..., :LATENT], stats[..., LATENT:]
    recs, kls = [], []
    for s, subset in enumerate(subsets):
        precision = np.where(subset[..., None], np.exp(-log_vars), 0.0)
        total = 1.0 + precision.sum(1)
        z_mean, z_var = (precision * means).sum(1) / total, 1.0 / total
        z = z_mean + np.sqrt(z_var) * noise[s * len(z_mean) : (s + 1) * len(z_mean)]
        kls.append(0.5 * (z_var + z_mean**2 - 1.0 - np.log(z_var)).sum(1))
        rec = np.zeros(len(z))
        for i, m in enumerate(KINDS):
            out, x = dense(z, f"{m}_decoder"), xs[m]
            if KINDS[m] == "gaussian":
                nll = 0.5 * (np.log(2 * np.pi) + (x - out) ** 2).sum(1)
            elif KINDS[m] == "bernoulli":
                p = 1.0 / (1.0 + np.exp(-out))
                nll = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(1)
            else:
                log_p = out - np.log(np.exp(out).sum(1, keepdims=True))
                nll = -(x * log_p).sum(1)
            rec += np.where(subset[:, i], nll, 0.0) * model.reconstruction_weights[m]
        recs.append(rec)
    return np.array(recs), np.array(kls)


def test_elbo_terms_and_loss_match_a_float64_recomputation():
    data = _with_nan_in_absent(_data())
    model = _linear_model(num_subsets=2)
    model(data)
    num_subsets = 1 + 3 + 2
    noise = np.random.default_rng(5).standard_normal((num_subsets * 6, LATENT))
    model.noise = noise.astype("float32")
    terms = model.elbo_terms(data, training=True)
    subsets = ops.convert_to_numpy(terms["subsets"])
    presence = data["presence"].astype(bool)
    # Joint, then single modalities, then random subsets of what is present.
    np.testing.assert_array_equal(subsets[0], presence)
    for i in range(3):
        np.testing.assert_array_equal(subsets[1 + i], presence & (np.arange(3) == i))
    assert not np.any(subsets[4:] & ~presence)
    rec, kl = _numpy_terms(model, data, subsets, noise)
    np.testing.assert_allclose(ops.convert_to_numpy(terms["reconstruction"]), rec, rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(terms["kl"]), kl, rtol=1e-5, atol=1e-6)
    want = (rec + 0.5 * kl).sum(0)
    np.testing.assert_allclose(ops.convert_to_numpy(terms["loss"]), want, rtol=1e-5)
    # The example with nothing present contributes nothing at all.
    assert want[3] == 0.0

    deterministic = _linear_model(num_subsets=0)
    deterministic(data)
    deterministic.set_weights(model.get_weights())
    deterministic.noise = model.noise[: 4 * 6]
    loss = deterministic.compute_loss(data, None, deterministic(data), training=True)
    rec, kl = _numpy_terms(deterministic, data, subsets[:4], noise)
    np.testing.assert_allclose(float(loss), (rec + 0.5 * kl).sum(0).mean(), rtol=1e-5)


def test_absent_modalities_leave_no_reconstruction_term_and_no_gradient():
    data = _data()
    data["presence"][:, 0] = 0.0  # "a" absent everywhere
    model = _linear_model(cls=MultimodalVAE, num_subsets=1)
    model(data)
    state = model.seed_generator.state.numpy()
    grads, losses = [], []
    for filler in (np.nan, 7.0):
        filled = dict(data, a=np.full_like(data["a"], filler))
        model.seed_generator.state.assign(state)  # the same noise and subsets for both
        with tf.GradientTape() as tape:
            loss = model.compute_loss(filled, None, model(filled, training=True), training=True)
        losses.append(float(loss))
        grads.append(tape.gradient(loss, model.trainable_variables))
    assert np.isfinite(losses[0]) and losses[0] == losses[1]
    for variable, g_nan, g_seven in zip(model.trainable_variables, *grads, strict=True):
        g_nan, g_seven = ops.convert_to_numpy(g_nan), ops.convert_to_numpy(g_seven)
        assert np.all(np.isfinite(g_nan)), variable.path
        np.testing.assert_array_equal(g_nan, g_seven, err_msg=variable.path)
        if variable.path.split("/")[-2] in ("a_encoder", "a_expert", "a_decoder"):
            np.testing.assert_array_equal(g_nan, 0.0, err_msg=variable.path)
        else:
            assert np.any(g_nan != 0.0), variable.path


def test_one_fit_step_under_two_devices_equals_one_device():
    data = _data(batch=6)
    data = {k: np.concatenate([v, v[:2]]) for k, v in data.items()}  # batch 8
    single = _linear_model(num_subsets=0)
    single(data)
    start = single.get_weights()
    with two_device_strategy().scope():
        mirrored = _linear_model(num_subsets=0)
        mirrored(data)
    mirrored.set_weights(start)
    histories = []
    for model in (single, mirrored):
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        fit = model.fit(data, batch_size=8, epochs=1, shuffle=False, verbose=0)
        histories.append(fit.history["loss"][0])
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-5)
    for a, b, v in zip(mirrored.get_weights(), single.get_weights(), single.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=v.path)
    assert not all(np.array_equal(a, b) for a, b in zip(start, single.get_weights(), strict=True))


def test_config_and_keras_round_trip_and_annealing():
    data = _data()
    model = _linear_model(cls=MultimodalVAE, num_subsets=1)
    outputs = model(data)
    config = model.get_config()
    assert config["reconstruction_weights"] == {"a": 1.0, "b": 1.0, "c": 3.0}
    assert config["latent_dim"] == LATENT and config["num_subsets"] == 1 and config["seed"] == 1
    revived = MultimodalVAE.from_config(config)
    revived(data)
    revived.set_weights(model.get_weights())
    for key, value in revived(data).items():
        np.testing.assert_allclose(value, outputs[key], atol=1e-6, err_msg=key)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mvae.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    assert type(loaded) is MultimodalVAE and loaded.encoders["a"] is not model.encoders["a"]
    for key, value in loaded(data).items():
        np.testing.assert_allclose(value, outputs[key], atol=1e-6, err_msg=key)
    assert annealed_layers(model) == [model]
    assert float(model.kl_weight.numpy()) == 0.5


def test_bad_arguments_and_inputs():
    enc = {m: keras.layers.Dense(2) for m in ("x", "y")}
    dec = {m: keras.layers.Dense(2) for m in ("x", "y")}
    kinds = {"x": "gaussian", "y": "gaussian"}
    with pytest.raises(ValueError, match=r"`decoders`.*\['x', 'y'\].*Received: \['x'\]"):
        MultimodalVAE(enc, {"x": dec["x"]}, kinds, 2)
    with pytest.raises(ValueError, match=r"reconstruction_losses.*'poisson'"):
        MultimodalVAE(enc, dec, {"x": "gaussian", "y": "poisson"}, 2)
    with pytest.raises(ValueError, match="other than \\['presence'\\]"):
        MultimodalVAE({"presence": enc["x"]}, {"presence": dec["x"]}, {"presence": "gaussian"}, 2)
    with pytest.raises(ValueError, match=r"latent_dim.*Received: latent_dim=0"):
        MultimodalVAE(enc, dec, kinds, 0)
    model = MultimodalVAE(enc, {"x": keras.layers.Dense(5), "y": dec["y"]}, kinds, 2)
    x = np.zeros((2, 2), "float32")
    with pytest.raises(ValueError, match=r"one input per modality \['x', 'y'\].*\['x'\]"):
        model({"x": x})
    with pytest.raises(ValueError, match=r"presence.*\[batch, 2\].*\(2, 3\)"):
        model({"x": x, "y": x, "presence": np.ones((2, 3), "float32")})
    with pytest.raises(ValueError, match=r"decoder 'x' must output.*\(2,\).*Received: \(5,\)"):
        model.elbo_terms({"x": x, "y": x})
    with pytest.raises(ValueError, match="some of the modalities"):
        model.encode({"z": x})


# === Image + label on mmdigits (the MVAE paper's MNIST setting, on 8×8 digits) ===


def _mmdigits(split):
    data = load_mmdigits(split, modalities=("image",), image_size=8, as_numpy=True)
    images = data["image"][..., 0].reshape(len(data["label"]), -1).astype("float32") / 255.0
    return images, np.eye(10, dtype="float32")[data["label"]], data["label"]


def _mlp(width, out, name):
    return keras.Sequential(
        [keras.layers.Dense(width, activation="relu"), keras.layers.Dense(out)], name=name
    )


@pytest.mark.slow  # convergence
def test_image_label_model_classifies_and_generates_on_mmdigits():
    # Measured (seeds 0, 1, 2): image -> label test accuracy 0.856, 0.874, 0.874; the
    # largest ratio (distance of a label's generated image to its class mean) / (distance
    # to the nearest other class mean) over the 10 digits 0.30, 0.25, 0.34. ~12 s here.
    keras.utils.set_random_seed(0)
    images, labels, digits = _mmdigits("train")
    test_images, _, test_digits = _mmdigits("test")
    model = MultimodalVAE(
        encoders={"image": _mlp(128, 64, "image_net"), "label": _mlp(64, 64, "label_net")},
        decoders={"image": _mlp(128, 64, "image_decoder"), "label": _mlp(64, 10, "label_dec")},
        reconstruction_losses={"image": "bernoulli", "label": "categorical"},
        reconstruction_weights={"label": 20.0},
        latent_dim=8,
        seed=0,
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit({"image": images, "label": labels}, batch_size=64, epochs=40, verbose=0)

    predicted = model.generate({"image": test_images}, modalities=["label"])["label"]
    accuracy = np.mean(np.argmax(predicted, axis=1) == test_digits)
    assert accuracy > 0.75, f"image -> label accuracy {accuracy:.3f} (chance 0.1)"

    class_means = np.stack([images[digits == d].mean(0) for d in range(10)])
    generated = model.generate({"label": np.eye(10, dtype="float32")}, modalities=["image"])
    distances = np.linalg.norm(
        ops.convert_to_numpy(generated["image"])[:, None] - class_means[None], axis=-1
    )
    own = np.diag(distances)
    others = np.where(np.eye(10, dtype=bool), np.inf, distances).min(1)
    assert np.all(own < 0.6 * others), f"own-class distance {own}, nearest other {others}"


@pytest.mark.slow  # recipe run
def test_recipe_smoke(capsys):
    from tests.recipes import load_recipe

    recipe = load_recipe("mvae_mmdigits.py")
    results = recipe.main(["--smoke", "--missing-labels", "0.5", "--num-subsets", "1"])
    assert "image->label accuracy" in capsys.readouterr().out
    assert 0.0 <= results["image->label accuracy"] <= 1.0
    assert np.isfinite(results["joint ELBO (nats)"]) and results["joint ELBO (nats)"] < 0
