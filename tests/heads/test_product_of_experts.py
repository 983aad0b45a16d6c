"""ProductOfExperts against the closed form in float64 and against a numerical product of densities.

References written here, independent of the layer: the precision-weighted closed form of a
product of Gaussians (with the N(0, I) prior expert), and the product of the expert
densities evaluated on a grid and normalised numerically (which knows nothing of the formula).
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.heads import ProductOfExperts
from tests.harness import run_layer_test
from tests.heads.mvae_cases import MVAE_CASES


def closed_form(means, log_vars, presence):
    """Float64 product of N(0, 1) and the present experts, per example and dimension."""
    means, log_vars = means.astype("float64"), log_vars.astype("float64")
    present = presence.astype(bool)[..., None]
    precisions = np.where(present, np.exp(-np.where(present, log_vars, 0.0)), 0.0)
    total = 1.0 + precisions.sum(axis=1)
    mean = (precisions * np.where(present, means, 0.0)).sum(axis=1) / total
    return mean, -np.log(total)


def _experts(rng, batch, modalities, latent, spread=3.0):
    means = rng.standard_normal((batch, modalities, latent)) * 2.0
    log_vars = rng.uniform(-spread, spread, (batch, modalities, latent))
    return means.astype("float32"), log_vars.astype("float32")


def _run(means, log_vars, presence=None, **kwargs):
    out = ProductOfExperts(**kwargs)({"means": means, "log_vars": log_vars}, presence=presence)
    return (
        keras.ops.convert_to_numpy(out["z_mean"]).astype("float64"),
        keras.ops.convert_to_numpy(out["z_log_var"]).astype("float64"),
    )


def test_every_presence_pattern_matches_the_closed_form():
    rng = np.random.default_rng(0)
    patterns = np.array(list(itertools.product([0, 1], repeat=3)), "float32")  # 8 patterns
    means, log_vars = _experts(rng, len(patterns), 3, 6)
    mean, log_var = _run(means, log_vars, patterns)
    want_mean, want_log_var = closed_form(means, log_vars, patterns)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_var, want_log_var, rtol=1e-5, atol=1e-6)
    # Bool presence reads the same as 0/1 floats; no presence means all present.
    np.testing.assert_allclose(_run(means, log_vars, patterns.astype(bool))[0], mean, atol=0)
    all_mean, all_log_var = _run(means, log_vars)
    ones = np.ones_like(patterns)
    np.testing.assert_allclose(all_mean, closed_form(means, log_vars, ones)[0], atol=1e-6)
    np.testing.assert_allclose(all_log_var, closed_form(means, log_vars, ones)[1], atol=1e-6)


def test_all_missing_gives_the_prior_and_nan_experts_do_not_leak():
    rng = np.random.default_rng(1)
    means, log_vars = _experts(rng, 4, 2, 3)
    presence = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], "float32")
    absent = presence[..., None] == 0
    mask = np.broadcast_to(absent, means.shape)
    means[mask] = np.nan
    log_vars[mask] = np.nan
    log_vars[1, 1] = -np.inf  # an infinite precision, absent, must not leak either
    mean, log_var = _run(means, log_vars, presence)
    np.testing.assert_array_equal(mean[0], 0.0)
    np.testing.assert_array_equal(log_var[0], 0.0)
    want_mean, want_log_var = closed_form(means, log_vars, presence)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_var, want_log_var, rtol=1e-5, atol=1e-6)

    tensors = [tf.constant(means), tf.constant(log_vars)]
    weights = rng.standard_normal((2, 4, 3)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = ProductOfExperts()({"means": tensors[0], "log_vars": tensors[1]}, presence=presence)
        loss = tf.reduce_sum(out["z_mean"] * weights[0]) + tf.reduce_sum(
            out["z_log_var"] * weights[1]
        )
    for grad in tape.gradient(loss, tensors):
        grad = grad.numpy()
        assert np.all(np.isfinite(grad))
        # Absent experts get exactly no gradient; present ones do.
        np.testing.assert_array_equal(grad[np.broadcast_to(absent, grad.shape)], 0.0)
        assert np.all(grad[np.broadcast_to(~absent, grad.shape)] != 0.0)


def test_normalised_product_of_densities_on_a_grid_is_the_output_gaussian():
    rng = np.random.default_rng(2)
    means, log_vars = _experts(rng, 3, 3, 2, spread=1.5)
    presence = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0]], "float32")
    mean, log_var = _run(means, log_vars, presence)
    grid = np.linspace(-12.0, 12.0, 48001)
    step = grid[1] - grid[0]
    for b, d in itertools.product(range(3), range(2)):
        log_density = -0.5 * grid**2  # the prior expert N(0, 1), unnormalised
        for m in np.flatnonzero(presence[b]):
            var = np.exp(np.float64(log_vars[b, m, d]))
            log_density = log_density - 0.5 * (grid - means[b, m, d]) ** 2 / var
        density = np.exp(log_density - log_density.max())
        density /= density.sum() * step
        want = np.exp(-0.5 * (grid - mean[b, d]) ** 2 / np.exp(log_var[b, d]))
        want /= np.sqrt(2 * np.pi * np.exp(log_var[b, d]))
        np.testing.assert_allclose(density, want, atol=2e-5 * want.max())
        grid_mean = (grid * density).sum() * step
        grid_var = ((grid - grid_mean) ** 2 * density).sum() * step
        np.testing.assert_allclose(grid_mean, mean[b, d], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grid_var, np.exp(log_var[b, d]), rtol=1e-4)


def test_extreme_precisions_stay_finite_and_match_in_mixed_precision():
    means = np.array([[[1.0, -2.0], [3.0, 0.5]]], "float32")
    # Variances from e^-30 to e^30: the naive precision sum overflows float16 (max 65504).
    log_vars = np.array([[[-30.0, 30.0], [-12.0, -11.0]]], "float32")
    want_mean, want_log_var = closed_form(means, log_vars, np.ones((1, 2)))
    mean, log_var = _run(means, log_vars)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5)
    np.testing.assert_allclose(log_var, want_log_var, rtol=1e-5)
    out = ProductOfExperts(dtype="mixed_float16")(
        {"means": means.astype("float16"), "log_vars": log_vars.astype("float16")}
    )
    assert out["z_mean"].dtype == "float16" and out["z_log_var"].dtype == "float16"
    np.testing.assert_allclose(out["z_log_var"].numpy(), want_log_var, rtol=1e-3)
    np.testing.assert_allclose(out["z_mean"].numpy(), want_mean, rtol=1e-3, atol=1e-3)


def test_bad_input_names_what_was_expected():
    good = np.zeros((2, 3, 4), "float32")
    layer = ProductOfExperts()
    with pytest.raises(ValueError, match=r"keys \['means', 'log_vars'\].*Received: \['means'\]"):
        layer({"means": good})
    with pytest.raises(ValueError, match=r"same shape.*Received shapes"):
        ProductOfExperts()({"means": good, "log_vars": np.zeros((2, 3, 5), "float32")})
    with pytest.raises(ValueError, match="same shape"):
        ProductOfExperts()({"means": good[0], "log_vars": good[0]})
    with pytest.raises(ValueError, match=r"presence.*\[batch, 3\].*Received shape: \(2, 2\)"):
        ProductOfExperts()({"means": good, "log_vars": good}, presence=np.ones((2, 2)))
    with pytest.raises(TypeError, match=r"floating `means`.*int32"):
        ProductOfExperts()({"means": good.astype("int32"), "log_vars": good})


def test_output_shape_is_declared():
    shapes = ProductOfExperts().compute_output_shape(
        {"means": (None, 3, 7), "log_vars": (None, 3, 7)}
    )
    assert shapes == {"z_mean": (None, 7), "z_log_var": (None, 7)}


@pytest.mark.parametrize("case", MVAE_CASES, ids=str)
def test_harness(case):
    run_layer_test(case)
