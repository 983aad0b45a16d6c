"""Serving an image embedding from encoded image bytes: decode and resize in the graph.

A client of an image model usually holds files (JPEG, PNG), not pixel arrays. The
`embed_<name>_bytes` signature takes a batch of encoded images as a `tf.string` vector,
decodes each one as `mmrep.data.from_manifest` does (`mmrep.preprocessing.decode_image`:
PNG, JPEG with libjpeg's accurate IDCT, the first frame of a GIF, BMP; RGB, or BT.601
luma for one channel), resizes it to the model's input size by antialiased bilinear
interpolation (`tf.image.resize(method="bilinear", antialias=True)`, rounded back to
uint8) when its size differs, and feeds the model the pixels in its input dtype (uint8,
or floats holding 0..255). Only core TensorFlow ops are involved, so the SavedModel
needs nothing but TensorFlow. Bytes that are not an image fail at serve time with
TensorFlow's `InvalidArgumentError`.
"""

import tensorflow as tf

from mmrep.preprocessing.image_io import decode_image, resize_image


def image_input_problem(spec):
    """Why `spec` (an embedding model's input) cannot take decoded images, or `None`.

    An image input is `[None, H, W, C]` with static `H`, `W`, `C` in (1, 3), of dtype
    uint8 or floating.
    """
    shape = spec.shape
    if shape.rank != 4:
        return f"its input is not an image batch [B, H, W, C] (shape {shape})"
    if not (spec.dtype == tf.uint8 or spec.dtype.is_floating):
        return f"its input dtype {spec.dtype.name} is neither uint8 nor floating"
    height, width, channels = shape[1:]
    if height is None or width is None:
        return f"its input size is not fixed (shape {shape}), so decoded images cannot be batched"
    if channels not in (1, 3):
        return f"its input has {channels} channels; encoded images decode to 1 or 3"
    return None


def is_image_input(spec):
    """Whether `spec` is a fixed-size image batch that `image_bytes_function` can feed."""
    return image_input_problem(spec) is None


def decode_batch(data, height, width, channels, dtype):
    """Decodes a `[B]` string tensor of encoded images into `[B, height, width, channels]`.

    Args:
        data: `tf.string` tensor `[B]`.
        height: int. Output height.
        width: int. Output width.
        channels: int, 1 or 3.
        dtype: the output dtype, uint8 or floating (pixel values 0..255).

    Returns:
        A `[B, height, width, channels]` tensor of `dtype`.
    """

    def one(encoded):
        image = decode_image(encoded, channels=channels)
        shape = tf.shape(image)
        same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
        # An image already at the model's size goes through untouched (exact pixels).
        image = tf.cond(same, lambda: image, lambda: resize_image(image, (height, width)))
        image = tf.ensure_shape(image, (height, width, channels))
        return tf.cast(image, dtype)

    return tf.map_fn(one, data, fn_output_signature=tf.TensorSpec((height, width, channels), dtype))


def image_bytes_function(model, input_name, spec):
    """A `tf.function` from `{"<input>_bytes": tf.string [B]}` to `{"embedding": ...}`.

    Args:
        model: a `keras.Model` with one image input (see `is_image_input`).
        input_name: str. The model's input name; the signature input is named
            `f"{input_name}_bytes"`.
        spec: `tf.TensorSpec` of the model's input.

    Returns:
        The `tf.function`, with an input signature.
    """
    height, width, channels = spec.shape[1:]
    key = f"{input_name}_bytes"

    @tf.function(input_signature=[{key: tf.TensorSpec((None,), tf.string, name=key)}])
    def embed_bytes(inputs):
        images = decode_batch(inputs[key], height, width, channels, spec.dtype)
        output = model(images, training=False)
        if isinstance(output, dict):
            (output,) = output.values()
        elif isinstance(output, (list, tuple)):
            (output,) = output
        return {"embedding": output}

    return embed_bytes
