"""TensorFusion and LowRankTensorFusion against float64 numpy formulas.

LowRankTensorFusion is also checked to be TensorFusion followed by a dense layer whose
weight tensor is rebuilt from its factors, and, at full rank, to reproduce an arbitrary
dense layer on the tensor-fusion output (factors from an SVD of each output's slice).
"""

import numpy as np
import pytest
import tensorflow as tf

from mmrep.fusion.tensor_fusion import LowRankTensorFusion, TensorFusion

RNG = np.random.default_rng(5)
DIMS = {"text": 4, "audio": 3, "video": 2}
ORDER = ["text", "audio", "video"]
PRESENCE = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], "float32")


def features(dims=DIMS, batch=5):
    return {m: RNG.standard_normal((batch, d)).astype("float32") for m, d in dims.items()}


def augmented(inputs, order, presence=None):
    """`[1; z_m]` in float64, with an absent modality as (1, 0, …, 0)."""
    out = []
    for i, m in enumerate(order):
        z = inputs[m].astype("float64")
        if presence is not None:
            z = np.where(presence[:, i : i + 1] > 0, z, 0.0)
        out.append(np.concatenate([np.ones((len(z), 1)), z], axis=1))
    return out


def tfn_reference(inputs, order, presence=None):
    """The M-way outer product, row-major, as one einsum."""
    zs = augmented(inputs, order, presence)
    letters = "ijklmn"[: len(zs)]
    spec = ",".join(f"b{c}" for c in letters) + f"->b{letters}"
    return np.einsum(spec, *zs).reshape(len(zs[0]), -1)


def lmf_weights(layer):
    factors = [f.numpy().astype("float64") for f in layer.factors]
    return factors, layer.fusion_weights.numpy().astype("float64"), layer.bias.numpy()


def dense_tensor_from_factors(factors, fusion_weights):
    """W[i_1, …, i_M, o] = Σ_r w_r Π_m W_m[r, i_m, o], flattened to `[Π (D_m + 1), O]`."""
    letters = "ijklmn"[: len(factors)]
    spec = "r," + ",".join(f"r{c}o" for c in letters) + f"->{letters}o"
    tensor = np.einsum(spec, fusion_weights, *factors)
    return tensor.reshape(-1, tensor.shape[-1])


@pytest.mark.parametrize("order", [["text", "audio"], ORDER])
@pytest.mark.parametrize("with_presence", [False, True])
def test_tensor_fusion_matches_float64_outer_product(order, with_presence):
    inputs = features({m: DIMS[m] for m in order})
    presence = PRESENCE[:, : len(order)] if with_presence else None
    out = TensorFusion(modalities=order)(inputs, presence=presence).numpy()
    np.testing.assert_allclose(out, tfn_reference(inputs, order, presence), rtol=1e-6, atol=1e-6)


def test_tensor_fusion_keeps_every_lower_order_term():
    inputs = features()
    out = TensorFusion(modalities=ORDER)(inputs).numpy().reshape(5, 5, 4, 3)
    np.testing.assert_array_equal(out[:, 0, 0, 0], 1.0)
    np.testing.assert_allclose(out[:, 1:, 0, 0], inputs["text"], rtol=1e-6)
    np.testing.assert_allclose(out[:, 0, 0, 1:], inputs["video"], rtol=1e-6)
    np.testing.assert_allclose(
        out[:, 1:, 1:, 0], np.einsum("bi,bj->bij", inputs["text"], inputs["audio"]), rtol=1e-6
    )


def test_tensor_fusion_absent_modality_keeps_the_others_and_hides_nan():
    inputs = features()
    poisoned = {m: v.copy() for m, v in inputs.items()}
    for i, m in enumerate(ORDER):
        poisoned[m][PRESENCE[:, i] == 0] = np.nan
    as_tensors = {m: tf.constant(v) for m, v in poisoned.items()}
    with tf.GradientTape() as tape:
        tape.watch(list(as_tensors.values()))
        out = TensorFusion(modalities=ORDER)(as_tensors, presence=PRESENCE)
        loss = tf.reduce_sum(out * RNG.standard_normal(out.shape).astype("float32"))
    grads = tape.gradient(loss, list(as_tensors.values()))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    cube = out.numpy().reshape(5, 5, 4, 3)
    # Example 1 lacks audio: its slice at audio index 0 is the text-video fusion ...
    text_video = tfn_reference({m: inputs[m][1:2] for m in ("text", "video")}, ["text", "video"])
    np.testing.assert_allclose(cube[1, :, 0, :].reshape(1, -1), text_video, rtol=1e-6)
    # ... and every term involving audio is zero.
    np.testing.assert_array_equal(cube[1, :, 1:, :], 0.0)
    # Example 3 lacks everything: only the constant is left.
    expected = np.zeros((5, 4, 3))
    expected[0, 0, 0] = 1.0
    np.testing.assert_array_equal(cube[3], expected)


def test_lmf_matches_float64_formula():
    inputs = features()
    layer = LowRankTensorFusion(4, 3, ORDER, bias_initializer="random_normal")
    for presence in (None, PRESENCE):
        out = layer(inputs, presence=presence).numpy()
        factors, w, b = lmf_weights(layer)
        product = np.ones((5, 3, 4))
        for z, factor in zip(augmented(inputs, ORDER, presence), factors, strict=True):
            product *= np.einsum("bi,rio->bro", z, factor)
        expected = np.einsum("bro,r->bo", product, w) + b
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_lmf_is_tensor_fusion_then_dense_with_the_rebuilt_weight_tensor():
    inputs = features()
    layer = LowRankTensorFusion(4, 2, ORDER, bias_initializer="random_normal")
    tfn = TensorFusion(modalities=ORDER)
    for presence in (None, PRESENCE):
        out = layer(inputs, presence=presence).numpy()
        factors, w, b = lmf_weights(layer)
        fused = tfn(inputs, presence=presence).numpy().astype("float64")
        expected = fused @ dense_tensor_from_factors(factors, w) + b
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_full_rank_lmf_represents_any_dense_layer_on_two_modalities():
    dims = {"text": 4, "audio": 3}
    inputs = features(dims)
    order = ["text", "audio"]
    outputs = 5
    dense = RNG.standard_normal((dims["text"] + 1, dims["audio"] + 1, outputs))
    bias = RNG.standard_normal(outputs)
    rank = min(dims.values()) + 1
    # Each output's (D1+1) x (D2+1) matrix is a sum of `rank` outer products (its SVD).
    first = np.zeros((rank, dims["text"] + 1, outputs))
    second = np.zeros((rank, dims["audio"] + 1, outputs))
    for o in range(outputs):
        u, s, vt = np.linalg.svd(dense[:, :, o], full_matrices=False)
        first[:, :, o] = (u * s).T
        second[:, :, o] = vt
    layer = LowRankTensorFusion(outputs, rank, order)
    layer(inputs)
    layer.set_weights([first, second, np.ones(rank), bias])
    fused = TensorFusion(modalities=order)(inputs, presence=PRESENCE[:, :2]).numpy()
    expected = fused.astype("float64") @ dense.reshape(-1, outputs) + bias
    out = layer(inputs, presence=PRESENCE[:, :2]).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_lmf_absent_modality_hides_nan_from_output_and_gradients():
    inputs = features()
    layer = LowRankTensorFusion(3, 2, ORDER)
    clean = layer(inputs, presence=PRESENCE).numpy()
    poisoned = {m: v.copy() for m, v in inputs.items()}
    for i, m in enumerate(ORDER):
        poisoned[m][PRESENCE[:, i] == 0] = np.nan
    with tf.GradientTape() as tape:
        out = layer(poisoned, presence=PRESENCE)
        loss = tf.reduce_sum(out * RNG.standard_normal(out.shape).astype("float32"))
    grads = tape.gradient(loss, layer.trainable_variables)
    np.testing.assert_array_equal(out.numpy(), clean)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_weight_shapes_follow_the_paper():
    layer = LowRankTensorFusion(6, 4, ORDER)
    layer(features())
    assert [tuple(f.shape) for f in layer.factors] == [(4, 5, 6), (4, 4, 6), (4, 3, 6)]
    assert tuple(layer.fusion_weights.shape) == (4,) and tuple(layer.bias.shape) == (6,)
    assert len(layer.trainable_weights) == 5


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: LowRankTensorFusion(0, 2), r"`output_dim` to be a positive int.*0"),
        (lambda: LowRankTensorFusion(3, 1.5), r"`rank` to be a positive int.*1.5"),
        (lambda: TensorFusion(modalities=[]), r"non-empty list.*\[\]"),
        (lambda: TensorFusion(modalities=["a", "a"]), r"distinct.*\['a', 'a'\]"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("cls", [TensorFusion, LowRankTensorFusion])
def test_bad_inputs_are_named(cls):
    modalities = ["text", "audio"]
    layer = cls(modalities) if cls is TensorFusion else cls(2, 2, modalities)
    vectors = features({"text": 4, "audio": 3})
    with pytest.raises(ValueError, match=r"\[batch, features\].*\(5, 2, 3\)"):
        layer({"text": vectors["text"], "audio": np.ones((5, 2, 3), "float32")})
    with pytest.raises(ValueError, match=r"Received keys: \['text'\]"):
        layer({"text": vectors["text"]})
    with pytest.raises(ValueError, match=r"`presence` of shape \[batch, 2\].*\(5, 3\)"):
        layer(vectors, presence=PRESENCE)
    with pytest.raises(TypeError, match=r"floating tensor for modality 'audio'.*int32"):
        layer({"text": vectors["text"], "audio": np.ones((5, 3), "int32")})
