"""`fit_diagonal_gmm` against sklearn's GaussianMixture, the true mixture and a numpy EM step."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture

from mmrep.heads import GMMFit, fit_diagonal_gmm
from mmrep.heads.gmm.mixture import check_gmm

FLOOR = 1e-6


def _sample_mixture(rng, weights, means, stds, n):
    labels = rng.choice(len(weights), size=n, p=weights)
    return means[labels] + stds[labels] * rng.standard_normal((n, means.shape[1]))


@pytest.fixture(scope="module")
def separated():
    rng = np.random.default_rng(0)
    # Corners of a cube of side 20: every pair of components is >= 10 std apart.
    means = 20.0 * np.array([[0, 0, 0], [1, 0, 0], [0, 1, 1], [1, 1, 0]], dtype=np.float64)
    stds = rng.uniform(0.5, 1.5, (4, 3))
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    return _sample_mixture(rng, weights, means, stds, 3000), (weights, means, stds**2)


@pytest.fixture(scope="module")
def digits32():
    """sklearn's bundled digits, projected on their 32 leading principal axes (overlapping)."""
    pixels = load_digits().data
    centred = pixels - pixels.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:32].T


def _log_joint64(x, weights, means, variances):
    """log(w_k N(x | mu_k, var_k)) in float64, by the direct broadcast formula."""
    quad = np.sum((x[:, None, :] - means) ** 2 / variances, axis=-1)
    log_det = np.sum(np.log(variances), axis=-1)
    return np.log(weights) - 0.5 * (quad + log_det + x.shape[1] * np.log(2 * np.pi))


def _sklearn_score(data, k):
    gmm = GaussianMixture(k, covariance_type="diag", reg_covar=FLOOR, n_init=1, random_state=0)
    return gmm.fit(data).score(data)


def test_separated_mixture_matches_sklearn_and_truth(separated):
    data, (weights, means, variances) = separated
    fit = fit_diagonal_gmm(data, 4, seed=0, progress=False)
    assert isinstance(fit, GMMFit) and fit.converged and fit.iterations < 100
    reference = _sklearn_score(data, 4)
    assert abs(fit.log_likelihood - reference) <= 0.01 * abs(reference)
    # The reported log-likelihood is the float64 score of the returned parameters.
    own = logsumexp(_log_joint64(data, fit.weights, fit.means, fit.variances), axis=1).mean()
    assert fit.log_likelihood == pytest.approx(own, rel=1e-5)
    assert fit.history[-1] == fit.log_likelihood
    rows, cols = linear_sum_assignment(np.sum((fit.means[:, None, :] - means[None]) ** 2, axis=-1))
    np.testing.assert_allclose(fit.means[rows], means[cols], atol=0.15)
    np.testing.assert_allclose(fit.weights[rows], weights[cols], atol=0.03)
    np.testing.assert_allclose(fit.variances[rows], variances[cols], rtol=0.2)
    check_gmm(fit.weights, fit.means, fit.variances, num_components=4, dim=3)
    assert fit.weights.dtype == fit.means.dtype == fit.variances.dtype == np.float64


def test_overlapping_digits_matches_sklearn(digits32):
    fit = fit_diagonal_gmm(digits32, 16, seed=0, progress=False)
    reference = _sklearn_score(digits32, 16)
    assert abs(fit.log_likelihood - reference) <= 0.01 * abs(reference), (
        fit.log_likelihood,
        reference,
    )
    # EM never lowers the likelihood (float32 E-step: allow round-off only).
    assert np.all(np.diff(fit.history) >= -1e-5 * abs(fit.log_likelihood))


@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-4), ("float64", 1e-9)])
def test_one_iteration_equals_numpy_em_step(separated, dtype, rtol):
    data, _ = separated
    rng = np.random.default_rng(1)
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    means = data[rng.choice(len(data), 4, replace=False)]
    variances = rng.uniform(1.0, 30.0, (4, 3))
    fit = fit_diagonal_gmm(
        data,
        4,
        init=(weights, means, variances),
        max_iterations=1,
        tolerance=0.0,
        batch_size=700,
        dtype=dtype,
        progress=False,
    )
    data = data.astype(np.float32).astype(np.float64)  # the rows the fit sees
    log_joint = _log_joint64(data, weights, means, variances)
    log_norm = logsumexp(log_joint, axis=1)
    gamma = np.exp(log_joint - log_norm[:, None])
    nk = gamma.sum(axis=0)
    new_means = gamma.T @ data / nk[:, None]
    new_vars = np.einsum("nk,nkd->kd", gamma, (data[:, None] - new_means) ** 2) / nk[:, None]
    new_vars += FLOOR
    assert fit.iterations == 1 and not fit.converged and len(fit.history) == 2
    np.testing.assert_allclose(fit.weights, nk / len(data), rtol=rtol)
    np.testing.assert_allclose(fit.means, new_means, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(fit.variances, new_vars, rtol=rtol)
    np.testing.assert_allclose(fit.history[0], log_norm.mean(), rtol=rtol)
    after = logsumexp(_log_joint64(data, nk / len(data), new_means, new_vars), axis=1).mean()
    np.testing.assert_allclose(fit.history[1], after, rtol=rtol)


def _padded_sets(rows, rng, max_set=40):
    """Splits rows into sets of random sizes padded with NaN rows to `max_set`, + masks."""
    sets, masks, start = [], [], 0
    while start < len(rows):
        size = int(rng.integers(1, max_set + 1))
        chunk = rows[start : start + size]
        start += size
        padded = np.full((max_set, rows.shape[1]), np.nan, np.float32)
        padded[: len(chunk)] = chunk
        sets.append(padded)
        masks.append((np.arange(max_set) < len(chunk)).astype(np.float32))
    return np.stack(sets), np.stack(masks)


def test_streamed_masked_dataset_gives_the_in_memory_fit(digits32):
    rows = digits32.astype(np.float32)
    sets, masks = _padded_sets(rows, np.random.default_rng(2))
    dataset = tf.data.Dataset.from_tensor_slices((sets, masks)).batch(7)
    kwargs = dict(seed=3, init_sample_size=500, max_iterations=15, progress=False)
    streamed = fit_diagonal_gmm(dataset, 8, **kwargs)
    in_memory = fit_diagonal_gmm(rows, 8, batch_size=256, **kwargs)
    assert streamed.iterations == in_memory.iterations
    np.testing.assert_allclose(streamed.history, in_memory.history, rtol=1e-5)
    np.testing.assert_allclose(streamed.weights, in_memory.weights, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(streamed.means, in_memory.means, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(streamed.variances, in_memory.variances, rtol=1e-3)
    # Elements without a mask: every row is real; [..., D] of any rank.
    plain = tf.data.Dataset.from_tensor_slices(rows[:1792].reshape(56, 4, 8, 32)).batch(3)
    unmasked = fit_diagonal_gmm(plain, 8, **kwargs)
    same = fit_diagonal_gmm(rows[:1792], 8, **kwargs)
    np.testing.assert_allclose(unmasked.means, same.means, rtol=1e-3, atol=1e-3)


def test_empty_component_keeps_parameters_and_positive_weight(separated):
    data, (_, means, variances) = separated
    far_means = np.concatenate([means[:3], [[1e4, 1e4, 1e4]]])
    fit = fit_diagonal_gmm(
        data,
        4,
        init=(np.full(4, 0.25), far_means, np.concatenate([variances[:3], np.ones((1, 3))])),
        max_iterations=3,
        progress=False,
    )
    np.testing.assert_array_equal(fit.means[3], far_means[3])
    np.testing.assert_array_equal(fit.variances[3], np.ones(3))
    assert 0 < fit.weights[3] < 1e-12
    check_gmm(fit.weights, fit.means, fit.variances)


def test_progress_bar_shows_log_likelihood(separated, capsys):
    fit_diagonal_gmm(separated[0], 4, seed=0, max_iterations=3, progress=True)
    assert "log_likelihood" in capsys.readouterr().out
    fit_diagonal_gmm(separated[0], 4, seed=0, max_iterations=3, progress=False)
    assert capsys.readouterr().out == ""


def _generator_dataset(shapes):
    def gen():
        for shape in shapes:
            yield np.ones(shape, np.float32)

    return tf.data.Dataset.from_generator(
        gen, output_signature=tf.TensorSpec([None, None], tf.float32)
    )


@pytest.mark.parametrize(
    "data, kwargs, error, message",
    [
        (np.ones(10), {}, ValueError, r"rank >= 2.*\(10,\)"),
        (np.ones((3, 2)), {}, ValueError, "at least num_components=4 real rows.*Received: 3"),
        (np.ones((10, 2)), {"num_components": 0}, ValueError, "num_components.*0"),
        (np.ones((10, 2)), {"num_components": 2.5}, ValueError, "num_components.*2.5"),
        (np.ones((10, 2)), {"variance_floor": -1.0}, ValueError, "variance_floor"),
        (np.ones((10, 2)), {"batch_size": 0}, ValueError, "batch_size"),
        (np.ones((10, 2)), {"dtype": "float16"}, ValueError, "dtype"),
        (np.ones((10, 2)), {"init": "random"}, ValueError, "init"),
        (
            np.ones((10, 2)),
            {"init": ([0.5, 0.5, 0, 0], np.zeros((4, 2)), np.ones((4, 2)))},
            ValueError,
            "positive mixture weights",
        ),
        (np.array([["a", "b"]] * 5), {}, TypeError, "numeric"),
        (_generator_dataset([]), {}, ValueError, "non-empty"),
        (_generator_dataset([(6, 3), (6, 4)]), {}, ValueError, r"D=3.*batch 2.*\(6, 4\)"),
        (
            tf.data.Dataset.from_tensor_slices((np.ones((4, 5, 2)), np.ones((4, 4)))).batch(2),
            {},
            ValueError,
            r"mask of their shape.*\(2, 5, 2\).*\(2, 4\)",
        ),
        (
            tf.data.Dataset.from_tensor_slices(np.ones((8, 2))).batch(4),
            {"batch_size": 4},
            ValueError,
            "batch_size=None",
        ),
        (
            tf.data.Dataset.from_tensor_slices({"x": np.ones((8, 2))}),
            {},
            TypeError,
            "element_spec",
        ),
    ],
)
def test_bad_input(data, kwargs, error, message):
    kwargs = {"num_components": 4, "progress": False, **kwargs}
    with pytest.raises(error, match=message):
        fit_diagonal_gmm(data, **kwargs)


def test_non_finite_rows_are_counted_unless_masked():
    rows = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    rows[[3, 7, 9], 1] = [np.nan, np.inf, -np.inf]
    with pytest.raises(ValueError, match="Received 3 row"):
        fit_diagonal_gmm(rows, 2, progress=False)
    mask = np.ones(50, np.float32)
    mask[[3, 7]] = 0
    dataset = tf.data.Dataset.from_tensor_slices((rows, mask)).batch(16)
    with pytest.raises(ValueError, match="Received 1 row"):
        fit_diagonal_gmm(dataset, 2, progress=False)
    mask[9] = 0
    dataset = tf.data.Dataset.from_tensor_slices((rows, mask)).batch(16)
    fit = fit_diagonal_gmm(dataset, 2, seed=0, progress=False)
    clean = fit_diagonal_gmm(np.delete(rows, [3, 7, 9], axis=0), 2, seed=0, progress=False)
    assert np.all(np.isfinite(fit.means))
    np.testing.assert_allclose(fit.means, clean.means, rtol=1e-4, atol=1e-5)
