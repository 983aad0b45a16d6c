"""Image encoder benchmarks."""

import keras
import numpy as np
import tensorflow as tf

from mmrep.encoders.image import ImageEncoder
from tests.benchmarks.runner import Comparison, benchmark


@benchmark("image_encoder")
def image_encoder(size="full"):
    """ImageEncoder (uint8 in, resize + preprocessing in the graph) vs keras.applications."""
    name, constructor, batch, side, target = (
        "resnet50",
        keras.applications.ResNet50,
        32,
        256,
        224,
    )
    if size == "smoke":
        name, constructor, batch, side, target = (
            "mobilenet_v3_small",
            keras.applications.MobileNetV3Small,
            2,
            40,
            32,
        )
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, side, side, 3)), "uint8")
    encoder = ImageEncoder(name, image_size=target)
    ours = tf.function(lambda: encoder(images))

    # The reference: the same network from keras.applications with the same weights, fed
    # the way its documentation says (resize, then the module's preprocess_input).
    plain = constructor(
        input_shape=(target, target, 3), include_top=False, weights=None, pooling="avg"
    )
    plain.set_weights(encoder.backbone_model.get_weights())
    module = keras.applications.resnet50 if name == "resnet50" else keras.applications.mobilenet_v3

    def documented():
        resized = tf.image.resize(tf.cast(images, "float32"), (target, target), antialias=True)
        return plain(module.preprocess_input(resized), training=False)

    return Comparison(
        mmrep=ours,
        reference=tf.function(documented),
        reference_name=f"keras.applications {constructor.__name__} + tf.image.resize + "
        "preprocess_input (tf.function)",
        work=f"{name}, batch {batch} uint8 {side}x{side} -> {target}x{target} -> pooled",
        items=batch,
    )
