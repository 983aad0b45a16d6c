"""One presence-order rule, library-wide: `mmrep.MODALITY_ORDER`, then other names sorted.

A manifest's presence columns, a fusion layer's default modality order and the job's agree
whatever order the names arrive in; a presence mask may be a dict `{modality: [B]}`; a
mask of the wrong width or batch is refused instead of broadcast.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mmrep
from mmrep.data import from_manifest
from mmrep.fusion import (
    BilinearFusion,
    ConcatFusion,
    CoordinatedEmbedding,
    LowRankTensorFusion,
    MultimodalAutoencoder,
    TensorFusion,
)
from tests.data.test_manifest import write_csv, write_png


def test_the_order_is_defined_once():
    assert mmrep.MODALITY_ORDER == ("image", "text", "audio", "video")
    assert mmrep.ordered_modalities(["video", "zeta", "text", "depth", "image"]) == [
        "image",
        "text",
        "video",
        "depth",
        "zeta",
    ]
    from mmrep.data.manifest import KINDS
    from mmrep.job import builtin_config

    assert KINDS == tuple(builtin_config()["modalities"]) == mmrep.MODALITY_ORDER


def test_text_image_manifest_through_concat_fusion_zeroes_the_text_columns(tmp_path):
    """Columns `text,image`; row 2 has no caption. The presence mask's columns follow the
    library order (image, text), which `ConcatFusion()` reads for its dict inputs."""
    for name in ("a.png", "b.png"):
        write_png(tmp_path / name)
    manifest = write_csv(
        tmp_path / "m.csv",
        [{"text": "a cat", "image": "a.png"}, {"text": "", "image": "b.png"}],
        ["text", "image"],
    )
    examples = list(from_manifest(manifest, image_size=4).batch(2))
    assert len(examples) == 1
    batch = examples[0]
    np.testing.assert_array_equal(batch["presence"], [[1, 1], [1, 0]])  # image, text

    features = {
        "image": tf.cast(tf.reshape(batch["image"], (2, -1)), "float32") / 255.0 + 1.0,
        "text": tf.fill((2, 5), float("nan")),  # the absent caption's features: never read
    }
    features["text"] = tf.tensor_scatter_nd_update(features["text"], [[0]], [tf.ones(5)])
    out = ConcatFusion(presence_indicators=False)(features, presence=batch["presence"])
    out = keras.ops.convert_to_numpy(out)
    width = features["image"].shape[1]
    np.testing.assert_array_equal(out[1, width:], 0.0)  # text slot of the text-missing row
    np.testing.assert_allclose(out[1, :width], features["image"][1])  # image kept
    np.testing.assert_allclose(out[0, width:], 1.0)
    assert np.isfinite(out).all()


def test_default_order_is_the_library_order_not_sorted():
    # Sorted keys would be (audio, image): the library order is (image, audio).
    x = {"audio": np.full((2, 3), 7.0, "float32"), "image": np.ones((2, 2), "float32")}
    out = ConcatFusion(presence_indicators=False)(x, presence=np.array([[1, 0], [1, 1]], "f"))
    np.testing.assert_array_equal(out[0], [1, 1, 0, 0, 0])  # audio (column 1) absent
    np.testing.assert_array_equal(out[1], [1, 1, 7, 7, 7])


def _two(batch=3, dim=4, names=("image", "text")):
    rng = np.random.default_rng(0)
    return {m: rng.standard_normal((batch, dim)).astype("float32") for m in names}


FUSIONS = {
    "concat": lambda: ConcatFusion(),
    "bilinear": lambda: BilinearFusion(mode="low_rank", output_dim=4, factor_k=2),
    "coordinated": lambda: CoordinatedEmbedding(embedding_dim=3),
    "tensor": lambda: TensorFusion(),
    "low_rank_tensor": lambda: LowRankTensorFusion(output_dim=3, rank=2),
    "autoencoder": lambda: MultimodalAutoencoder(code_dim=3),
}


@pytest.mark.parametrize("make", list(FUSIONS.values()), ids=list(FUSIONS))
def test_every_fusion_takes_a_dict_presence_equal_to_the_matrix(make):
    inputs = _two()
    matrix = np.array([[1, 1], [1, 0], [0, 1]], "float32")
    as_dict = {"text": matrix[:, 1], "image": matrix[:, 0]}
    layer = make()
    expected = keras.tree.map_structure(keras.ops.convert_to_numpy, layer(inputs, presence=matrix))
    got = keras.tree.map_structure(keras.ops.convert_to_numpy, layer(inputs, presence=as_dict))
    keras.tree.map_structure(np.testing.assert_allclose, expected, got)


@pytest.mark.parametrize("make", list(FUSIONS.values()), ids=list(FUSIONS))
def test_every_fusion_refuses_a_presence_of_another_batch_or_width(make):
    inputs = _two()
    layer = make()
    with pytest.raises(ValueError, match=r"one row per example \(3 examples\)"):
        layer(inputs, presence=np.ones((1, 2), "float32"))  # was silently broadcast
    with pytest.raises(ValueError, match=r"expected `presence` of shape \[batch, 2\]"):
        layer(inputs, presence=np.ones((3, 3), "float32"))
    with pytest.raises(ValueError, match="expected `presence` as the keys"):
        layer(inputs, presence={"image": np.ones(3, "float32")})


def test_a_batch_mismatch_fails_in_a_graph_too():
    layer = ConcatFusion()
    inputs = _two()
    layer(inputs)  # built

    @tf.function(input_signature=[tf.TensorSpec((None, 2))])
    def fused(presence):
        return layer({m: tf.constant(v) for m, v in inputs.items()}, presence=presence)

    assert fused(tf.ones((3, 2))).shape[0] == 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per example"):
        fused(tf.ones((1, 2)))


def test_multimodal_vae_and_product_of_experts_follow_the_rule():
    from mmrep.heads import MultimodalVAE, ProductOfExperts

    encoders = {m: keras.layers.Dense(4) for m in ("text", "image")}
    decoders = {m: keras.layers.Dense(4) for m in ("text", "image")}
    vae = MultimodalVAE(
        encoders, decoders, {m: "gaussian" for m in encoders}, latent_dim=2, num_subsets=0
    )
    assert vae.modalities == ["image", "text"]
    poe = ProductOfExperts()
    stats = {"means": np.zeros((3, 2, 2), "f"), "log_vars": np.zeros((3, 2, 2), "f")}
    with pytest.raises(ValueError, match="one row per example"):
        poe(stats, presence=np.ones((1, 2), "float32"))


def test_product_of_experts_takes_presence_when_the_modality_count_is_known_at_run_time():
    """Traced with an unknown number of experts, the count is a tensor, not an int."""
    from mmrep.heads import ProductOfExperts

    poe = ProductOfExperts()
    spec = tf.TensorSpec((None, None, 2))

    @tf.function(input_signature=[spec, spec, tf.TensorSpec((None, None))])
    def posterior(means, log_vars, presence):
        return poe({"means": means, "log_vars": log_vars}, presence=presence)

    means = np.random.default_rng(0).standard_normal((3, 2, 2)).astype("float32")
    presence = np.array([[1, 1], [1, 0], [0, 1]], "float32")
    traced = posterior(means, np.zeros_like(means), presence)
    eager = poe({"means": means, "log_vars": np.zeros_like(means)}, presence=presence)
    keras.tree.map_structure(np.testing.assert_allclose, traced, eager)
