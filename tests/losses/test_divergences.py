"""mmrep.losses.divergences against float64 Monte Carlo estimates and scipy.stats."""

import keras
import numpy as np
import pytest
from scipy import stats

from mmrep.losses.divergences import (
    gaussian_log_density,
    kl_diagonal_gaussians,
    kl_standard_normal,
)

SAMPLES = 200_000


def _log_normal64(x, mean, log_var):
    return np.sum(stats.norm.logpdf(x, loc=mean, scale=np.exp(0.5 * log_var)), axis=-1)


def _mc_kl(mean_q, log_var_q, mean_p, log_var_p, seed):
    """Mean and standard error of log q(z) - log p(z), z ~ q, per row, in float64."""
    rng = np.random.default_rng(seed)
    estimates, errors = [], []
    for mq, lq, mp, lp in zip(mean_q, log_var_q, mean_p, log_var_p, strict=True):
        z = mq + np.exp(0.5 * lq) * rng.standard_normal((SAMPLES, mq.size))
        ratio = _log_normal64(z, mq, lq) - _log_normal64(z, mp, lp)
        estimates.append(ratio.mean())
        errors.append(ratio.std(ddof=1) / np.sqrt(SAMPLES))
    return np.array(estimates), np.array(errors)


def _gaussians(rows, dim, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (rows, dim)), rng.normal(0, 0.7, (rows, dim))


def test_kl_standard_normal_matches_monte_carlo():
    mean, log_var = _gaussians(4, 3, seed=0)
    kl = keras.ops.convert_to_numpy(kl_standard_normal(mean.astype("float32"), log_var))
    assert kl.dtype == np.float32 and kl.shape == (4,)
    zeros = np.zeros_like(mean)
    estimate, error = _mc_kl(mean, log_var, zeros, zeros, seed=1)
    assert np.all(np.abs(kl - estimate) < 4 * error + 1e-5), (kl, estimate, error)


def test_kl_diagonal_gaussians_matches_monte_carlo():
    mean_q, log_var_q = _gaussians(4, 3, seed=2)
    mean_p, log_var_p = _gaussians(4, 3, seed=3)
    kl = keras.ops.convert_to_numpy(
        kl_diagonal_gaussians(
            *(a.astype("float32") for a in (mean_q, log_var_q, mean_p, log_var_p))
        )
    )
    estimate, error = _mc_kl(mean_q, log_var_q, mean_p, log_var_p, seed=4)
    assert np.all(np.abs(kl - estimate) < 4 * error + 1e-5), (kl, estimate, error)


def test_kl_diagonal_gaussians_broadcasts_a_shared_prior():
    mean_q, log_var_q = _gaussians(5, 2, seed=5)
    mean_p, log_var_p = np.array([0.5, -1.0]), np.array([0.3, -0.2])
    kl = keras.ops.convert_to_numpy(kl_diagonal_gaussians(mean_q, log_var_q, mean_p, log_var_p))
    var_q, var_p = np.exp(log_var_q), np.exp(log_var_p)
    closed = 0.5 * np.sum(
        np.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0, axis=-1
    )
    np.testing.assert_allclose(kl, closed, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gaussian_log_density_matches_scipy(dtype):
    rng = np.random.default_rng(6)
    x, mean, log_var = (rng.normal(0, 1, (6, 4)).astype(dtype) for _ in range(3))
    got = keras.ops.convert_to_numpy(gaussian_log_density(x, mean, log_var))
    assert got.dtype == np.float32
    cov = [np.diag(np.exp(np.float64(lv))) for lv in log_var]
    expected = [
        stats.multivariate_normal(np.float64(m), c).logpdf(np.float64(xi))
        for xi, m, c in zip(x, mean, cov, strict=True)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
