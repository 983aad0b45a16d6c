"""EBMGAN training: MirroredStrategy equals one device, replica noise, precision, XLA, a toy fit."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.heads.gan.ebm_gan import EBMGAN
from mmrep.heads.gan.gan_networks import dcgan_discriminator, dcgan_generator
from mmrep.heads.gan.replica_noise import global_batch_rows, replica_normal
from tests.harness import two_device_strategy

LATENT, DIM = 3, 5


def _mlp_gan(spectral_normalization=False, **kwargs):
    """Dense G and D (no batch normalisation, whose statistics are per replica), with L2
    kernel regularisers, so that layer losses are part of the distributed check."""
    regularizer = keras.regularizers.L2(0.01)

    def dense(units, **layer_kwargs):
        layer = keras.layers.Dense(units, kernel_regularizer=regularizer, **layer_kwargs)
        return keras.layers.SpectralNormalization(layer) if spectral_normalization else layer

    z_in, x_in = keras.Input((LATENT,)), keras.Input((DIM,))
    generator = keras.Model(z_in, dense(DIM)(dense(8, activation="tanh")(z_in)), name="g")
    discriminator = keras.Model(x_in, dense(1)(dense(8, activation="leaky_relu")(x_in)), name="d")
    return EBMGAN(generator, discriminator, seed=4, **kwargs)


def _fit(build, weights, data, strategy=None):
    """Two steps of 8 (global batch) from the given weights; returns (model, history)."""
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        model = build()
        model.set_weights(weights)
        model.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.05, momentum=0.5))
    history = model.fit(*data, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model, history.history


def _assert_same_training(build, data):
    start = build().get_weights()
    single, single_logs = _fit(build, start, data)
    mirrored, mirrored_logs = _fit(build, start, data, two_device_strategy())
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        np.testing.assert_allclose(mirrored_logs[key], single_logs[key], rtol=1e-5, err_msg=key)
    for w_m, w_s, variable in zip(
        mirrored.get_weights(), single.get_weights(), single.weights, strict=True
    ):
        np.testing.assert_allclose(
            w_m, w_s, rtol=1e-4, atol=1e-6, err_msg=f"{variable.path} differs from one device"
        )
    # The step changed the weights (so the comparison is not vacuous).
    assert not np.allclose(single.get_weights()[0], start[0])
    # Validation and sampling agree too.
    evaluated = [m.evaluate(*data, batch_size=8, verbose=0) for m in (single, mirrored)]
    np.testing.assert_allclose(evaluated[1], evaluated[0], rtol=1e-5)
    np.testing.assert_allclose(mirrored.sample(5, seed=2), single.sample(5, seed=2), rtol=1e-5)


RNG = np.random.default_rng(3)
X = RNG.normal(0.5, 1.0, (16, DIM)).astype("float32")
Z = RNG.standard_normal((16, LATENT)).astype("float32")


def test_mirrored_matches_single_device_least_squares_with_regularizers():
    _assert_same_training(
        lambda: _mlp_gan(
            generator_regularization=0.5,
            regularization_noise_std=0.2,
            gradient_penalty=0.3,
            discriminator_steps=2,
        ),
        (X, Z),
    )


def test_mirrored_matches_single_device_spectral_normalization():
    _assert_same_training(lambda: _mlp_gan(spectral_normalization=True, objective="hinge"), (X, Z))


def test_mirrored_matches_single_device_with_drawn_noise():
    # Without z the noise comes from the model's seed generator: each replica takes its rows
    # of one global-batch draw, so the two-replica run draws exactly one device's noise.
    _assert_same_training(lambda: _mlp_gan(generator_regularization=0.5), (X,))


def test_replicas_draw_different_noise():
    strategy = two_device_strategy()
    with strategy.scope():
        seed_generator = keras.random.SeedGenerator(9)

    @tf.function
    def draw(x):
        return replica_normal(global_batch_rows(x), (LATENT,), seed_generator)

    shards = strategy.experimental_local_results(strategy.run(draw, args=(tf.zeros((4, 1)),)))
    assert [tuple(s.shape) for s in shards] == [(4, LATENT), (4, LATENT)]
    first, second = (s.numpy() for s in shards)
    assert np.abs(first - second).min() > 0, "the two replicas drew the same noise"
    # Each replica holds its own rows of one global draw from the same seed state.
    global_draw = keras.random.normal((8, LATENT), seed=keras.random.SeedGenerator(9))
    np.testing.assert_array_equal(np.concatenate([first, second]), global_draw)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_fit(policy):
    keras.config.set_dtype_policy(policy)
    model = EBMGAN(
        dcgan_generator(4, output_shape=(8, 8, 1), widths=(4, 4)),
        dcgan_discriminator((8, 8, 1), widths=(4, 4)),
        generator_regularization=1.0,
        regularization_noise_std=0.1,
        gradient_penalty=1.0,
        seed=0,
    )
    model.compile()
    scaled = isinstance(model.discriminator_optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    x = RNG.uniform(-1, 1, (8, 8, 8, 1)).astype("float32")
    history = model.fit(x, batch_size=4, epochs=1, verbose=0).history
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert np.isfinite(history[key][0]), (key, history[key])
    assert all(v.dtype == "float32" for v in model.weights)
    assert np.all(np.isfinite(model.predict(x, verbose=0)))
    assert model.sample(3).dtype == np.float32


def test_jit_compile_matches_graph_step():
    data = (X, Z)
    start = _mlp_gan(spectral_normalization=True, gradient_penalty=0.3).get_weights()
    results = []
    for jit in (False, True):
        model = _mlp_gan(spectral_normalization=True, gradient_penalty=0.3)
        model.set_weights(start)
        model.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.05), jit_compile=jit)
        assert model.jit_compile is jit
        model.fit(*data, batch_size=8, shuffle=False, verbose=0)
        results.append(model.get_weights())
    for w_jit, w_graph in zip(results[1], results[0], strict=True):
        np.testing.assert_allclose(w_jit, w_graph, rtol=1e-4, atol=1e-6)


# === A toy distribution: a mixture of four Gaussians in 2-D ===

MODES = np.array([[2.0, 2.0], [-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0]])


def _nearest_mode(points):
    distances = np.linalg.norm(points[:, None, :] - MODES[None], axis=-1)
    return distances.min(axis=1), distances.argmin(axis=1)


@pytest.mark.parametrize(
    "kwargs", [{"objective": "hinge"}, {"objective": "energy", "gradient_penalty": 1.0}]
)
@pytest.mark.slow  # convergence
def test_toy_mixture_is_learned(kwargs):
    rng = np.random.default_rng(0)
    n = 128 * 800
    data = MODES[rng.integers(0, 4, n)] + 0.2 * rng.standard_normal((n, 2))

    def mlp(inputs, outputs, activation, name):
        x = keras.Input((inputs,))
        h = keras.layers.Dense(64, activation=activation)(x)
        h = keras.layers.Dense(64, activation=activation)(h)
        return keras.Model(x, keras.layers.Dense(outputs)(h), name=name)

    model = EBMGAN(mlp(4, 2, "relu", "g"), mlp(2, 1, "leaky_relu", "d"), seed=0, **kwargs)
    model.compile(
        keras.optimizers.Adam(2e-3, beta_1=0.0, beta_2=0.99),
        keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.99),
    )
    before, _ = _nearest_mode(model.sample(2000, seed=1))
    model.fit(data.astype("float32"), batch_size=128, epochs=1, verbose=0)
    after, mode = _nearest_mode(model.sample(2000, seed=1))
    # Data points lie 0.2·sqrt(pi/2) ≈ 0.25 from their mode on average.
    assert before.mean() > 1.5
    assert after.mean() < 0.6, f"mean distance to the nearest mode {after.mean():.3f}"
    share = np.bincount(mode, minlength=4) / len(mode)
    assert share.min() > 0.1, f"modes covered unevenly: {share}"
    uniform = rng.uniform(-4, 4, (2000, 2)).astype("float32")
    d_data = model.predict(data[:2000].astype("float32"), verbose=0).mean()
    assert d_data > model.predict(uniform, verbose=0).mean() + 0.2
