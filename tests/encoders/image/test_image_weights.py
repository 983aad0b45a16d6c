"""Weights files: every format Keras writes loads to the source model's outputs; others refused."""

import logging
import zipfile

import h5py
import keras
import numpy as np
import pytest

from mmrep.encoders.image import ImageEncoder, ImageWeightsError, load_backbone_weights
from mmrep.encoders.image.backbones import get_backbone
from tests.encoders.image import reference as ref
from tests.loopback import serve_bytes

SIZE = 32
IMAGES = ref.blocky_images((2, 45, 38, 3), seed=11)


@pytest.fixture(scope="module")
def source():
    """A MobileNetV3Small without top, random weights and statistics."""
    return ref.random_network("mobilenet_v3_small", SIZE, seed=3)


@pytest.fixture(scope="module")
def full_source():
    """The same network with its classification top (conv_2, logits)."""
    return ref.random_network("mobilenet_v3_small", SIZE, seed=4, include_top=True)


def _features_below_top(full, notop):
    """What the no-top part of a full keras.applications model computes."""
    return keras.Model(full.input, full.layers[len(notop.layers) - 1].output)


def _write(model, path):
    kind = path.name.split(".", 1)[1]
    if kind == "h5":
        return ref.write_legacy_h5(model, path)
    if kind == "keras2.h5":
        return ref.write_keras2_h5(model, path)
    if kind == "legacy_model.h5":
        target = path.with_name(path.name.replace("legacy_model.", ""))
        model.save(target)  # Keras's legacy whole-model HDF5 (a `model_weights` group)
        return target
    if kind == "weights.h5":
        model.save_weights(path)
    else:
        model.save(path)
    return path


@pytest.mark.parametrize(
    ("layout", "top"),
    [
        ("keras2.h5", False),  # keras.applications' *_notop.h5 files, as Keras 2 wrote them
        ("h5", False),  # Keras 3's legacy HDF5 writer
        ("h5", True),  # ... and its full files
        ("legacy_model.h5", True),  # model.save("x.h5"): a `model_weights` group
        ("keras", False),
        ("keras", True),
        ("weights.h5", False),
        ("weights.h5", True),
    ],
)
def test_every_format_loads_the_source_weights(layout, top, source, full_source, tmp_path):
    model = full_source if top else source
    path = _write(model, tmp_path / f"source.{layout}")
    encoder = ImageEncoder("mobilenet_v3_small", weights=path, image_size=SIZE, pooling=None)
    reference_model = _features_below_top(model, source) if top else model
    expected = ref.reference_features(reference_model, "mobilenet_v3_small", IMAGES, SIZE)
    assert ref.scaled_error(encoder(IMAGES).numpy(), expected) < 1e-5
    by_name = {layer.name: layer for layer in model.layers}
    for layer in (layer for layer in encoder.backbone_model.layers if layer.weights):
        for mine, theirs in zip(layer.weights, by_name[layer.name].weights, strict=True):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_loading_logs_what_was_set_aside(full_source, tmp_path, caplog):
    path = ref.write_legacy_h5(full_source, tmp_path / "full.h5")
    with caplog.at_level(logging.INFO, logger="mmrep"):
        ImageEncoder("mobilenet_v3_small", weights=path, image_size=SIZE)
    assert "set aside the classification top ['conv_2', 'logits']" in caplog.text
    assert "loaded 86 layers" in caplog.text


def test_saved_encoder_does_not_need_the_weights_file(source, tmp_path):
    path = ref.write_legacy_h5(source, tmp_path / "backbone.h5")
    images = keras.Input((None, None, 3), dtype="uint8")
    encoder = ImageEncoder("mobilenet_v3_small", weights=path, image_size=SIZE)
    model = keras.Model(images, keras.layers.Dense(3)(encoder(images)))
    expected = model(IMAGES).numpy()
    model.save(tmp_path / "model.keras")
    path.unlink()
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded(IMAGES).numpy(), expected, atol=1e-6)


def test_another_backbone_is_refused_by_name(source, tmp_path):
    path = ref.write_legacy_h5(source, tmp_path / "mobilenet_v3_small.h5")
    with pytest.raises(ImageWeightsError) as error:
        ImageEncoder("resnet50", weights=path, image_size=SIZE)
    message = str(error.value)
    assert "not the weights of backbone 'resnet50'" in message
    assert "missing 106 layers (of blocks [conv1, conv2_block1, conv2_block2" in message
    assert "[conv1_conv, conv1_bn, conv2_block1_1_conv" in message
    assert "unexpected 86 layers [conv, conv_bn, expanded_conv_depthwise" in message


@pytest.mark.parametrize("layout", ["h5", "weights.h5"])
def test_small_into_large_is_refused(source, layout, tmp_path):
    path = _write(source, tmp_path / f"small.{layout}")
    with pytest.raises(ImageWeightsError) as error:
        ImageEncoder("mobilenet_v3_large", weights=path, image_size=SIZE)
    message = str(error.value)
    assert "not the weights of backbone 'mobilenet_v3_large'" in message
    assert "wrong shapes in " in message
    # The blocks of Large that Small lacks are named.
    assert "(of blocks [expanded_conv_11, expanded_conv_12, expanded_conv_13, " in message


def test_width_multiplier_mismatch_is_refused_and_nothing_is_assigned(tmp_path):
    narrow = ref.plain_model("mobilenet_v3_small", SIZE, alpha=0.75)
    path = ref.write_legacy_h5(narrow, tmp_path / "alpha_075.h5")
    encoder = ImageEncoder("mobilenet_v3_small", image_size=SIZE)
    before = encoder.get_weights()
    with pytest.raises(
        ImageWeightsError,
        match=r"wrong shapes in \d+ layers \[expanded_conv_3_project/kernel: \(1, 1, 96, 32\) \(layer \(1, 1, 96, 40\)\)",
    ):
        encoder.load_pretrained(path)
    for old, new in zip(before, encoder.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    # With the same width multiplier, the file loads.
    narrow_encoder = ImageEncoder(
        "mobilenet_v3_small", image_size=SIZE, backbone_kwargs={"alpha": 0.75}
    )
    load_backbone_weights(narrow_encoder.backbone_model, "mobilenet_v3_small", path)
    conv = narrow_encoder.backbone_model.get_layer("expanded_conv_3_project")
    np.testing.assert_array_equal(
        conv.kernel.numpy(), narrow.get_layer("expanded_conv_3_project").kernel.numpy()
    )


def test_urls_are_refused_with_the_way_to_pass_a_file():
    with pytest.raises(ValueError, match=r"Received the URL .*download the file and pass its path"):
        ImageEncoder("resnet50", weights="https://storage.googleapis.com/weights.h5")
    with pytest.raises(ValueError, match=r"'small_cnn' has no ImageNet weights"):
        ImageEncoder("small_cnn", weights="imagenet")


def test_imagenet_weights_are_read_from_the_keras_cache(source, tmp_path, monkeypatch):
    """keras.applications keeps its download at `$KERAS_HOME/models/<file>`: the file found
    there (here the test network, written as keras.applications' own no-top .h5) is loaded
    without any network access."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    spec = get_backbone("mobilenet_v3_small")
    cached = tmp_path / "keras_home" / "models" / spec.imagenet_file
    cached.parent.mkdir(parents=True)
    ref.write_keras2_h5(source, cached)
    encoder = ImageEncoder("mobilenet_v3_small", weights="ImageNet", image_size=SIZE, pooling=None)
    expected = ref.reference_features(source, "mobilenet_v3_small", IMAGES, SIZE)
    assert ref.scaled_error(encoder(IMAGES).numpy(), expected) < 1e-5


def test_imagenet_weights_not_cached_are_downloaded_into_the_cache(source, tmp_path, monkeypatch):
    """A user online: the file is fetched (here from a loopback server standing in for
    storage.googleapis.com), its MD5 checked, kept in the Keras cache and loaded. A
    download whose MD5 differs from the one keras.applications publishes is refused."""
    import dataclasses
    import hashlib

    from mmrep.encoders.image import backbones

    published = ref.write_keras2_h5(source, tmp_path / "published.h5")
    server = serve_bytes(published.read_bytes())
    url = f"http://127.0.0.1:{server.server_address[1]}/weights.h5"
    spec = backbones.BACKBONES["mobilenet_v3_small"]
    md5 = hashlib.md5(published.read_bytes()).hexdigest()
    monkeypatch.setitem(
        backbones.BACKBONES,
        spec.name,
        dataclasses.replace(spec, imagenet_url=url, imagenet_md5=md5),
    )
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    try:
        encoder = ImageEncoder(
            "mobilenet_v3_small", weights="imagenet", image_size=SIZE, pooling=None
        )
        cached = tmp_path / "keras_home" / "models" / spec.imagenet_file
        assert cached.read_bytes() == published.read_bytes()
        expected = ref.reference_features(source, "mobilenet_v3_small", IMAGES, SIZE)
        assert ref.scaled_error(encoder(IMAGES).numpy(), expected) < 1e-5

        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "other_home"))
        monkeypatch.setitem(
            backbones.BACKBONES,
            spec.name,
            dataclasses.replace(spec, imagenet_url=url, imagenet_md5="0" * 32),
        )
        with pytest.raises(ImageWeightsError, match="failed"):
            ImageEncoder("mobilenet_v3_small", weights="imagenet", image_size=SIZE)
    finally:
        server.shutdown()
        server.server_close()


def test_imagenet_weights_offline_name_the_file_the_cache_and_the_fix(tmp_path, monkeypatch):
    import dataclasses
    import socket

    from mmrep.encoders.image import backbones

    spec = backbones.BACKBONES["resnet50"]
    with socket.socket() as probe:  # a loopback port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{spec.imagenet_file}"
    monkeypatch.setitem(backbones.BACKBONES, spec.name, dataclasses.replace(spec, imagenet_url=url))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    cached = tmp_path / "keras_home" / "models" / spec.imagenet_file
    with pytest.raises(ImageWeightsError) as error:
        ImageEncoder("resnet50", weights="imagenet")
    message = str(error.value)
    assert spec.imagenet_file in message and str(cached) in message and url in message
    assert "copy the file to" in message and not cached.exists()


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.h5"):
        ImageEncoder("small_cnn", weights=tmp_path / "nowhere.h5")
    with pytest.raises(ValueError, match=r"to name a file.*the folder"):
        ImageEncoder("small_cnn", weights=tmp_path)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(ImageWeightsError, match=r"junk\.h5: neither a \.keras archive nor an HDF5"):
        ImageEncoder("small_cnn", weights=junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(ImageWeightsError, match=r"no Keras weights layout.*\['x'\]"):
        ImageEncoder("small_cnn", weights=other)
    archive = tmp_path / "archive.keras"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("readme.txt", "hello")
    with pytest.raises(ImageWeightsError, match=r"without config\.json and model\.weights\.h5"):
        ImageEncoder("small_cnn", weights=archive)


def test_non_finite_weights_are_refused(tmp_path):
    model = ref.plain_model("small_cnn", SIZE)
    model.get_layer("block2_conv").kernel.assign(
        np.full(model.get_layer("block2_conv").kernel.shape, np.nan, "float32")
    )
    path = ref.write_legacy_h5(model, tmp_path / "nan.h5")
    with pytest.raises(ImageWeightsError, match=r"\['block2_conv'\] hold NaN or Inf"):
        ImageEncoder("small_cnn", weights=path)


def test_efficientnet_imagenet_normalization_is_what_weights_imagenet_computes(tmp_path, caplog):
    """ImageNet files store the channel stddevs as the Normalization variance (#49930).

    Compared at the stem convolution, right after the normalisation: deeper, a random
    network amplifies float32 round-off (the two sides divide by `std` in different
    ways) beyond any useful tolerance.
    """
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    plain = ref.randomize(ref.plain_model("efficientnet_b0", SIZE), seed=5)
    norm = next(x for x in plain.layers if isinstance(x, keras.layers.Normalization))

    def set_normalization(mean, variance):
        norm.adapt_mean.assign(np.asarray(mean, "float32"))
        norm.adapt_variance.assign(np.asarray(variance, "float32"))
        norm.finalize_state()

    def stem(model):
        return keras.Model(model.input, model.get_layer("stem_conv").output)

    # The reference: the published normalisation, (x / 255 - mean) / std (Keras's "torch"
    # mode), fed to the same network with an identity Normalization.
    resized = keras.ops.image.resize(IMAGES.astype("float32"), (SIZE, SIZE), antialias=True)
    resized = keras.ops.convert_to_numpy(resized)
    torch_mode = keras.applications.imagenet_utils.preprocess_input(resized, mode="torch")
    set_normalization(np.zeros(3), np.ones(3))
    expected = stem(plain)(255.0 * torch_mode).numpy()

    set_normalization(mean, std)  # as in efficientnetb0_notop.h5
    path = ref.write_legacy_h5(plain, tmp_path / "efficientnetb0_notop.h5")
    with caplog.at_level(logging.INFO, logger="mmrep"):
        encoder = ImageEncoder("efficientnet_b0", weights=path, image_size=SIZE)
    assert "holds ImageNet standard deviations as its variance" in caplog.text
    got = stem(encoder.backbone_model)(encoder.preprocess(IMAGES)).numpy()
    assert ref.scaled_error(got, expected) < 1e-5
    # Keras's own load of the file (without the compensation) computes something else.
    assert ref.scaled_error(stem(plain)(resized).numpy(), expected) > 0.1
