"""Loading VGGish weights: TF1 checkpoint, TF Hub SavedModel and torchvggish give one model."""

import hashlib
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from mmrep.encoders import VGGish, VGGishCheckpointError, load_vggish_weights
from tests.encoders.audio import checkpoints
from tests.encoders.audio import reference as ref
from tests.loopback import serve_bytes

RNG = np.random.default_rng(21)
CLIPS = (0.3 * RNG.standard_normal((2, 32000))).astype("float32")
TINY = {"conv_filters": (2, 4, 4, 4), "fc_units": (8, 8), "embedding_dim": 4}


@pytest.fixture(scope="module")
def tiny_weights():
    return ref.random_weights(ref.tf1_shapes((2, 4, 4, 4), (8, 8), 4), seed=4)


def _embeddings(layer):
    return layer(CLIPS)["sequence_output"].numpy()


def test_tf1_checkpoint_and_saved_model_give_identical_embeddings(
    published_files, published_weights, caplog
):
    """Published names and shapes (72.1 M parameters), V1 single-file checkpoint."""
    with caplog.at_level(logging.INFO, logger="mmrep"):
        from_tf1 = VGGish.from_pretrained(published_files["tf1"])
    assert "reading 18 variables of a TF1 checkpoint" in caplog.text
    assert "copying 18 variables (72.1 M parameters)" in caplog.text
    from_hub = VGGish.from_pretrained(published_files["saved_model"])

    expected = _embeddings(from_tf1)
    np.testing.assert_array_equal(_embeddings(from_hub), expected)
    # The loaded values are the written ones, in trainable variables.
    assert len(from_hub.trainable_weights) == 18
    for layer in (from_tf1, from_hub):
        np.testing.assert_array_equal(
            layer.named_layers["conv3_2"].kernel.numpy(),
            published_weights["vggish/conv3/conv3_2/weights"],
        )
        np.testing.assert_array_equal(
            layer.named_layers["fc1_1"].kernel.numpy(),
            published_weights["vggish/fc1/fc1_1/weights"],
        )
    # The SavedModel's own call (tf.signal + tf.nn, one clip at a time) agrees too.
    served = tf.saved_model.load(str(published_files["saved_model"]))
    for clip, ours in zip(CLIPS, expected, strict=True):
        theirs = served(clip).numpy()
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours / scale, theirs / scale, rtol=0, atol=1e-4)


def test_torch_state_dict_gives_the_same_model(tiny_weights, tmp_path):
    prefix = checkpoints.write_tf1_checkpoint(tiny_weights, tmp_path / "tiny.ckpt")
    path = checkpoints.write_torch_state_dict(tiny_weights, tmp_path / "vggish.pth")
    from_tf1 = VGGish.from_pretrained(prefix, **TINY)
    from_torch = VGGish.from_pretrained(path, allow_pickle=True, **TINY)
    np.testing.assert_array_equal(_embeddings(from_torch), _embeddings(from_tf1))
    for name, layer in from_torch.named_layers.items():
        scope = f"{name.split('_')[0]}/{name}" if "_" in name else name
        np.testing.assert_array_equal(layer.kernel.numpy(), tiny_weights[f"vggish/{scope}/weights"])


@pytest.mark.slow  # convergence
def test_loaded_weights_train(tiny_weights, tmp_path):
    folder = checkpoints.write_saved_model(tiny_weights, tmp_path / "hub")
    layer = VGGish(pooling="mean", **TINY).load_pretrained(folder)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(CLIPS[:1]) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


def test_v2_checkpoint_prefix_and_folder(tiny_weights, tmp_path):
    prefix = checkpoints.write_tf1_checkpoint(tiny_weights, tmp_path / "model.ckpt", version="V2")
    assert os.path.exists(prefix + ".index")
    expected = _embeddings(VGGish(**TINY).load_pretrained(prefix))
    np.testing.assert_array_equal(_embeddings(VGGish.from_pretrained(tmp_path, **TINY)), expected)
    assert np.abs(expected).max() > 0


def test_hub_handle_resolves_from_the_tensorflow_hub_cache(tiny_weights, tmp_path, monkeypatch):
    handle = "https://tfhub.dev/google/vggish/1"
    cache = tmp_path / "tfhub_cache"
    checkpoints.write_saved_model(tiny_weights, cache / hashlib.sha1(handle.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    layer = VGGish.from_pretrained(handle, **TINY)
    local = VGGish.from_pretrained(cache / hashlib.sha1(handle.encode()).hexdigest(), **TINY)
    np.testing.assert_array_equal(_embeddings(layer), _embeddings(local))


def test_training_state_is_left_out_and_logged(tiny_weights, tmp_path, caplog):
    extra = {
        "global_step": np.array(7, np.int64),
        "vggish/conv1/weights/Adam": np.zeros((3, 3, 1, 2), np.float32),
        "beta1_power": np.array(0.9, np.float32),
    }
    prefix = checkpoints.write_tf1_checkpoint(tiny_weights, tmp_path / "train.ckpt", extra=extra)
    with caplog.at_level(logging.INFO, logger="mmrep"):
        layer = VGGish.from_pretrained(prefix, **TINY)
    assert (
        "left out training state ['beta1_power', 'global_step', 'vggish/conv1/weights/Adam']"
        in (caplog.text)
    )
    np.testing.assert_array_equal(
        layer.named_layers["conv1"].kernel.numpy(), tiny_weights["vggish/conv1/weights"]
    )


# === Checkpoints that do not fit ===


def test_missing_and_unexpected_variables_are_listed(tiny_weights, tmp_path):
    weights = {k: v for k, v in tiny_weights.items() if not k.startswith("vggish/fc2")}
    weights["vggish/fc3/weights"] = np.zeros((8, 4), np.float32)
    prefix = checkpoints.write_tf1_checkpoint(weights, tmp_path / "bad.ckpt")
    with pytest.raises(
        VGGishCheckpointError,
        match=r"missing \[vggish/fc2/biases, vggish/fc2/weights\]; unexpected \[vggish/fc3/weights\]",
    ):
        VGGish.from_pretrained(prefix, **TINY)


def test_wrong_shapes_name_both_shapes(tiny_weights, tmp_path):
    prefix = checkpoints.write_tf1_checkpoint(tiny_weights, tmp_path / "tiny.ckpt")
    with pytest.raises(
        VGGishCheckpointError,
        match=r"wrong shapes \[vggish/conv1/biases: \(2,\) \(layer \(64,\)\), "
        r"vggish/conv1/weights: \(3, 3, 1, 2\) \(layer \(3, 3, 1, 64\)\),",
    ):
        VGGish.from_pretrained(prefix)


def test_another_architecture_is_refused_with_its_names(tmp_path):
    yamnet_like = {
        f"layer{i}/depthwise_conv/depthwise_weights": np.zeros((3, 3, 4, 1), np.float32)
        for i in range(1, 30)
    }
    prefix = checkpoints.write_tf1_checkpoint(yamnet_like, tmp_path / "yamnet.ckpt")
    with pytest.raises(VGGishCheckpointError) as info:
        VGGish.from_pretrained(prefix, **TINY)
    message = str(info.value)
    assert "missing [vggish/conv1/biases, vggish/conv1/weights," in message
    assert "unexpected [layer1/depthwise_conv/depthwise_weights, layer10/" in message
    assert "... and 9 more]" in message


def test_pickle_needs_explicit_opt_in(tiny_weights, tmp_path):
    path = checkpoints.write_torch_state_dict(tiny_weights, tmp_path / "vggish.pth")
    with pytest.raises(VGGishCheckpointError, match=r"PyTorch pickle.*allow_pickle=True"):
        VGGish.from_pretrained(path, **TINY)


def test_torch_state_dict_with_unknown_keys_is_refused(tiny_weights, tmp_path):
    import torch

    extra = {"classifier.weight": torch.zeros(3, 4), "pproc.pca_means": torch.zeros(4, 1)}
    path = checkpoints.write_torch_state_dict(tiny_weights, tmp_path / "x.pth", extra=extra)
    with pytest.raises(VGGishCheckpointError, match=r"unexpected \[classifier.weight\]"):
        VGGish.from_pretrained(path, allow_pickle=True, **TINY)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda d: d / "absent.ckpt", FileNotFoundError, "not found"),
        (lambda d: d, VGGishCheckpointError, "neither saved_model.pb nor a TF1 `checkpoint`"),
        (
            lambda d: _write(d / "noise.ckpt", b"\x00not a checkpoint" * 10),
            VGGishCheckpointError,
            "not a TensorFlow checkpoint",
        ),
        (
            lambda d: _write(d / "vggish_pca_params.npz", b""),
            VGGishCheckpointError,
            "PCA parameters, not the network",
        ),
    ],
)
def test_unreadable_sources_are_named(make, error, match, tmp_path):
    source = make(tmp_path)
    with pytest.raises(error, match=match):
        load_vggish_weights(VGGish(**TINY), source)


def test_non_finite_weights_are_refused(tiny_weights, tmp_path):
    weights = dict(tiny_weights)
    weights["vggish/fc2/biases"] = np.full(4, np.nan, np.float32)
    prefix = checkpoints.write_tf1_checkpoint(weights, tmp_path / "nan.ckpt")
    with pytest.raises(
        VGGishCheckpointError, match=r"variables \['vggish/fc2/biases'\] hold NaN or Inf"
    ):
        VGGish.from_pretrained(prefix, **TINY)


def _write(path, data):
    path.write_bytes(data)
    return path


def test_hub_handle_not_in_the_cache_is_downloaded_into_it(tiny_weights, tmp_path, monkeypatch):
    """A user online: the handle's compressed SavedModel is fetched (here from a loopback
    server, as tfhub.dev serves `?tf-hub-format=compressed`), unpacked into the TF Hub
    cache, and read from there the next time without the server."""
    import io
    import tarfile

    folder = checkpoints.write_saved_model(tiny_weights, tmp_path / "published")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    server = serve_bytes(archive.getvalue())
    port = server.server_address[1]
    cache = tmp_path / "tfhub_cache"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    handle = f"http://127.0.0.1:{port}/google/vggish/1"
    try:
        downloaded = VGGish.from_pretrained(handle, **TINY)
    finally:
        server.shutdown()
        server.server_close()
    cached = cache / hashlib.sha1(handle.encode()).hexdigest()
    assert (cached / "saved_model.pb").is_file()
    expected = _embeddings(VGGish.from_pretrained(folder, **TINY))
    np.testing.assert_array_equal(_embeddings(downloaded), expected)
    again = VGGish.from_pretrained(handle, **TINY)  # the server is gone: from the cache
    np.testing.assert_array_equal(_embeddings(again), expected)


def test_hub_handle_offline_and_not_cached_names_the_cache_and_the_way_to_fill_it(
    tmp_path, monkeypatch
):
    server = serve_bytes(b"")
    port = server.server_address[1]
    server.shutdown()
    server.server_close()  # nothing listens on the port now
    cache = tmp_path / "tfhub_cache"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    handle = f"http://127.0.0.1:{port}/google/vggish/1"
    folder = cache / hashlib.sha1(handle.encode()).hexdigest()
    with pytest.raises(VGGishCheckpointError) as error:
        VGGish.from_pretrained(handle, **TINY)
    message = str(error.value)
    assert handle in message and str(folder) in message and "TFHUB_CACHE_DIR" in message
    assert "downloading them failed: URLError" in message
