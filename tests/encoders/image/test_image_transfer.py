"""Transfer learning: frozen backbones, frozen BatchNormalization, top-N blocks, kept on reload."""

import keras
import numpy as np
import pytest

from mmrep.encoders.image import BACKBONES, ImageEncoder
from tests.encoders.image import reference as ref

IMAGES = ref.blocky_images((8, 36, 36, 3), seed=7)
TARGETS = np.random.default_rng(8).standard_normal((8, 3)).astype("float32")


def _classifier(encoder):
    images = keras.Input((None, None, 3), dtype="uint8")
    model = keras.Model(images, keras.layers.Dense(3, name="head")(encoder(images)))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def _fit(encoder, steps=3):
    """Fits encoder + Dense head; returns {path: (before, after)} of every variable."""
    model = _classifier(encoder)
    before = {v.path: v.numpy().copy() for v in model.weights}
    model.fit(IMAGES, TARGETS, batch_size=4, epochs=steps // 2 + 1, verbose=0, shuffle=False)
    return {v.path: (before[v.path], v.numpy()) for v in model.weights}


def _changed(weights, contains):
    return {
        path: not np.array_equal(old, new)
        for path, (old, new) in weights.items()
        if contains in path
    }


def test_keras_runs_a_frozen_batchnorm_in_inference_mode():
    """The Keras 3 behaviour the encoder relies on, checked rather than assumed."""
    x = np.random.default_rng(0).normal(3.0, 2.0, (16, 4)).astype("float32")
    norm = keras.layers.BatchNormalization()
    norm.build(x.shape)
    norm.trainable = False
    np.testing.assert_array_equal(norm(x, training=True).numpy(), norm(x, training=False).numpy())
    np.testing.assert_array_equal(norm.moving_mean.numpy(), 0.0)
    norm.trainable = True
    assert not np.allclose(norm(x, training=True).numpy(), norm(x, training=False).numpy())
    assert not np.allclose(norm.moving_mean.numpy(), 0.0)


def test_frozen_encoder_changes_nothing_but_the_head():
    encoder = ImageEncoder("small_cnn", trainable=False)
    ref.randomize(encoder.backbone_model)
    # In training mode a frozen encoder computes what it computes at inference.
    np.testing.assert_array_equal(
        encoder(IMAGES, training=True).numpy(), encoder(IMAGES, training=False).numpy()
    )
    assert encoder.trainable_weights == []
    weights = _fit(encoder)
    backbone = _changed(weights, "block")
    assert len(backbone) == 15  # 3 kernels + 3 x (gamma, beta, moving mean, moving variance)
    assert not any(backbone.values()), [p for p, c in backbone.items() if c]
    assert all(_changed(weights, "head/").values())


def test_trainable_encoder_with_batchnorm_frozen_trains_only_kernels():
    encoder = ImageEncoder("small_cnn", freeze_batchnorm=True)
    np.testing.assert_array_equal(
        encoder(IMAGES, training=True).numpy(), encoder(IMAGES, training=False).numpy()
    )
    weights = _fit(encoder)
    assert all(_changed(weights, "_conv/kernel").values())
    batchnorm = _changed(weights, "_bn/")
    assert len(batchnorm) == 12 and not any(batchnorm.values())


def test_control_unfrozen_batchnorm_updates_its_statistics():
    """Without freezing the statistics move: the tests above can fail."""
    encoder = ImageEncoder("small_cnn", freeze_batchnorm=False)
    assert not np.allclose(
        encoder(IMAGES, training=True).numpy(), encoder(IMAGES, training=False).numpy()
    )
    weights = _fit(encoder)
    for name in ("moving_mean", "moving_variance", "gamma", "_conv/kernel"):
        changed = _changed(weights, name)
        assert changed and all(changed.values()), name


def test_trainable_blocks_update_exactly_the_top_blocks():
    encoder = ImageEncoder(
        "mobilenet_v3_small", image_size=32, trainable_blocks=3, freeze_batchnorm=True
    )
    # Calibrated statistics, so that every layer passes on a gradient (see reference.py).
    ref.calibrate(ref.randomize(encoder.backbone_model), "mobilenet_v3_small")
    assert encoder.blocks[-3:] == ["expanded_conv_9", "expanded_conv_10", "conv_1"]
    top = {layer.name for block in encoder.blocks[-3:] for layer in encoder.block_layers(block)}
    weights = _fit(encoder, steps=2)
    backbone = {layer.name for layer in encoder.backbone_model.layers}
    checked = 0
    for path, (old, new) in weights.items():
        layer = path.split("/")[0]
        if layer not in backbone:
            continue
        trains = layer in top and not layer.endswith("_bn")
        assert (not np.array_equal(old, new)) == trains, (path, trains)
        checked += 1
    assert checked == len(encoder.weights)
    trained = {v.path.split("/")[0] for v in encoder.trainable_weights}
    get = encoder.backbone_model.get_layer
    assert trained == {name for name in top if get(name).weights and not name.endswith("_bn")}


def test_freezing_is_reapplied_when_trainable_is_toggled_and_kept_in_the_config(tmp_path):
    encoder = ImageEncoder("small_cnn", trainable_blocks=1, freeze_batchnorm=True)
    expected = ["block3_conv/kernel"]
    assert [v.path for v in encoder.trainable_weights] == expected
    encoder.trainable = False
    assert encoder.trainable_weights == []
    encoder.trainable = True  # Keras would unfreeze every sublayer; the choice holds
    assert [v.path for v in encoder.trainable_weights] == expected
    encoder.unfreeze_top_blocks(2)
    assert len(encoder.trainable_weights) == 2
    assert encoder.get_config()["trainable_blocks"] == 2
    encoder.unfreeze_top_blocks(None)
    assert len(encoder.trainable_weights) == 3

    frozen = ImageEncoder("small_cnn", trainable_blocks=2, trainable=False, freeze_batchnorm=True)
    model = _classifier(frozen)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras").layers[1]
    assert isinstance(reloaded, ImageEncoder)
    assert reloaded.trainable is False and reloaded.trainable_weights == []
    reloaded.trainable = True
    assert [v.path for v in reloaded.trainable_weights] == [
        "block2_conv/kernel",
        "block3_conv/kernel",
    ]


@pytest.mark.parametrize(
    ("name", "count"),
    [
        # Stem + bottleneck blocks (MobileNetV3 paper, tables 1-2) + final 1x1 conv.
        ("mobilenet_v3_small", 1 + 11 + 1),
        ("mobilenet_v3_large", 1 + 15 + 1),
        # Stem + 3 + 4 + 6 + 3 bottleneck blocks.
        ("resnet50", 1 + 16),
        # Stem + 1 + 2 + 2 + 3 + 3 + 4 + 1 MBConv blocks + top conv.
        ("efficientnet_b0", 1 + 16 + 1),
        ("small_cnn", 3),
    ],
)
def test_blocks_partition_the_trainable_layers_bottom_to_top(name, count):
    encoder = ImageEncoder(name, image_size=32, freeze_batchnorm=False)
    assert len(encoder.blocks) == count
    layers = encoder.backbone_model.layers
    position = {id(layer): i for i, layer in enumerate(layers)}
    seen, last_start = set(), -1
    for block in encoder.blocks:
        members = encoder.block_layers(block)
        assert not seen & {id(layer) for layer in members}
        seen |= {id(layer) for layer in members}
        start = min(position[id(layer)] for layer in members)
        assert start > last_start
        last_start = start
    weighted = {id(layer) for layer in layers if layer.trainable_weights}
    assert weighted <= seen
    assert BACKBONES[name].block_of(layers[-1].name) in (encoder.blocks[-1], None)


def test_batchnorm_freezes_by_default_only_when_weights_are_loaded(tmp_path):
    """Random initialisation trains from scratch (statistics move); loaded weights transfer."""
    scratch = ImageEncoder("small_cnn")
    assert scratch.freeze_batchnorm is False
    assert not np.allclose(
        scratch(IMAGES, training=True).numpy(), scratch(IMAGES, training=False).numpy()
    )
    path = str(tmp_path / "small_cnn.weights.h5")
    scratch.backbone_model.save_weights(path)
    transfer = ImageEncoder("small_cnn", weights=path)
    assert transfer.freeze_batchnorm is True
    np.testing.assert_array_equal(
        transfer(IMAGES, training=True).numpy(), transfer(IMAGES, training=False).numpy()
    )
    # The resolved choice is what the config keeps (its `weights` is None).
    revived = ImageEncoder.from_config(transfer.get_config())
    assert revived.get_config()["weights"] is None and revived.freeze_batchnorm is True
