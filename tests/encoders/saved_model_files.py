"""Small SavedModels in the real formats, written by the tests themselves.

- `image_model`: a Keras Conv - BatchNorm - ReLU - pool - Dropout - Dense net whose batch
  norm statistics are away from their initial values, exported with `model.export`.
- `save_multi_io`: the same Keras model saved with `tf.saved_model.save` behind a custom
  two-input, three-output signature and a TF Hub-style `__call__(image, training)`
  (Reusable SavedModel API: `variables`, `trainable_variables`).
- `save_hub_module`: a tiny Reusable SavedModel whose `__call__` behaves differently in
  training and lists one variable as not trainable.
"""

import keras
import numpy as np
import tensorflow as tf

IMAGE_SHAPE = (8, 8, 3)
NUM_CLASSES = 5


def image_model(seed=0):
    """The Keras reference model: `[B, 8, 8, 3]` -> logits `[B, 5]`."""
    init = keras.initializers.GlorotUniform(seed=seed)
    # float32 whatever the global policy when the file is first written (a mixed
    # precision check may be the first to ask for it).
    f32 = {"dtype": "float32"}
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = keras.layers.Conv2D(4, 3, kernel_initializer=init, name="conv", **f32)(inputs)
    x = keras.layers.BatchNormalization(name="bn", **f32)(x)
    x = keras.layers.ReLU(name="relu", **f32)(x)
    features = keras.layers.GlobalAveragePooling2D(name="pool", **f32)(x)
    x = keras.layers.Dropout(0.5, seed=seed, name="dropout", **f32)(features)
    logits = keras.layers.Dense(NUM_CLASSES, kernel_initializer=init, name="head", **f32)(x)
    model = keras.Model(inputs, logits, name="image_model")
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.set_weights(
        [
            rng.uniform(0.5, 1.5, 4).astype("float32"),  # gamma
            rng.normal(0, 0.2, 4).astype("float32"),  # beta
            rng.normal(0, 0.5, 4).astype("float32"),  # moving mean
            rng.uniform(0.5, 2.0, 4).astype("float32"),  # moving variance
        ]
    )
    model.get_layer("head").bias.assign(rng.normal(0, 0.1, NUM_CLASSES).astype("float32"))
    return model


def features_model(model):
    """The pooled features `[B, 4]` of `image_model` (before the dropout)."""
    return keras.Model(model.input, model.get_layer("pool").output)


def images(batch=4, seed=1, dtype="float32"):
    return np.random.default_rng(seed).standard_normal((batch, *IMAGE_SHAPE)).astype(dtype)


def export_keras(model, path):
    """`model.export(path)`: signatures `serve` and `serving_default` (input `image`)."""
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def save_multi_io(model, path):
    """`model` behind signature `two_in_three_out` and a Hub-style `__call__`.

    The signature takes `image [B, 8, 8, 3] float32` and `gain [B, 1] float32` and
    returns `{"logits": model(image) * gain, "features": pooled features, "top": argmax
    int32}`; `logits_only` returns `{"logits": ...}`. `__call__(image, training)`
    returns `{"logits", "features"}` traced for both values of `training`.
    """
    features = features_model(model)
    image = tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32)

    @tf.function
    def two_in_three_out(image, gain):
        logits = model(image, training=False)
        return {
            "logits": logits * gain,
            "features": features(image, training=False),
            "top": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }

    @tf.function
    def logits_only(image):
        return {"logits": model(image, training=False)}

    @tf.function
    def call(image, training=False):
        return {
            "logits": model(image, training=training),
            "features": features(image, training=training),
        }

    root = tf.train.Checkpoint()
    root.model = model
    root.__call__ = call
    root.variables = list(model.variables)
    root.trainable_variables = list(model.trainable_variables)
    for training in (False, True):
        call.get_concrete_function(image, training=training)
    signatures = {
        "two_in_three_out": two_in_three_out.get_concrete_function(
            image=image, gain=tf.TensorSpec((None, 1), tf.float32)
        ),
        "logits_only": logits_only.get_concrete_function(image=image),
    }
    tf.saved_model.save(root, str(path), signatures=signatures)
    return path


class HubModule:
    """The numbers of `save_hub_module`'s model, for numpy references."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.kernel = rng.standard_normal((6, 3)).astype("float32")
        self.bias = rng.standard_normal(3).astype("float32")
        self.gain = np.float32(1.5)

    def __call__(self, x, training=False):
        y = np.tanh(x.astype("float64") @ self.kernel + self.bias) * self.gain
        return y * (0.5 if training else 1.0)


def save_hub_module(path, seed=0, trainings=(False, True)):
    """A Reusable SavedModel: `__call__(x [B, 6] float32, training)` -> `[B, 3]`.

    `trainable_variables` lists `kernel` and `bias`, not `gain` (though `gain` is a
    trainable `tf.Variable`). Training halves the output. `__call__` is traced for the
    values in `trainings`. No signatures.
    """
    numbers = HubModule(seed)
    kernel = tf.Variable(numbers.kernel, name="kernel")
    bias = tf.Variable(numbers.bias, name="bias")
    gain = tf.Variable(numbers.gain, name="gain")

    @tf.function
    def call(x, training=False):
        y = tf.tanh(tf.matmul(x, kernel) + bias) * gain
        return y * 0.5 if training else y

    root = tf.train.Checkpoint()
    root.kernel, root.bias, root.gain = kernel, bias, gain
    root.__call__ = call
    root.variables = [kernel, bias, gain]
    root.trainable_variables = [kernel, bias]
    for training in trainings:
        call.get_concrete_function(tf.TensorSpec((None, 6), tf.float32), training=training)
    tf.saved_model.save(root, str(path), signatures={})
    return numbers
