"""VGGishPostprocess against the published float64 PCA + 8-bit quantisation formula."""

import keras
import numpy as np
import pytest
import torch

from mmrep.encoders import VGGishCheckpointError, VGGishPostprocess, read_pca_params

RNG = np.random.default_rng(17)
EIGEN = np.linalg.qr(RNG.standard_normal((128, 128)))[0] * RNG.uniform(0.2, 2.0, (128, 1))
MEANS = RNG.normal(0.0, 0.5, (128, 1))  # released as a column
EMBEDDINGS = RNG.normal(0.0, 1.0, (6, 128)).astype("float32")


def reference(embeddings, quantize=True):
    """The AudioSet release, in float64: PCA, clip to [-2, 2], scale to 0..255, truncate."""
    pca = (EIGEN @ (embeddings.astype("float64").T - MEANS)).T
    if not quantize:
        return pca
    return ((np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0)).astype(np.uint8)


def _layer(**kwargs):
    layer = VGGishPostprocess(**kwargs)
    layer.set_pca_params(EIGEN, MEANS)
    return layer


def test_pca_matches_float64_formula():
    out = _layer(quantize=False)(EMBEDDINGS).numpy()
    np.testing.assert_allclose(out, reference(EMBEDDINGS, quantize=False), rtol=1e-5, atol=1e-5)


def test_quantized_values_are_the_released_bytes():
    out = _layer()(EMBEDDINGS).numpy()
    expected = reference(EMBEDDINGS)
    pca = reference(EMBEDDINGS, quantize=False)
    scaled = (np.clip(pca, -2, 2) + 2) * 255 / 4
    # float32 may land on the other side of an integer only right at one.
    at_integer = (np.abs(scaled - np.round(scaled)) < 1e-4) & (scaled > 0) & (scaled < 255)
    exact = ~at_integer
    assert exact.mean() > 0.99
    np.testing.assert_array_equal(out[exact], expected[exact])
    assert np.all(np.abs(out - expected.astype("float64")) <= 1)
    # The clipping is exercised: both ends occur.
    assert (expected == 0).any() and (expected == 255).any()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.ops.cast(out, "uint8")), out)


def test_mixed_precision_keeps_quantized_integers_exact():
    exact = _layer()(EMBEDDINGS).numpy()
    out = _layer(dtype="mixed_bfloat16")(EMBEDDINGS)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out).astype("float32"), exact)


def test_loads_the_npz_release(tmp_path):
    path = tmp_path / "vggish_pca_params.npz"
    np.savez(path, pca_eigen_vectors=EIGEN, pca_means=MEANS)
    layer = VGGishPostprocess.from_pretrained(path)
    np.testing.assert_array_equal(layer(EMBEDDINGS).numpy(), _layer()(EMBEDDINGS).numpy())
    eigen, means = read_pca_params(path)
    assert eigen.shape == (128, 128) and means.shape == (128,)


@pytest.mark.parametrize(
    "keys",
    [("pca_eigen_vectors", "pca_means"), ("pproc.pca_matrix", "pproc.pca_means")],
)
def test_loads_torchvggish_pca_params_with_opt_in(tmp_path, keys):
    path = tmp_path / "pca.pth"
    torch.save({keys[0]: torch.from_numpy(EIGEN), keys[1]: torch.from_numpy(MEANS)}, path)
    with pytest.raises(VGGishCheckpointError, match="allow_pickle=True"):
        VGGishPostprocess.from_pretrained(path)
    layer = VGGishPostprocess.from_pretrained(path, allow_pickle=True)
    np.testing.assert_array_equal(layer(EMBEDDINGS).numpy(), _layer()(EMBEDDINGS).numpy())


def test_pca_params_survive_keras_save(tmp_path):
    inputs = keras.Input((128,))
    model = keras.Model(inputs, _layer()(inputs))
    model.save(tmp_path / "post.keras")
    reloaded = keras.models.load_model(tmp_path / "post.keras")
    np.testing.assert_array_equal(reloaded(EMBEDDINGS).numpy(), model(EMBEDDINGS).numpy())
    assert reloaded.trainable_weights == []


# === Bad input ===


def test_bad_parameters_are_named(tmp_path):
    layer = VGGishPostprocess()
    with pytest.raises(ValueError, match=r"\[128, 128\].*Received: shapes \(128, 64\)"):
        layer.set_pca_params(EIGEN[:, :64], MEANS)
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer.set_pca_params(EIGEN, np.full(128, np.nan))
    path = tmp_path / "other.npz"
    np.savez(path, matrix=EIGEN)
    with pytest.raises(
        VGGishCheckpointError, match=r"'pca_eigen_vectors'.*Received keys: \['matrix'\]"
    ):
        VGGishPostprocess.from_pretrained(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        VGGishPostprocess.from_pretrained(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(VGGishCheckpointError, match=r"not an \.npz"):
        VGGishPostprocess.from_pretrained(tmp_path / "junk.npz")


def test_bad_input_and_arguments_are_named():
    with pytest.raises(ValueError, match=r"embeddings \[\.\.\., 128\].*\(2, 64\)"):
        VGGishPostprocess()(np.zeros((2, 64), "float32"))
    with pytest.raises(ValueError, match=r"Received: quantize=1"):
        VGGishPostprocess(quantize=1)
    with pytest.raises(ValueError, match=r"Received: embedding_dim=-3"):
        VGGishPostprocess(embedding_dim=-3)
