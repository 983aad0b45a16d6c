"""AdversarialFisherVector against analytic Fisher scores and a float64 NumPy reference.

References:
- A Gaussian energy `D_θ(x) = −½ Σ_d (x_d − μ_d)² e^{−s_d}` (θ = (μ, s), s the log
  variance) has the tractable normaliser `log Z = ½ Σ_d (s_d + log 2π)`, so
  `∇θ log p(x) = [(x − μ) e^{−s}, ½((x − μ)² e^{−s} − 1)]`, `E_p[∇θ D] = [0, ½]` and the
  diagonal Fisher information is `[e^{−s}, ½]`. Its "generator" is exact sampling from
  N(μ, e^s). Monte Carlo tolerances are 5 standard errors, from the moments of u ~ N(0, 1):
  Var(u²) = 2, Var((u² − 1)²/4) = 3.5.
- For the conv discriminator: per-example gradients from a `tape.gradient` loop written
  here, their float64 mean and variance (`np.mean`, `np.var`), and the subset, count
  sketch, signed square root and L2 normalisation applied in NumPy.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from mmrep.heads import AdversarialFisherVector
from mmrep.heads.gan.random_projection import count_sketch
from tests.heads.afv_cases import conv_discriminator

Z = 5.0  # tolerance in standard errors


class GaussianEnergy(keras.layers.Layer):
    """`D(x) = −½ Σ_d (x_d − μ_d)² exp(−s_d)`: a diagonal Gaussian's log density + log Z."""

    def __init__(self, mean, log_var, **kwargs):
        super().__init__(dtype="float64", **kwargs)
        self.mean, self.log_var = (np.asarray(v, "float64") for v in (mean, log_var))

    def build(self, input_shape):
        self.mu = self.add_weight(shape=self.mean.shape, initializer="zeros", name="mu")
        self.s = self.add_weight(shape=self.mean.shape, initializer="zeros", name="s")
        self.mu.assign(self.mean)
        self.s.assign(self.log_var)

    def call(self, x):
        return -0.5 * ops.sum(ops.square(x - self.mu) * ops.exp(-self.s), axis=-1)


MU, LOG_VAR = np.array([0.5, -1.0, 2.0]), np.log([1.0, 0.5, 2.0])
N_ADAPT = N_TEST = 20_000


def gaussian_samples(n, seed):
    rng = np.random.default_rng(seed)
    return MU + np.exp(LOG_VAR / 2) * rng.standard_normal((n, len(MU)))


@pytest.fixture(scope="module")
def gaussian_afv():
    model = keras.Sequential([keras.Input((3,), dtype="float64"), GaussianEnergy(MU, LOG_VAR)])
    afv = AdversarialFisherVector(model, batch_size=5000)
    afv.adapt(gaussian_samples(N_ADAPT, seed=0), verbose=0)
    return afv


def test_gaussian_mean_score_and_fisher_match_the_analytic_values(gaussian_afv):
    inv_var = np.exp(-LOG_VAR)
    expected_mean = np.concatenate([np.zeros(3), np.full(3, 0.5)])
    mean_se = np.concatenate([np.sqrt(inv_var / N_ADAPT), np.full(3, np.sqrt(0.5 / N_ADAPT))])
    np.testing.assert_array_less(
        np.abs(gaussian_afv.mean_score.numpy() - expected_mean), Z * mean_se
    )
    expected_fisher = np.concatenate([inv_var, np.full(3, 0.5)])
    fisher_se = np.concatenate([inv_var * np.sqrt(2 / N_ADAPT), np.full(3, np.sqrt(3.5 / N_ADAPT))])
    np.testing.assert_array_less(
        np.abs(gaussian_afv.fisher_information.numpy() - expected_fisher), Z * fisher_se
    )


def test_gaussian_score_equals_the_analytic_gradient_of_log_p(gaussian_afv):
    x = gaussian_samples(6, seed=1) + np.array([[0.0], [1.0], [-2.0], [0.5], [3.0], [-1.0]])
    v = np.asarray(gaussian_afv(x), "float64")
    fisher = gaussian_afv.fisher_information.numpy().astype("float64")
    u = v * np.sqrt(fisher + gaussian_afv.epsilon)  # the layer's U_x = ∇D(x) − mean score
    inv_var = np.exp(-LOG_VAR)
    analytic = np.concatenate(
        [(x - MU) * inv_var, 0.5 * ((x - MU) ** 2 * inv_var - 1.0)], axis=1
    )  # ∇θ D(x) − ∇θ log Z
    mean_se = np.concatenate([np.sqrt(inv_var / N_ADAPT), np.full(3, np.sqrt(0.5 / N_ADAPT))])
    # U_x − ∇ log p(x) = E[∇D] − (estimated mean score): the mean's MC error, plus float32.
    np.testing.assert_array_less(np.abs(u - analytic), Z * mean_se + 1e-5 * np.abs(analytic) + 1e-6)
    # ∇θ D(x) itself is exact up to float32 rounding.
    grad_d = u + gaussian_afv.mean_score.numpy()
    np.testing.assert_allclose(grad_d, analytic + [0, 0, 0, 0.5, 0.5, 0.5], rtol=1e-5, atol=1e-5)


def test_mean_afv_under_the_models_own_samples_is_zero(gaussian_afv):
    v = gaussian_afv.transform(gaussian_samples(N_TEST, seed=2))
    assert v.shape == (N_TEST, 6) and v.dtype == np.float32
    # V has unit variance per coordinate; its mean over fresh samples is off by the error of
    # the estimated mean score (1/N_ADAPT) and its own (1/N_TEST).
    np.testing.assert_array_less(np.abs(v.mean(axis=0)), Z * np.sqrt(1 / N_ADAPT + 1 / N_TEST))
    # Unit variance: the kurtosis of u is 3 (μ coordinates) and of (u² − 1)/√2 is 15.
    kurtosis = np.array([3.0] * 3 + [15.0] * 3)
    se = np.sqrt((kurtosis - 1) / N_TEST) + np.sqrt((kurtosis - 1) / N_ADAPT)
    np.testing.assert_array_less(np.abs(v.var(axis=0) - 1.0), Z * se)


# === The conv discriminator against a NumPy reference ===


def loop_gradients(model, x, variables=None):
    variables = variables or model.trainable_weights
    rows = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            y = model(x[i : i + 1], training=False)[0, 0]
        grads = tape.gradient(y, variables)
        rows.append(np.concatenate([np.asarray(g, "float64").ravel() for g in grads]))
    return np.stack(rows)


def images(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 6, 6, 2)).astype("float32")


@pytest.fixture(scope="module")
def conv_setup():
    d = conv_discriminator()
    samples, x = images(40, 10), images(5, 11)
    g_samples = loop_gradients(d, samples)
    mean, fisher = g_samples.mean(axis=0), g_samples.var(axis=0)
    reference = (loop_gradients(d, x) - mean) / np.sqrt(fisher + 1e-8)
    return d, samples, x, mean, fisher, reference


def test_adapt_and_call_match_the_numpy_reference(conv_setup):
    d, samples, x, mean, fisher, reference = conv_setup
    afv = AdversarialFisherVector(d, batch_size=6)
    afv.adapt(samples, batch_size=16, verbose=0)  # 16 + 16 + 8, chunks of 6 inside
    np.testing.assert_allclose(afv.mean_score.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(afv.fisher_information.numpy(), fisher, rtol=1e-4, atol=1e-7)
    out = afv(x)
    assert out.dtype == tf.float32 and tuple(out.shape) == (5, 85)
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(afv.transform(x, batch_size=2), reference, rtol=1e-4, atol=1e-4)


def test_subset_is_seeded_sorted_and_selects_those_coordinates(conv_setup):
    d, _, x, mean, fisher, reference = conv_setup

    def layer(seed):
        afv = AdversarialFisherVector(d, subset_size=20, seed=seed)
        afv.build((None, 6, 6, 2))
        afv.set_statistics(mean, fisher)
        return afv

    a, b, c = layer(3), layer(3), layer(4)
    indices = a.subset_indices.numpy()
    expected = np.sort(np.random.default_rng(3).choice(85, 20, replace=False))
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(b.subset_indices.numpy(), indices)
    assert not np.array_equal(c.subset_indices.numpy(), indices)
    np.testing.assert_allclose(a(x), reference[:, indices], rtol=1e-4, atol=1e-4)
    assert a.compute_output_shape((None, 6, 6, 2)) == (None, 20)


def test_projection_power_l2_match_a_numpy_count_sketch(conv_setup):
    d, _, x, mean, fisher, reference = conv_setup
    afv = AdversarialFisherVector(
        d, projection_dim=16, seed=5, power_normalize=True, l2_normalize=True,
        statistics={"mean_score": mean, "fisher_information": fisher},
    )  # fmt: skip
    out = np.asarray(afv(x))
    buckets, signs = afv.sketch_buckets.numpy(), afv.sketch_signs.numpy()
    sketch = np.zeros((len(x), 16))
    for j in range(85):
        sketch[:, buckets[j]] += signs[j] * reference[:, j]
    expected = np.sign(sketch) * np.sqrt(np.abs(sketch))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert out.shape == (5, 16)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    same, other = count_sketch(85, 16, 5), count_sketch(85, 16, 6)
    np.testing.assert_array_equal(buckets, same[0])
    np.testing.assert_array_equal(signs, same[1])
    assert not np.array_equal(buckets, other[0])


def test_count_sketch_preserves_inner_products_on_average():
    rng = np.random.default_rng(0)
    dim, width, seeds = 200, 16, 400
    a = 1.0 + rng.normal(size=dim)  # non-zero means: a sketch without signs is biased
    b = a + rng.normal(size=dim)

    def project(v, buckets, signs):
        out = np.zeros(width)
        np.add.at(out, buckets, signs * v)
        return out

    signed, unsigned = [], []
    for seed in range(seeds):
        buckets, signs = count_sketch(dim, width, seed)
        signed.append(project(a, buckets, signs) @ project(b, buckets, signs))
        ones = np.ones(dim)
        unsigned.append(project(a, buckets, ones) @ project(b, buckets, ones))
    signed, unsigned, exact = np.array(signed), np.array(unsigned), a @ b
    se = signed.std() / np.sqrt(seeds)
    assert abs(signed.mean() - exact) < Z * se, (signed.mean(), exact, se)
    # The same test catches a sketch without random signs (the test can fail).
    assert abs(unsigned.mean() - exact) > Z * unsigned.std() / np.sqrt(seeds)


def test_the_discriminator_is_shared_frozen_and_read_live(conv_setup):
    d, _, x, mean, fisher, _ = conv_setup
    d = keras.models.clone_model(d)
    d.set_weights(conv_setup[0].get_weights())
    afv = AdversarialFisherVector(d, statistics={"mean_score": mean, "fisher_information": fisher})
    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        out = afv(xt)
        loss = tf.reduce_sum(out * np.random.default_rng(0).normal(size=out.shape))
    assert all(g is None for g in tape.gradient(loss, d.trainable_weights))
    grad_x = tape.gradient(loss, xt).numpy()
    assert np.isfinite(grad_x).all() and np.abs(grad_x).max() > 0
    own = [w for w in afv.trainable_weights if not any(w is v for v in d.weights)]
    assert own == [] and d.trainable and len(d.trainable_weights) == 4
    # New discriminator weights are seen by the next call, without re-creating anything.
    kernel = d.get_layer("conv").kernel
    kernel.assign(kernel * 1.5)
    expected = (loop_gradients(d, x) - mean) / np.sqrt(fisher + 1e-8)
    np.testing.assert_allclose(afv(x), expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(out, expected, atol=1e-2)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_float32_statistics_and_outputs_under_mixed_precision(conv_setup, policy):
    d, samples, x, *_ = conv_setup
    reference = AdversarialFisherVector(d)
    reference.adapt(samples, verbose=0)
    keras.config.set_dtype_policy(policy)  # restored by the conftest fixture
    mixed = AdversarialFisherVector(d)
    mixed.adapt(samples, verbose=0)
    assert mixed.dtype_policy.name == policy
    np.testing.assert_allclose(mixed.fisher_information, reference.fisher_information, rtol=1e-5)
    out = mixed(x)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out, reference(x), rtol=1e-5, atol=1e-5)


def test_keras_save_keeps_adapted_statistics(conv_setup, tmp_path):
    d, samples, x, *_ = conv_setup
    afv = AdversarialFisherVector(d, subset_size=30, seed=2)
    afv.adapt(samples, verbose=0)
    model = keras.Sequential([keras.Input((6, 6, 2)), afv])
    expected = model(x)
    model.save(tmp_path / "afv.keras")
    reloaded = keras.models.load_model(tmp_path / "afv.keras")
    np.testing.assert_allclose(reloaded(x), expected, rtol=1e-6, atol=1e-6)
    layer = reloaded.layers[-1]
    assert isinstance(layer, AdversarialFisherVector) and layer.statistics is None
    np.testing.assert_array_equal(layer.mean_score.numpy(), afv.mean_score.numpy())
