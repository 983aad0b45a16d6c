"""FisherVector's mixture life cycle (set, adapt, save/load, unset) and its bad-input errors."""

import os
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.mixture import GaussianMixture

from mmrep.heads import FisherVector

GMM = {
    "weights": [0.25, 0.75],
    "means": [[0.0, 1.0, -1.0], [2.0, 0.0, 1.0]],
    "variances": [[1.0, 0.5, 2.0], [0.7, 1.0, 1.5]],
}


def descriptors(batch=2, n=6, d=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, n, d)).astype("float32")


def set_layer(**kwargs):
    layer = FisherVector(2, **kwargs)
    layer.set_gmm(GMM["weights"], GMM["means"], GMM["variances"])
    return layer


def test_gmm_argument_equals_set_gmm_and_round_trips_config():
    x = descriptors()
    from_arg = FisherVector(2, gmm=GMM)
    np.testing.assert_array_equal(from_arg(x), set_layer()(x))
    assert from_arg.get_config()["gmm"] == GMM
    revived = FisherVector.from_config(from_arg.get_config())
    np.testing.assert_array_equal(revived(x), from_arg(x))


def test_unset_mixture_refused_until_given():
    x = descriptors()
    layer = FisherVector(2)
    with pytest.raises(ValueError, match="mixture is not set"):
        layer(x)
    with pytest.raises(ValueError, match="mixture is not set"):
        tf.function(lambda a: layer(a))(x)
    layer.set_gmm(GMM["weights"], GMM["means"], GMM["variances"])
    np.testing.assert_array_equal(layer(x), set_layer()(x))
    # A trainable mixture may start from its random initialisation.
    assert np.all(np.isfinite(FisherVector(2, trainable_gmm=True)(x)))


def test_set_weights_and_keras_file_carry_the_mixture(tmp_path):
    x = descriptors()
    source = set_layer()
    expected = source(x)
    copy = FisherVector(2)
    copy.build((None, None, 3))
    copy.set_weights(source.get_weights())
    np.testing.assert_array_equal(copy(x), expected)

    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, set_layer()(inputs))
    path = os.path.join(tmp_path, "fv.keras")
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)(x), expected, rtol=1e-6)

    # A model saved before its mixture was set stays unusable after loading.
    unset_layer = FisherVector(2)
    unset_model = keras.Sequential([keras.Input((None, 3)), unset_layer])
    unset_model.save(path)
    with pytest.raises(ValueError, match="mixture is not set"):
        keras.models.load_model(path)(x)


def test_adapt_fits_with_fit_diagonal_gmm_and_assigns(monkeypatch):
    import mmrep.heads.gmm.gmm_em as gmm_em

    calls = []

    def fake_fit(data, num_components, **kwargs):
        calls.append((data, num_components, kwargs))
        return types.SimpleNamespace(
            weights=np.array(GMM["weights"]),
            means=np.array(GMM["means"]),
            variances=np.array(GMM["variances"]),
        )

    monkeypatch.setattr(gmm_em, "fit_diagonal_gmm", fake_fit)
    data = descriptors(batch=4)
    layer = FisherVector(2)
    fit = layer.adapt(data, seed=3, max_iterations=5)
    assert calls == [(data, 2, {"seed": 3, "max_iterations": 5})]
    assert fit.means is not None
    np.testing.assert_array_equal(layer(descriptors()), set_layer()(descriptors()))


def test_adapt_with_real_em_equals_set_gmm_of_its_fit():
    rng = np.random.default_rng(0)
    centres = np.array([[-3.0, 0.0], [3.0, 1.0], [0.0, 4.0]])
    data = centres[rng.integers(0, 3, 1500)] + rng.normal(0, 0.5, (1500, 2))
    layer = FisherVector(3, include_weights=True)
    dataset = tf.data.Dataset.from_tensor_slices(data.astype("float32").reshape(15, 100, 2))
    fit = layer.adapt(dataset, seed=0, progress=False)
    reference = GaussianMixture(3, covariance_type="diag", random_state=0).fit(data)
    assert fit.log_likelihood >= reference.score(data) - 0.01 * abs(reference.score(data))
    same = FisherVector(3, include_weights=True)
    same.set_gmm(fit.weights, fit.means, fit.variances)
    x = data[:60].reshape(2, 30, 2).astype("float32")
    np.testing.assert_allclose(layer(x), same(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_components": 0}, "positive int"),
        ({"num_components": 2, "improved": "yes"}, "`improved` to be a bool"),
        ({"num_components": 2, "external_mixture": True, "trainable_gmm": True}, "mixture="),
        ({"num_components": 2, "gmm": {"weights": [1.0]}}, "dict with keys"),
        ({"num_components": 3, "gmm": GMM}, "3 components"),
        ({"num_components": 2, "gmm": {**GMM, "weights": [0.5, 0.6]}}, "summing to 1"),
        ({"num_components": 2, "gmm": {**GMM, "variances": [[1, 0, 1], [1, 1, 1]]}}, "positive"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FisherVector(**kwargs)


def test_bad_mixtures_for_set_gmm():
    layer = FisherVector(2)
    layer.build((None, None, 3))
    with pytest.raises(ValueError, match=r"D=3 features.*Received means of dimension D=4"):
        layer.set_gmm([0.5, 0.5], np.zeros((2, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="positive variances"):
        layer.set_gmm([0.5, 0.5], np.zeros((2, 3)), -np.ones((2, 3)))
    with pytest.raises(ValueError, match="summing to 1"):
        layer.set_gmm([0.5, 0.7], np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"over D=3 features, the descriptors have D=4"):
        FisherVector(2, gmm=GMM)(descriptors(d=4))


def test_bad_descriptors():
    layer = set_layer()
    with pytest.raises(ValueError, match=r"over D=3 features, the descriptors have D=5"):
        layer(descriptors(d=5))
    with pytest.raises(ValueError, match=r"\[batch, num_descriptors, D\]"):
        layer(np.zeros((2, 3), "float32"))
    with pytest.raises(TypeError, match="floating"):
        layer(np.zeros((2, 4, 3), "int32"))
    with pytest.raises(ValueError, match=r"`mask` of shape"):
        layer(descriptors(), mask=np.ones((2, 5), bool))


def test_non_finite_real_descriptors_refused_in_eager_and_graph():
    layer = set_layer()
    x = descriptors()
    x[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"example\(s\) \[1\]"):
        layer(x)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf among the real"):
        tf.function(lambda a: layer(a))(x)
    x[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(x)
    # The same value in a padded position is ignored.
    mask = np.ones((2, 6), bool)
    mask[1, 2] = False
    assert np.all(np.isfinite(layer(x, mask=mask)))


def test_mixture_argument_rules():
    x = descriptors()
    with pytest.raises(ValueError, match="only taken with `external_mixture=True`"):
        set_layer()(x, mixture={k: np.asarray(v, "float32") for k, v in GMM.items()})
    external = FisherVector(2, external_mixture=True)
    with pytest.raises(ValueError, match="dict with keys"):
        external(x)
    bad = {k: np.asarray(v, "float32") for k, v in GMM.items()}
    bad["means"] = np.zeros((3, 3), "float32")
    with pytest.raises(ValueError, match=r"mixture\['means'\] of shape \(2, 3\)"):
        external(x, mixture=bad)
    with pytest.raises(ValueError, match="external_mixture=True"):
        external.set_gmm(GMM["weights"], GMM["means"], GMM["variances"])


def test_output_shape_and_mask_consumption():
    layer = FisherVector(4, include_weights=True)
    assert layer.compute_output_shape((None, 7, 5)) == (None, 4 + 2 * 4 * 5)
    assert FisherVector(4).compute_output_shape((2, None, 5)) == (2, 40)
    # A Keras mask from a Masking layer is read as the descriptor mask.
    inputs = keras.Input((None, 3))
    masked = keras.layers.Masking(0.0)(inputs)
    model = keras.Model(inputs, set_layer()(masked))
    x = descriptors()
    x[0, 4:] = 0.0
    np.testing.assert_allclose(model(x)[0], set_layer()(x[:1, :4])[0], rtol=1e-5, atol=1e-7)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
