"""EBMGAN: objectives, one training step against a float64 NumPy reference, config, bad input.

Distributed, mixed-precision, XLA and toy-distribution training are in
test_ebm_gan_training.py.
"""

import json

import keras
import numpy as np
import pytest

from mmrep.heads.gan.ebm_gan import EBMGAN
from mmrep.heads.gan.gan_networks import dcgan_discriminator, dcgan_generator
from mmrep.heads.gan.gan_objectives import (
    OBJECTIVES,
    discriminator_loss_terms,
    ema_regularization_terms,
    generator_loss_terms,
    gradient_penalty_terms,
)

RNG = np.random.default_rng(7)

# Float64 references of the authors' formulas (apple/ml-afv losses.py) and the EBM bound.
D_LOSS = {
    "least_squares": lambda r, f: np.mean((r - 1) ** 2) + np.mean(f**2),
    "hinge": lambda r, f: np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f)),
    "energy": lambda r, f: -np.mean(r) + np.mean(f),
}
G_LOSS = {
    "least_squares": lambda f: np.mean((f - 1) ** 2),
    "hinge": lambda f: -np.mean(f),
    "energy": lambda f: -np.mean(f),
}
# d(per-example term)/d(score): (real, fake) for D, fake for G.
D_SLOPES = {
    "least_squares": lambda r, f: (2 * (r - 1), 2 * f),
    "hinge": lambda r, f: (-(r < 1).astype(float), (f > -1).astype(float)),
    "energy": lambda r, f: (-np.ones_like(r), np.ones_like(f)),
}
G_SLOPES = {
    "least_squares": lambda f: 2 * (f - 1),
    "hinge": lambda f: -np.ones_like(f),
    "energy": lambda f: -np.ones_like(f),
}


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objectives_match_numpy(objective):
    d_real, d_fake = RNG.normal(0.5, 1.5, 64), RNG.normal(-0.5, 1.5, 64)
    d_terms = discriminator_loss_terms(objective, d_real, d_fake)
    g_terms = generator_loss_terms(objective, d_fake)
    assert d_terms.shape == (64,) and g_terms.shape == (64,)
    np.testing.assert_allclose(np.mean(d_terms), D_LOSS[objective](d_real, d_fake), rtol=1e-5)
    np.testing.assert_allclose(np.mean(g_terms), G_LOSS[objective](d_fake), rtol=1e-5)


def test_ema_regularizer_is_the_mean_over_all_elements():
    fake, ema, noise = (RNG.standard_normal((5, 3, 4)) for _ in range(3))
    terms = ema_regularization_terms(fake, ema, noise)
    assert terms.shape == (5,)
    np.testing.assert_allclose(np.mean(terms), np.mean((fake - ema + noise) ** 2), rtol=1e-5)
    np.testing.assert_allclose(
        ema_regularization_terms(fake, ema), np.mean((fake - ema) ** 2, axis=(1, 2)), rtol=1e-5
    )


def test_gradient_penalty_matches_finite_differences():
    x_in = keras.Input((3,))
    h = keras.layers.Dense(4, activation="tanh")(x_in)
    score = keras.Model(x_in, keras.layers.Dense(1)(h))
    (w1, b1), (w2, b2) = (layer.get_weights() for layer in score.layers[1:])
    w1, b1, w2, b2 = (v.astype("float64") for v in (w1, b1, w2, b2))

    def d(x):  # float64 NumPy forward pass of the same network
        return (np.tanh(x @ w1 + b1) @ w2 + b2)[..., 0]

    x = RNG.standard_normal((5, 3))
    step = 1e-6
    grads = np.stack([(d(x + step * e) - d(x - step * e)) / (2 * step) for e in np.eye(3)], axis=-1)
    expected = 0.5 * 2.5 * np.sum(grads**2, axis=-1)
    scores, penalty = gradient_penalty_terms(
        lambda v: keras.ops.reshape(score(v), (-1,)), x.astype("float32"), 2.5
    )
    np.testing.assert_allclose(scores, d(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(penalty, expected, rtol=1e-4)


# === One train step against a NumPy reference (linear G and D, SGD) ===


def _linear_gan(latent=3, dim=4, **kwargs):
    z_in, x_in = keras.Input((latent,)), keras.Input((dim,))
    generator = keras.Model(z_in, keras.layers.Dense(dim)(z_in), name="g")
    discriminator = keras.Model(x_in, keras.layers.Dense(1)(x_in), name="d")
    return EBMGAN(generator, discriminator, **kwargs)


def _reference_step(params, x, z, objective, rho, gamma, decay, lr_d, lr_g, d_steps, g_steps):
    """Float64 NumPy: d_steps D updates, then g_steps G updates, each followed by the EMA."""
    w, b, wg, bg, we, be = (np.array(p, "float64") for p in params)
    batch, logs = len(x), {"d_loss": [], "g_loss": [], "d_real": [], "d_fake": []}
    for _ in range(d_steps):
        fake = z @ wg + bg
        real_s, fake_s = (x @ w + b)[:, 0], (fake @ w + b)[:, 0]
        logs["d_loss"].append(D_LOSS[objective](real_s, fake_s) + 0.5 * rho * np.sum(w**2))
        logs["d_real"].append(real_s.mean())
        logs["d_fake"].append(fake_s.mean())
        a, c = D_SLOPES[objective](real_s, fake_s)
        grad_w = (x.T @ a + fake.T @ c)[:, None] / batch + rho * w
        grad_b = np.array([np.sum(a + c) / batch])
        w, b = w - lr_d * grad_w, b - lr_d * grad_b
    for _ in range(g_steps):
        fake, target = z @ wg + bg, z @ we + be
        fake_s = (fake @ w + b)[:, 0]
        logs["g_loss"].append(G_LOSS[objective](fake_s) + gamma * np.mean((fake - target) ** 2))
        dim = fake.shape[1]
        upstream = (G_SLOPES[objective](fake_s)[:, None] * w[:, 0][None, :]) / batch
        upstream += gamma * 2 * (fake - target) / (batch * dim)
        wg, bg = wg - lr_g * z.T @ upstream, bg - lr_g * upstream.sum(0)
        we, be = decay * we + (1 - decay) * wg, decay * be + (1 - decay) * bg
    return (w, b, wg, bg, we, be), {k: np.mean(v) for k, v in logs.items()}


@pytest.mark.parametrize(
    "objective, rho, steps",
    [
        ("least_squares", 0.0, (1, 1)),
        ("least_squares", 0.7, (2, 2)),
        ("hinge", 0.0, (1, 1)),
        ("energy", 1.3, (1, 2)),
    ],
)
def test_train_step_matches_numpy_reference(objective, rho, steps):
    gamma, decay, lr_d, lr_g = 0.8, 0.75, 0.05, 0.03
    model = _linear_gan(
        objective=objective,
        gradient_penalty=rho,
        generator_regularization=gamma,
        ema_decay=decay,
        discriminator_steps=steps[0],
        generator_steps=steps[1],
    )
    # A moving average away from G, so that the regulariser has a gradient.
    model.ema_generator.set_weights(
        [v + RNG.normal(0, 0.3, v.shape) for v in model.generator.get_weights()]
    )
    x, z = RNG.normal(0.3, 1.0, (6, 4)), RNG.standard_normal((6, 3))
    start = (
        *model.discriminator.get_weights(),
        *model.generator.get_weights(),
        *model.ema_generator.get_weights(),
    )
    expected, expected_logs = _reference_step(
        start, x, z, objective, rho, gamma, decay, lr_d, lr_g, *steps
    )
    model.compile(keras.optimizers.SGD(lr_d), keras.optimizers.SGD(lr_g))
    history = model.fit(x.astype("float32"), z.astype("float32"), batch_size=6, verbose=0)
    got = (
        *model.discriminator.get_weights(),
        *model.generator.get_weights(),
        *model.ema_generator.get_weights(),
    )
    names = ("D kernel", "D bias", "G kernel", "G bias", "EMA kernel", "EMA bias")
    for name, a, e in zip(names, got, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6, err_msg=name)
    for key, value in expected_logs.items():
        np.testing.assert_allclose(history.history[key][0], value, rtol=1e-5, err_msg=key)


def test_layer_losses_of_the_networks_are_added():
    x_in, z_in = keras.Input((4,)), keras.Input((3,))
    regularizer = keras.regularizers.L2(0.1)
    discriminator = keras.Model(x_in, keras.layers.Dense(1, kernel_regularizer=regularizer)(x_in))
    generator = keras.Model(z_in, keras.layers.Dense(4, kernel_regularizer=regularizer)(z_in))
    model = EBMGAN(generator, discriminator, objective="energy")
    x, z = RNG.standard_normal((6, 4)), RNG.standard_normal((6, 3))
    (w, b), (wg, bg) = discriminator.get_weights(), generator.get_weights()
    fake_s = ((z @ wg + bg) @ w + b)[:, 0]
    d_loss = np.mean(fake_s) - np.mean((x @ w + b)[:, 0]) + 0.1 * np.sum(w**2)
    model.compile(keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.0))
    history = model.fit(x.astype("float32"), z.astype("float32"), batch_size=6, verbose=0)
    np.testing.assert_allclose(history.history["d_loss"][0], d_loss, rtol=1e-5)
    g_loss = -np.mean(fake_s) + 0.1 * np.sum(wg**2)
    np.testing.assert_allclose(history.history["g_loss"][0], g_loss, rtol=1e-5)


# === Inference, sampling, validation ===


def test_call_sample_generate_and_validation():
    model = _linear_gan(seed=3)
    model.ema_generator.set_weights([v + 1.0 for v in model.generator.get_weights()])
    x, z = RNG.standard_normal((5, 4)).astype("float32"), RNG.standard_normal((5, 3))
    (w, b), (we, be) = model.discriminator.get_weights(), model.ema_generator.get_weights()
    np.testing.assert_allclose(model.predict(x, verbose=0), (x @ w + b)[:, 0], rtol=1e-5)
    np.testing.assert_allclose(model.generate(z, batch_size=2), z @ we + be, rtol=1e-5)
    (wg, bg) = model.generator.get_weights()
    np.testing.assert_allclose(model.generate(z, use_ema=False), z @ wg + bg, rtol=1e-5)
    samples = model.sample(7, batch_size=3, seed=11)
    assert samples.shape == (7, 4)
    np.testing.assert_array_equal(samples, model.sample(7, seed=11))
    assert not np.allclose(samples, model.sample(7, seed=12))
    assert model.sample(0).shape == (0, 4)

    model.compile()
    logs = model.evaluate(x, z.astype("float32"), batch_size=5, verbose=0, return_dict=True)
    assert set(logs) == {"d_real", "d_fake"}
    np.testing.assert_allclose(logs["d_real"], np.mean(x @ w + b), rtol=1e-5)
    np.testing.assert_allclose(logs["d_fake"], np.mean((z @ we + be) @ w + b), rtol=1e-5)


def _json(config):
    return json.loads(json.dumps(config))


def test_config_and_keras_round_trip(tmp_path):
    model = EBMGAN(
        dcgan_generator(4, output_shape=(8, 8, 1), widths=(4, 4)),
        dcgan_discriminator((8, 8, 1), widths=(4, 4)),
        objective="hinge",
        generator_regularization=0.5,
        regularization_noise_std=0.1,
        gradient_penalty=1.0,
        seed=5,
        name="gan",
    )
    config = _json(model.get_config())
    assert config["objective"] == "hinge" and config["seed"] == 5
    assert _json(EBMGAN.from_config(model.get_config()).get_config()) == config

    x = RNG.uniform(-1, 1, (8, 8, 8, 1)).astype("float32")
    model.compile(keras.optimizers.Adam(1e-3), keras.optimizers.SGD(0.01))
    model.fit(x, batch_size=4, verbose=0)
    path = str(tmp_path / "gan.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, EBMGAN) and _json(loaded.get_config()) == config
    for net in ("generator", "discriminator", "ema_generator"):
        for a, e in zip(
            getattr(loaded, net).get_weights(), getattr(model, net).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, e, err_msg=net)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # The optimizers come back compiled, with their state (steps taken, slots).
    assert int(loaded.discriminator_optimizer.iterations) == 2
    assert type(loaded.generator_optimizer).__name__ == "SGD"
    loaded.fit(x, batch_size=4, verbose=0)


# === Bad input ===


def _nets(latent=3, g_out=4, d_in=4, d_out=1):
    z_in, x_in = keras.Input((latent,)), keras.Input((d_in,))
    return (
        keras.Model(z_in, keras.layers.Dense(g_out)(z_in)),
        keras.Model(x_in, keras.layers.Dense(d_out)(x_in)),
    )


def test_bad_networks():
    with pytest.raises(ValueError, match=r"generator's output shape \(None, 5\).*\(None, 4\)"):
        EBMGAN(*_nets(g_out=5))
    with pytest.raises(ValueError, match=r"one score per example.*\(None, 3\)"):
        EBMGAN(*_nets(d_out=3))
    with pytest.raises(ValueError, match="`generator` to be a built functional"):
        EBMGAN(keras.layers.Dense(4), _nets()[1])
    image_in = keras.Input((4, 4))
    with pytest.raises(ValueError, match="latent vectors"):
        EBMGAN(keras.Model(image_in, keras.layers.Dense(4)(image_in)), _nets()[1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"objective": "wasserstein"}, "objective"),
        ({"generator_regularization": -1.0}, "generator_regularization"),
        ({"regularization_noise_std": -0.1}, "regularization_noise_std"),
        ({"gradient_penalty": -2.0}, "gradient_penalty"),
        ({"ema_decay": 1.5}, "ema_decay"),
        ({"discriminator_steps": 0}, "discriminator_steps"),
        ({"generator_steps": 1.5}, "generator_steps"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"Expected `{message}`.*Received"):
        EBMGAN(*_nets(), **kwargs)


def test_bad_training_input():
    model = EBMGAN(*_nets())
    with pytest.raises(ValueError, match="the same object"):
        optimizer = keras.optimizers.SGD()
        model.compile(optimizer, optimizer)
    with pytest.raises(ValueError, match="losses and metrics are fixed"):
        model.compile(loss="mse")
    model.compile()
    x = np.zeros((4, 4), "float32")
    with pytest.raises(ValueError, match=r"noise `z` of shape \[B, 3\]"):
        model.fit(x, np.zeros((4, 2), "float32"), verbose=0)
    with pytest.raises(ValueError, match=r"data of shape \[B, 4\]"):
        model.fit(np.zeros((4, 5), "float32"), verbose=0)
    with pytest.raises(ValueError, match="sample weights"):
        model.fit(x, np.zeros((4, 3), "float32"), sample_weight=np.ones(4), verbose=0)
    with pytest.raises(ValueError, match=r"`z` of shape \[N, 3\]"):
        model.generate(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(-1)
