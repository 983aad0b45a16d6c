"""FisherVector against scikit-image and a float64 numpy VLFeat reference; masks; gradients.

References: `skimage.feature.fisher_vector` on the same sklearn diagonal `GaussianMixture`
(it prepends the K weight terms, its variance block has the opposite sign to
Sánchez/VLFeat, and its improved L2 norm includes the weight terms), and `fisher_reference`
below, a direct float64 transcription of the VLFeat formulas (broadcast `[N, K, D]`, no
expansion of the squares) used for the improved vector and for finite differences.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp, softmax
from skimage.feature import fisher_vector as skimage_fisher_vector
from sklearn.mixture import GaussianMixture

from mmrep.heads import FisherVector

LOG_2PI = np.log(2 * np.pi)


def fisher_reference(x, weights, means, variances, improved=True, include_weights=False):
    """Float64 Fisher vector of one set `x` [N, D] (Sánchez et al. 2013; VLFeat docs)."""
    x, weights, means, variances = (
        np.asarray(a, np.float64) for a in (x, weights, means, variances)
    )
    k, d = means.shape
    if len(x) == 0:
        return np.zeros(2 * k * d + (k if include_weights else 0))
    diff = x[:, None, :] - means[None]  # [N, K, D]
    log_joint = np.log(weights) - 0.5 * (
        np.sum(diff**2 / variances, -1) + np.sum(np.log(variances), -1) + d * LOG_2PI
    )
    gamma = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    u = diff / np.sqrt(variances)
    n = len(x)
    g_mu = np.einsum("nk,nkd->kd", gamma, u) / (n * np.sqrt(weights)[:, None])
    g_sigma = np.einsum("nk,nkd->kd", gamma, u**2 - 1) / (n * np.sqrt(2 * weights)[:, None])
    blocks = [g_mu.ravel(), g_sigma.ravel()]
    if include_weights:
        blocks.insert(0, (gamma - weights).sum(0) / (n * np.sqrt(weights)))
    fv = np.concatenate(blocks)
    if improved:
        fv = np.sign(fv) * np.sqrt(np.abs(fv))
        fv = fv / np.linalg.norm(fv)
    return fv


def skimage_in_our_layout(x, gmm, improved, include_weights):
    """scikit-image's Fisher vector mapped to the Sánchez/VLFeat layout and signs."""
    k, d = gmm.means_.shape
    ref = skimage_fisher_vector(x, gmm, improved=improved)
    alpha, mu, sigma = ref[:k], ref[k : k + k * d], -ref[k + k * d :]
    if include_weights:
        return np.concatenate([alpha, mu, sigma])
    fv = np.concatenate([mu, sigma])
    # skimage's improved norm includes the weight terms; renormalise without them.
    return fv / np.linalg.norm(fv) if improved else fv


def fitted_gmm(k, d, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    data = offset + centres[rng.integers(0, k, 50 * k)] + rng.normal(0, 1, (50 * k, d))
    gmm = GaussianMixture(k, covariance_type="diag", random_state=seed, max_iter=20).fit(data)
    return gmm, data


def layer_for(gmm, **kwargs):
    layer = FisherVector(gmm.n_components, **kwargs)
    layer.set_gmm(gmm.weights_, gmm.means_, gmm.covariances_)
    return layer


def relative_error(actual, expected):
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


@pytest.mark.parametrize("k, d, n", [(2, 3, 7), (5, 8, 60), (16, 12, 300)])
@pytest.mark.parametrize("improved", [True, False])
@pytest.mark.parametrize("include_weights", [True, False])
def test_matches_skimage(k, d, n, improved, include_weights):
    gmm, data = fitted_gmm(k, d, seed=k)
    rng = np.random.default_rng(1)
    sets = np.stack([data[rng.integers(0, len(data), n)] for _ in range(3)])
    layer = layer_for(gmm, improved=improved, include_weights=include_weights)
    out = np.asarray(layer(sets.astype("float32")))
    assert out.shape == (3, 2 * k * d + (k if include_weights else 0))
    for actual, x in zip(out, sets, strict=True):
        expected = skimage_in_our_layout(x, gmm, improved, include_weights)
        assert relative_error(actual, expected) <= 1e-4


@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_improved_matches_float64_vlfeat_formulas(offset):
    # An unfitted mixture (unequal weights, spread variances) and descriptors far from the
    # origin, where expanding (x - mu)^2 in float32 would lose digits without centring.
    rng = np.random.default_rng(7)
    k, d = 6, 10
    weights = rng.dirichlet(np.ones(k) * 2)
    means = offset + rng.normal(0, 2, (k, d))
    variances = rng.uniform(0.3, 3.0, (k, d))
    x = offset + rng.normal(0, 2, (4, 50, d))
    layer = FisherVector(k, include_weights=True)
    layer.set_gmm(weights, means, variances)
    out = np.asarray(layer(x.astype("float32")))
    for actual, xs in zip(out, x.astype("float32"), strict=True):
        expected = fisher_reference(xs, weights, means, variances, include_weights=True)
        assert relative_error(actual, expected) <= 1e-4


def test_padding_changes_nothing_and_empty_set_is_zero():
    gmm, data = fitted_gmm(3, 4)
    layer = layer_for(gmm, include_weights=True)
    rng = np.random.default_rng(2)
    sizes = [7, 3, 0, 10]
    padded = np.full((4, 10, 4), np.nan, "float32")
    mask = np.zeros((4, 10), bool)
    for i, size in enumerate(sizes):
        padded[i, :size] = data[rng.integers(0, len(data), size)]
        mask[i, :size] = True
    out = np.asarray(layer(padded, mask=mask))
    assert np.all(np.isfinite(out))
    for i, size in enumerate(sizes):
        if size == 0:
            np.testing.assert_array_equal(out[i], 0.0)
        else:
            alone = np.asarray(layer(padded[i : i + 1, :size]))[0]
            np.testing.assert_allclose(out[i], alone, rtol=1e-5, atol=1e-7)
    # Numeric masks read the same as bool ones.
    numeric = np.asarray(layer(padded, mask=mask.astype("float32")))
    np.testing.assert_array_equal(numeric, out)


def test_gradients_ignore_padding_and_empty_sets():
    gmm, data = fitted_gmm(3, 4)
    layer = FisherVector(3, trainable_gmm=True)
    layer.set_gmm(gmm.weights_, gmm.means_, gmm.covariances_)
    x = np.full((2, 5, 4), np.nan, "float32")
    x[0, :3] = data[:3]
    mask = np.zeros((2, 5), "float32")
    mask[0, :3] = 1
    x = tf.constant(x)
    readout = tf.constant(np.random.default_rng(0).standard_normal((2, 24)), "float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x, mask=mask) * readout)
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    for g in grads:
        assert np.all(np.isfinite(tf.convert_to_tensor(g).numpy()))
    np.testing.assert_array_equal(grads[0].numpy()[0, 3:], 0.0)
    np.testing.assert_array_equal(grads[0].numpy()[1], 0.0)
    assert np.any(grads[0].numpy()[0, :3] != 0)


@pytest.mark.parametrize("improved", [True, False])
def test_gradients_match_float64_finite_differences(improved):
    """Autodiff of the float32 layer vs central differences of the float64 reference."""
    rng = np.random.default_rng(5)
    k, d, n = 3, 2, 6
    x = rng.normal(0, 1.5, (n, d))
    logits = rng.normal(0, 0.5, k)
    means = rng.normal(0, 1, (k, d))
    log_var = rng.normal(0, 0.3, (k, d))
    width = 2 * k * d + k
    readout = rng.standard_normal(width)

    def loss64(x, logits, means, log_var):
        fv = fisher_reference(
            x, softmax(logits), means, np.exp(log_var), improved=improved, include_weights=True
        )
        return float(fv @ readout)

    params = [x, logits, means, log_var]
    expected = []
    for i, p in enumerate(params):
        grad = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            step = 1e-6
            plus = [q.copy() for q in params]
            minus = [q.copy() for q in params]
            plus[i][idx] += step
            minus[i][idx] -= step
            grad[idx] = (loss64(*plus) - loss64(*minus)) / (2 * step)
        expected.append(grad)

    layer = FisherVector(k, improved=improved, include_weights=True, trainable_gmm=True)
    layer.build((None, None, d))
    layer.mixture_logits.assign(logits.astype("float32"))
    layer.means.assign(means.astype("float32"))
    layer.log_variances.assign(log_var.astype("float32"))
    xt = tf.constant(x[None], "float32")
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(layer(xt) * tf.constant(readout, "float32"))
    np.testing.assert_allclose(loss.numpy(), loss64(*params), rtol=1e-4)
    variables = [layer.mixture_logits, layer.means, layer.log_variances]
    actual = tape.gradient(loss, [xt, *variables])
    for name, a, e in zip(["x", "logits", "means", "log_var"], actual, expected, strict=True):
        a = tf.convert_to_tensor(a).numpy().reshape(e.shape)
        scale = np.max(np.abs(e))
        np.testing.assert_allclose(a, e, rtol=1e-3, atol=1e-3 * scale, err_msg=name)


def test_external_mixture_equals_set_gmm_and_carries_gradients():
    gmm, data = fitted_gmm(4, 3)
    x = data[:40].reshape(2, 20, 3).astype("float32")
    own = layer_for(gmm, include_weights=True)
    mixture = {
        "weights": tf.Variable(gmm.weights_.astype("float32")),
        "means": tf.Variable(gmm.means_.astype("float32")),
        "variances": tf.Variable(gmm.covariances_.astype("float32")),
    }
    external = FisherVector(4, include_weights=True, external_mixture=True)
    assert external.weights == []
    readout = tf.constant(np.random.default_rng(0).standard_normal((2, 28)), "float32")
    with tf.GradientTape() as tape:
        out = external(x, mixture={k: tf.convert_to_tensor(v) for k, v in mixture.items()})
        loss = tf.reduce_sum(out * readout)
    np.testing.assert_allclose(out.numpy(), own(x).numpy(), rtol=1e-5, atol=1e-6)
    grads = tape.gradient(loss, list(mixture.values()))
    # The same gradient as through the trainable weights of a layer holding this mixture.
    trainable = layer_for(gmm, include_weights=True, trainable_gmm=True)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(trainable(x) * readout)
    means_grad = tape.gradient(loss, trainable.means)
    np.testing.assert_allclose(grads[1].numpy(), means_grad.numpy(), rtol=1e-4, atol=1e-5)
    for g in grads:
        assert g is not None and np.all(np.isfinite(g.numpy())) and np.any(g.numpy() != 0)


def test_float16_inputs_use_float32_statistics():
    gmm, data = fitted_gmm(3, 4, offset=300.0)  # x^2 ~ 9e4 overflows float16
    x = data[:60].reshape(3, 20, 4).astype("float16")
    reference = np.asarray(layer_for(gmm)(x.astype("float32")))
    layer = FisherVector(3, dtype="mixed_float16")
    layer.set_gmm(gmm.weights_, gmm.means_, gmm.covariances_)
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert all(v.dtype == "float32" for v in layer.weights)
    out = np.asarray(out, "float32")
    assert np.all(np.isfinite(out))
    # The same float16 descriptors in float32: only the float16 output rounding differs.
    np.testing.assert_allclose(out, reference, rtol=2e-3, atol=1e-3)
