"""The independent reference for the image encoder: plain keras.applications models.

`plain_model` builds the network as a user of keras.applications would (or `small_cnn`),
`reference_features` applies it to `preprocess_input(tf.image.resize(x, antialias=True))`
with the module's own `preprocess_input`, and the writers produce weight files in each
real layout with Keras's own writers.
"""

import h5py
import keras
import numpy as np
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from mmrep.encoders.image import small_cnn

APPLICATIONS = {
    "mobilenet_v3_small": (keras.applications.MobileNetV3Small, keras.applications.mobilenet_v3),
    "mobilenet_v3_large": (keras.applications.MobileNetV3Large, keras.applications.mobilenet_v3),
    "resnet50": (keras.applications.ResNet50, keras.applications.resnet50),
    "efficientnet_b0": (keras.applications.EfficientNetB0, keras.applications.efficientnet),
}


def blocky_images(shape, seed=0):
    """uint8 images of random 10x10-pixel blocks: content that differs between images."""
    batch, height, width, channels = shape
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (batch, -(-height // 10), -(-width // 10), channels))
    blocks = np.repeat(np.repeat(coarse, 10, axis=1), 10, axis=2)
    return blocks[:, :height, :width].astype("uint8")


def plain_model(name, size, pooling=None, include_top=False, **kwargs):
    """The backbone as keras.applications builds it, random weights (`small_cnn`: ours)."""
    if name == "small_cnn":
        model = small_cnn((size, size, 3), **kwargs)
        if pooling == "avg":
            model = keras.Model(model.input, keras.layers.GlobalAveragePooling2D()(model.output))
        return model
    constructor, _ = APPLICATIONS[name]
    return constructor(
        input_shape=(size, size, 3),
        include_top=include_top,
        weights=None,
        pooling=pooling,
        **kwargs,
    )


def preprocess_input(name, images):
    """The module's own `preprocess_input` on float 0..255 (small_cnn: Keras's "tf" mode)."""
    if name == "small_cnn":
        return keras.applications.imagenet_utils.preprocess_input(images, mode="tf")
    return APPLICATIONS[name][1].preprocess_input(images)


def reference_features(model, name, images, size):
    """`model(preprocess_input(tf.image.resize(images, (size, size), antialias=True)))`."""
    resized = tf.image.resize(tf.cast(images, "float32"), (size, size), antialias=True)
    return model(preprocess_input(name, resized.numpy()), training=False).numpy()


def randomize(model, seed=0):
    """Gives BatchNormalization and Normalization statistics non-trivial random values.

    Kernels keep their (random) initialisation; BN's gamma/beta/moving statistics and the
    EfficientNet `Normalization` mean/variance would otherwise be identities.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name, shape = variable.path.rsplit("/", 1)[-1], tuple(variable.shape)
        if name in ("gamma", "moving_variance", "variance"):
            variable.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif name in ("beta", "moving_mean", "mean"):
            variable.assign(rng.normal(0.0, 0.2, shape).astype("float32"))
    for layer in model.layers:
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    return model


def calibrate(model, name, seed=0, preprocess=None):
    """Sets every BatchNormalization's moving statistics to those of a batch of images.

    A deep random network with initial statistics (mean 0, variance 1) shrinks or blurs
    its input until all images give nearly the same output, so that a comparison could
    not tell them apart; with calibrated statistics each block sees unit-variance
    activations and the output depends on the image. One training-mode call with momentum
    0 sets all of them at once. The batch is `blocky_images` at the model's input size,
    through `preprocess` (default: the module's `preprocess_input`).
    """
    height, width = model.input.shape[1:3]
    images = blocky_images((4, height, width, 3), seed=seed + 100).astype("float32")
    preprocess = preprocess or (lambda x: preprocess_input(name, x))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.trainable) for layer in norms]
    for layer in norms:
        # A frozen BatchNormalization (an encoder's) would ignore training=True.
        layer.momentum, layer.trainable = 0.0, True
    model(preprocess(images), training=True)
    for layer, (momentum, trainable) in zip(norms, saved, strict=True):
        layer.momentum, layer.trainable = momentum, trainable
    return model


def random_network(name, size, seed=0, **kwargs):
    """`plain_model` with random statistics, then calibrated: outputs depend on the input."""
    return calibrate(randomize(plain_model(name, size, **kwargs), seed), name, seed)


def write_legacy_h5(model, path):
    """Keras's legacy HDF5 weights layout (keras.applications' files): root `layer_names`."""
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return path


def write_keras2_h5(model, path):
    """The layout of the files keras.applications downloads, written by Keras 2 (TF 2.x).

    Root attributes `layer_names`, `backend`, `keras_version`; per layer a group whose
    `weight_names` are `<layer>/<variable>:0` (`depthwise_kernel` for depthwise
    convolutions), each a dataset at that path inside the group.
    """
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.9.0"
        for layer in model.layers:
            group = handle.create_group(layer.name)
            names = []
            for variable in layer.weights:
                short = variable.name
                if isinstance(layer, keras.layers.DepthwiseConv2D) and short == "kernel":
                    short = "depthwise_kernel"
                names.append(f"{layer.name}/{short}:0")
                group.create_dataset(names[-1], data=variable.numpy())
            group.attrs["weight_names"] = [name.encode() for name in names]
    return path


def scaled_error(actual, expected):
    """Largest difference relative to how much the reference varies between images.

    Dividing by the spread over the batch (not the magnitude) makes a network whose
    output hardly depends on its input fail the comparison instead of passing it.
    """
    expected = np.asarray(expected, "float64")
    spread = np.abs(expected - expected.mean(axis=0)).max()
    assert spread > 0, "the reference gives the same output for every image"
    return float(np.abs(np.asarray(actual, "float64") - expected).max() / spread)
