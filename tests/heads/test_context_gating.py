"""ContextGating against the float64 numpy formula of Miech et al. 2017, eq. 2."""

import keras
import numpy as np
import pytest

from mmrep.heads import ContextGating


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return {v.path.split("/")[-1]: v.numpy().astype("float64") for v in layer.weights}


@pytest.mark.parametrize("shape", [(3, 6), (2, 4, 6)])
def test_full_gate_matches_numpy(shape):
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    layer = ContextGating()
    layer.build(shape)
    w = _randomize(layer)
    assert w["kernel"].shape == (6, 6)
    xd = x.astype("float64")
    expected = _sigmoid(xd @ w["kernel"] + w["bias"]) * xd
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_low_rank_gate_matches_numpy():
    x = np.random.default_rng(2).standard_normal((5, 8)).astype("float32")
    layer = ContextGating(units=3)
    layer.build(x.shape)
    w = _randomize(layer)
    assert w["down_kernel"].shape == (8, 3) and w["up_kernel"].shape == (3, 8)
    xd = x.astype("float64")
    expected = _sigmoid(xd @ w["down_kernel"] @ w["up_kernel"] + w["bias"]) * xd
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_gate_is_bounded_by_its_input():
    # 0 < sigmoid < 1, so every output has the input's sign and a smaller magnitude.
    x = np.random.default_rng(3).standard_normal((4, 5)).astype("float32")
    layer = ContextGating()
    layer.build(x.shape)
    _randomize(layer, seed=4)
    y = np.asarray(layer(x))
    assert np.all(np.abs(y) <= np.abs(x)) and np.all(y * x >= 0)


def test_mixed_precision_output_dtype():
    y = ContextGating(dtype="mixed_bfloat16")(np.ones((2, 4), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"


def test_bad_arguments_and_inputs():
    for units in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="units"):
            ContextGating(units=units)
    layer = ContextGating()
    with pytest.raises(ValueError, match=r"Received shape: \(4,\)"):
        layer(np.ones((4,), "float32"))
    layer(np.ones((2, 4), "float32"))
    with pytest.raises(ValueError, match=r"expected 4 features.*\(2, 5\)"):
        layer(np.ones((2, 5), "float32"))
    with pytest.raises(TypeError, match="floating"):
        layer(np.ones((2, 4), "int32"))
