"""Reconstruction negative log-likelihoods against scipy.stats and float64 formulas."""

import keras
import numpy as np
import pytest
from scipy import stats

from mmrep.losses.reconstruction import (
    BernoulliNLL,
    GaussianNLL,
    bernoulli_nll,
    categorical_nll,
    gaussian_nll,
    split_gaussian,
)


def _arrays(seed=0, shape=(5, 4)):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, shape), rng.normal(0, 1, shape), rng.normal(0, 0.5, shape)


def test_gaussian_nll_matches_scipy():
    x, mean, log_var = _arrays()
    got = keras.ops.convert_to_numpy(
        gaussian_nll(*(a.astype("float32") for a in (x, mean, log_var)))
    )
    expected = -stats.norm.logpdf(x, mean, np.exp(0.5 * log_var)).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    unit = keras.ops.convert_to_numpy(gaussian_nll(x, mean))
    np.testing.assert_allclose(unit, -stats.norm.logpdf(x, mean).sum(-1), rtol=1e-5)


def test_bernoulli_nll_matches_float64_formula_and_is_stable():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (6, 5))
    logits = rng.normal(0, 3, (6, 5))
    p = 1 / (1 + np.exp(-logits))
    expected = -np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=-1)
    got = keras.ops.convert_to_numpy(bernoulli_nll(x.astype("float32"), logits.astype("float32")))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    extreme = keras.ops.convert_to_numpy(
        bernoulli_nll(np.array([[1.0, 0.0]], "float32"), np.array([[-200.0, 200.0]], "float32"))
    )
    np.testing.assert_allclose(extreme, [400.0], rtol=1e-6)  # -log sigmoid(-200) = 200


def test_loss_classes_average_per_example_sums():
    x, mean, log_var = (a.astype("float32") for a in _arrays(2))
    learned = GaussianNLL("learned")(x, np.concatenate([mean, log_var], -1))
    expected = -stats.norm.logpdf(x, mean, np.exp(0.5 * np.float64(log_var))).sum(-1).mean()
    np.testing.assert_allclose(float(learned), expected, rtol=1e-5)
    fixed = GaussianNLL(variance=2.0)(x, mean)
    expected = -stats.norm.logpdf(x, mean, np.sqrt(2.0)).sum(-1).mean()
    np.testing.assert_allclose(float(fixed), expected, rtol=1e-5)
    images = np.random.default_rng(3).uniform(0, 1, (2, 3, 3, 1)).astype("float32")
    logits = np.random.default_rng(4).normal(0, 1, (2, 3, 3, 1)).astype("float32")
    np.testing.assert_allclose(
        float(BernoulliNLL()(images, logits)),
        np.mean(bernoulli_nll(images.reshape(2, -1), logits.reshape(2, -1))),
        rtol=1e-6,
    )
    revived = GaussianNLL.from_config(GaussianNLL("learned").get_config())
    assert revived.variance == "learned"


def test_bad_arguments():
    with pytest.raises(ValueError, match="variance"):
        GaussianNLL(variance=0.0)
    with pytest.raises(ValueError, match="2 \\* D"):
        split_gaussian(np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match="4 features"):
        GaussianNLL("learned")(np.ones((2, 3), "float32"), np.ones((2, 8), "float32"))


def test_categorical_nll_matches_float64_log_softmax():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 5, (6, 4))
    labels = np.eye(4)[rng.integers(0, 4, 6)]
    soft = rng.dirichlet(np.ones(4), 6)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    for x in (labels, soft):
        got = keras.ops.convert_to_numpy(
            categorical_nll(x.astype("float32"), logits.astype("float32"))
        )
        np.testing.assert_allclose(got, -(x * log_p).sum(-1), rtol=1e-5, atol=1e-6)
    # Stable at extreme logits: the true class at -200 costs ~400 nats, not inf.
    extreme = categorical_nll(
        np.array([[1.0, 0.0]], "float32"), np.array([[-200.0, 200.0]], "float32")
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(extreme), [400.0], rtol=1e-6)
