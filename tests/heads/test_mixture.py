"""The shared mixture parameters: validation, assignment round trip, log densities vs sklearn."""

import keras
import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture

from mmrep.heads.gmm.mixture import (
    add_mixture_weights,
    check_gmm,
    component_log_densities,
    mixture_tensors,
    set_mixture,
)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(-2, 0.5, (200, 3)), rng.normal(2, 1.5, (200, 3))])
    gmm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(data)
    return gmm, data


def test_log_densities_match_sklearn(fitted):
    gmm, data = fitted
    log_joint = np.asarray(
        component_log_densities(
            data.astype("float32"),
            gmm.weights_.astype("float32"),
            gmm.means_.astype("float32"),
            gmm.covariances_.astype("float32"),
        )
    )
    assert log_joint.shape == (400, 2)
    np.testing.assert_allclose(logsumexp(log_joint, axis=1), gmm.score_samples(data), rtol=1e-5)
    responsibilities = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    np.testing.assert_allclose(responsibilities, gmm.predict_proba(data), atol=1e-5)


def test_set_and_read_back(fitted):
    gmm, _ = fitted

    class Holder(keras.layers.Layer):
        def build(self, input_shape):
            add_mixture_weights(self, 2, 3, trainable=True)

    layer = Holder()
    layer.build((None, 3))
    set_mixture(layer, *check_gmm(gmm.weights_, gmm.means_, gmm.covariances_))
    params = {k: np.asarray(v) for k, v in mixture_tensors(layer).items()}
    np.testing.assert_allclose(params["weights"], gmm.weights_, rtol=1e-6)
    np.testing.assert_allclose(params["means"], gmm.means_, rtol=1e-6)
    np.testing.assert_allclose(params["variances"], gmm.covariances_, rtol=1e-6)
    assert [w.name for w in layer.trainable_weights] == ["mixture_logits", "means", "log_variances"]


@pytest.mark.parametrize(
    "weights, means, variances, kwargs, message",
    [
        ([0.5, 0.5], np.zeros((2, 3)), np.ones((2, 4)), {}, "Received shapes"),
        ([1.0], np.zeros((2, 3)), np.ones((2, 3)), {}, "Expected 2 mixture weights"),
        ([0.5, 0.5], np.zeros((2, 3)), np.ones((2, 3)), {"dim": 4}, "D=4"),
        ([0.5, 0.5], np.zeros((2, 3)), np.ones((2, 3)), {"num_components": 3}, "K=2"),
        ([0.5, 0.5], np.zeros((2, 3)), [[1, 1, 0], [1, 1, 1]], {}, "positive variances"),
        ([0.6, 0.5], np.zeros((2, 3)), np.ones((2, 3)), {}, "summing to 1"),
        ([1.0, 0.0], np.zeros((2, 3)), np.ones((2, 3)), {}, "positive mixture weights"),
        ([0.5, 0.5], [[0, np.nan, 0], [0, 0, 0]], np.ones((2, 3)), {}, "finite mixture means"),
    ],
)
def test_check_gmm_refuses(weights, means, variances, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_gmm(weights, means, variances, **kwargs)
