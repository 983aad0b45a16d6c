"""ImageEncoder against plain keras.applications models: preprocessing, resizing, inputs, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.encoders.image import BACKBONES, ImageEncoder
from tests.encoders.image import reference as ref

RNG = np.random.default_rng(5)
SIZES = {"small_cnn": 32}  # keras.applications backbones: 64x64 to keep the tests fast
IMAGES = ref.blocky_images((2, 50, 70, 3), seed=5)


def _size(name):
    return SIZES.get(name, 64)


@pytest.mark.parametrize(
    ("name", "pooling"),
    [
        ("mobilenet_v3_small", "avg"),
        ("mobilenet_v3_large", "max"),
        ("resnet50", "avg"),
        ("efficientnet_b0", None),
        ("small_cnn", None),
    ],
)
def test_matches_keras_applications_on_resized_preprocessed_images(name, pooling):
    size = _size(name)
    plain = ref.random_network(name, size, seed=1, pooling=pooling)
    encoder = ImageEncoder(name, image_size=size, pooling=pooling)
    encoder.backbone_model.set_weights(plain.get_weights())
    for layer in encoder.backbone_model.layers:
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()

    expected = ref.reference_features(plain, name, IMAGES, size)
    got = keras.ops.convert_to_numpy(encoder(IMAGES))
    assert got.shape == expected.shape == (2, *encoder.compute_output_shape(IMAGES.shape)[1:])
    assert ref.scaled_error(got, expected) < 1e-5


@pytest.mark.parametrize("name", ["resnet50", "small_cnn", "mobilenet_v3_small"])
def test_preprocess_is_exactly_keras_preprocess_input(name):
    encoder = ImageEncoder(name, image_size=(40, 36))
    expected = ref.preprocess_input(
        name, tf.image.resize(IMAGES.astype("float32"), (40, 36), antialias=True).numpy()
    )
    got = encoder.preprocess(IMAGES)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), expected)


def test_output_dims_and_feature_maps():
    expected = {
        "mobilenet_v3_small": 576,
        "mobilenet_v3_large": 960,
        "resnet50": 2048,
        "efficientnet_b0": 1280,
        "small_cnn": 64,
    }
    assert set(expected) == set(BACKBONES)
    for name, dim in expected.items():
        encoder = ImageEncoder(name, image_size=64, pooling=None)
        assert encoder.output_dim == dim
        # Five stride-2 stages for the ImageNet networks, two pools for small_cnn.
        side = 16 if name == "small_cnn" else 2
        assert encoder.feature_map_shape == (side, side, dim)
    assert ImageEncoder("resnet50").image_size == (224, 224)
    assert ImageEncoder("small_cnn").image_size == (32, 32)


def test_uint8_and_float_inputs_in_their_value_range_agree():
    byte_encoder = ImageEncoder("small_cnn", image_size=(24, 28))
    ref.calibrate(ref.randomize(byte_encoder.backbone_model), "small_cnn")
    unit_encoder = ImageEncoder("small_cnn", image_size=(24, 28), value_range=(0, 1))
    signed_encoder = ImageEncoder("small_cnn", image_size=(24, 28), value_range=(-1, 1))
    unit_encoder.set_weights(byte_encoder.get_weights())
    signed_encoder.set_weights(byte_encoder.get_weights())
    expected = byte_encoder(IMAGES).numpy()
    unit = IMAGES.astype("float32") / 255.0
    assert ref.scaled_error(unit_encoder(unit).numpy(), expected) < 1e-5
    assert ref.scaled_error(signed_encoder(unit * 2.0 - 1.0).numpy(), expected) < 1e-5
    # Float input in 0..255 is the default range.
    assert ref.scaled_error(byte_encoder(IMAGES.astype("float64")).numpy(), expected) < 1e-6
    # ...and the range matters: [0, 1] floats read as 0..255 give something else.
    assert ref.scaled_error(byte_encoder(unit).numpy(), expected) > 1e-2


def test_dynamic_image_sizes_in_a_tf_function():
    encoder = ImageEncoder("small_cnn", image_size=32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def encode(images):
        return encoder(images)

    for shape in [(2, 50, 70, 3), (1, 20, 30, 3)]:
        images = RNG.integers(0, 256, shape).astype("uint8")
        np.testing.assert_allclose(encode(images).numpy(), encoder(images).numpy(), atol=1e-6)
    # At the target size the static path skips the resize; the dynamic one resizes to
    # the same size, which must change nothing.
    images = RNG.integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    np.testing.assert_allclose(encode(images).numpy(), encoder(images).numpy(), atol=1e-6)
    # A symbolic input with unknown height and width gives a static output shape.
    inputs = keras.Input((None, None, 3), dtype="uint8")
    assert tuple(encoder(inputs).shape) == (None, 64)


def test_greyscale_is_repeated_to_rgb():
    encoder = ImageEncoder("small_cnn", pooling=None)
    grey = IMAGES[..., :1]
    np.testing.assert_array_equal(
        encoder(grey).numpy(), encoder(np.repeat(grey, 3, axis=-1)).numpy()
    )


def test_mixed_precision_preprocesses_in_float32():
    full = ImageEncoder("small_cnn")
    ref.calibrate(ref.randomize(full.backbone_model, seed=2), "small_cnn")
    half = ImageEncoder("small_cnn", dtype="mixed_float16")
    half.set_weights(full.get_weights())
    assert all(v.dtype == "float32" for v in half.weights)
    assert keras.backend.standardize_dtype(half.preprocess(IMAGES).dtype) == "float32"
    out = half(IMAGES)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert ref.scaled_error(out.numpy(), full(IMAGES).numpy()) < 1e-2
    # MobileNetV3's in-model Rescaling stays in float32; the convolutions follow the policy.
    mobilenet = ImageEncoder("mobilenet_v3_small", image_size=32, dtype="mixed_bfloat16")
    layers = {type(layer).__name__: layer for layer in mobilenet.backbone_model.layers}
    assert layers["Rescaling"].compute_dtype == "float32"
    assert layers["Conv2D"].compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in mobilenet.weights)
    assert np.isfinite(mobilenet(IMAGES).numpy().astype("float32")).all()


def test_bad_images_are_refused_with_what_was_expected():
    encoder = ImageEncoder("small_cnn")
    with pytest.raises(
        ValueError, match=r"shape \[batch, height, width, channels\].*\(50, 70, 3\)"
    ):
        encoder(IMAGES[0])
    with pytest.raises(ValueError, match=r"3 \(RGB\) or 1.*\(2, 50, 70, 4\)"):
        encoder(np.zeros((2, 50, 70, 4), "uint8"))
    with pytest.raises(TypeError, match=r"uint8 images.*dtype=bool"):
        encoder(np.zeros((2, 8, 8, 3), bool))
    with pytest.raises(TypeError, match="dtype=int32; cast integer pixels"):
        encoder(np.zeros((2, 8, 8, 3), "int32"))
    with pytest.raises(TypeError, match="dtype=string"):
        encoder(keras.Input((8, 8, 3), dtype="string"))
    with pytest.raises(ValueError, match=r"Received: shape=\(None, 8, 8, 2\)"):
        encoder(keras.Input((8, 8, 2)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "vgg16"}, "Expected `backbone` to be one of"),
        ({"pooling": "mean"}, "Received: pooling='mean'"),
        ({"image_size": (32,)}, "Received: image_size=\\(32,\\)"),
        ({"image_size": 0}, "Received: image_size=0"),
        ({"value_range": (1, 0)}, "low < high"),
        ({"trainable_blocks": 4}, r"\[0, 3\].*4"),
        ({"trainable_blocks": -1}, "Received: trainable_blocks=-1"),
        ({"backbone_kwargs": {"include_top": True}}, "cannot set \\['include_top'\\]"),
        ({"backbone_kwargs": {"filters": []}}, "Received: filters=\\[\\]"),
        ({"freeze_batchnorm": "yes"}, "freeze_batchnorm"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageEncoder(**{"backbone": "small_cnn", **kwargs})


def test_config_records_the_resolved_choices():
    encoder = ImageEncoder(
        "small_cnn",
        image_size=24,
        value_range=(0, 1),
        backbone_kwargs={"filters": [4, 8]},
        trainable_blocks=1,
        name="images",
    )
    config = encoder.get_config()
    assert config["image_size"] == [24, 24]
    assert config["value_range"] == [0.0, 1.0]
    assert config["weights"] is None
    assert config["trainable_blocks"] == 1
    revived = ImageEncoder.from_config(config)
    assert revived.get_config() == config
    assert revived.output_dim == 8
