"""DCGAN-style generator and discriminator builders for `mmrep.heads.EBMGAN`.

The generator maps a latent vector through a `Dense` layer to a small feature map and
doubles its resolution with stride-2 `Conv2DTranspose` layers (Radford, Metz & Chintala,
"Unsupervised Representation Learning with Deep Convolutional Generative Adversarial
Networks", ICLR 2016). The discriminator halves the resolution with stride-2 `Conv2D`
layers and `LeakyReLU`, optionally spectrally normalised (Miyato et al., "Spectral
Normalization for Generative Adversarial Networks", ICLR 2018), and has no batch
normalisation: its output on one example never depends on the others, which the
Adversarial Fisher Vectors (per-example gradients of D) need.
"""

import keras

from mmrep.utils.arguments import check_int, is_int


def _check_widths(widths):
    if not isinstance(widths, (list, tuple)) or not widths or not all(is_int(w, 1) for w in widths):
        raise ValueError(
            f"Expected `widths` to be a non-empty list of positive ints. Received: widths={widths!r}"
        )
    return tuple(int(w) for w in widths)


def _check_image_shape(argument, shape, stages):
    factor = 2**stages
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != 3
        or not all(is_int(s, 1) for s in shape)
        or shape[0] % factor
        or shape[1] % factor
    ):
        raise ValueError(
            f"Expected `{argument}` to be (height, width, channels) of positive ints with "
            f"height and width divisible by 2**len(widths) = {factor}. "
            f"Received: {argument}={shape!r}"
        )
    return tuple(int(s) for s in shape)


def dcgan_generator(
    latent_dim,
    output_shape=(32, 32, 3),
    widths=(128, 64, 32),
    output_activation="tanh",
    name="dcgan_generator",
):
    """A DCGAN generator: latent vector `[B, latent_dim]` to images `[B, H, W, C]`.

    `Dense` to an `(H / 2**n, W / 2**n, widths[0])` map (with `n = len(widths)`), then for
    each further width a `Conv2DTranspose` (kernel 4, stride 2) with `BatchNormalization`
    and ReLU, and a last `Conv2DTranspose` (kernel 4, stride 2) to `C` channels followed by
    `output_activation`. The last activation runs in float32, so the images are float32
    under a mixed-precision policy. Use `"tanh"` for data scaled to [-1, 1]. The batch
    normalisation is synchronised (`synchronized=True`): under `tf.distribute` its batch
    statistics are those of the global batch, so training on several replicas or workers
    equals training on one device (per-replica statistics would not).

    Args:
        latent_dim: int. Size of the latent vector.
        output_shape: tuple `(height, width, channels)`; height and width divisible by
            `2**len(widths)`. Defaults to `(32, 32, 3)`.
        widths: tuple of ints. Channels of the feature maps from the smallest resolution
            up; one stride-2 upsampling each. Defaults to `(128, 64, 32)`.
        output_activation: str or callable. Activation of the images. Defaults to `"tanh"`.
        name: str. The model's name. Defaults to `"dcgan_generator"`.

    Returns:
        A functional `keras.Model` with input `[B, latent_dim]` and output `[B, H, W, C]`.

    Raises:
        ValueError: for a non-positive `latent_dim`, bad `widths` or an `output_shape`
            that the upsampling cannot reach.

    Example:

    >>> generator = dcgan_generator(16, output_shape=(8, 8, 1), widths=(8, 4))
    >>> generator(np.zeros((2, 16), "float32")).shape
    TensorShape([2, 8, 8, 1])

    Reference:
        Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep
        Convolutional Generative Adversarial Networks", ICLR 2016.
    """
    latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    widths = _check_widths(widths)
    height, width, channels = _check_image_shape("output_shape", output_shape, len(widths))
    factor = 2 ** len(widths)

    # === Layers and functional model ===
    z = keras.Input((latent_dim,), name="latent")
    h = keras.layers.Dense(height // factor * (width // factor) * widths[0], name="project")(z)
    h = keras.layers.BatchNormalization(synchronized=True, name="project_bn")(h)
    h = keras.layers.ReLU(name="project_relu")(h)
    h = keras.layers.Reshape((height // factor, width // factor, widths[0]), name="reshape")(h)
    for i, units in enumerate(widths[1:]):
        h = keras.layers.Conv2DTranspose(
            units, 4, strides=2, padding="same", use_bias=False, name=f"block{i}_deconv"
        )(h)
        h = keras.layers.BatchNormalization(synchronized=True, name=f"block{i}_bn")(h)
        h = keras.layers.ReLU(name=f"block{i}_relu")(h)
    h = keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same", name="to_image")(h)
    images = keras.layers.Activation(output_activation, dtype="float32", name="image")(h)
    return keras.Model(z, images, name=name)


def dcgan_discriminator(
    input_shape=(32, 32, 3),
    widths=(32, 64, 128),
    spectral_normalization=True,
    name="dcgan_discriminator",
):
    """A DCGAN discriminator (a negative energy): images `[B, H, W, C]` to scores `[B, 1]`.

    For each width a `Conv2D` (kernel 4, stride 2, same padding) and `LeakyReLU(0.2)`
    named `block{i}_conv` / `block{i}_lrelu`; then `Flatten` and a float32 `Dense(1)`
    named `score`. There is no batch normalisation, so each example's score depends on
    that example only. With `spectral_normalization=True` every convolution and the final
    `Dense` are wrapped in `keras.layers.SpectralNormalization` (named `<layer>_sn`; one
    power iteration per training call, in float32 under mixed precision). Keras' wrapper
    rescales the stored kernel by its estimated spectral norm at every training call (the
    gradient reaches the rescaled kernel, not the division by σ), so the kernels stay near
    spectral norm 1.

    The block activations (`block{i}_lrelu`) are the features of the "D-pool" baseline of
    Zhai et al. (global-average-pooled and concatenated).

    Args:
        input_shape: tuple `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        widths: tuple of ints. Channels of each stride-2 convolution. Defaults to
            `(32, 64, 128)`.
        spectral_normalization: bool. Whether to wrap the convolutions and the final
            `Dense` in `SpectralNormalization`. Defaults to `True`.
        name: str. The model's name. Defaults to `"dcgan_discriminator"`.

    Returns:
        A functional `keras.Model` with input `[B, H, W, C]` and float32 output `[B, 1]`.

    Raises:
        ValueError: for bad `widths`, `input_shape` or `spectral_normalization`.

    Example:

    >>> discriminator = dcgan_discriminator((8, 8, 1), widths=(4, 8))
    >>> discriminator(np.zeros((2, 8, 8, 1), "float32")).shape
    TensorShape([2, 1])

    Reference:
        Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative
        Adversarial Networks", ICLR 2018.
    """
    widths = _check_widths(widths)
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 3
        or not all(is_int(s, 1) for s in input_shape)
    ):
        raise ValueError(
            "Expected `input_shape` to be (height, width, channels) of positive ints. "
            f"Received: input_shape={input_shape!r}"
        )
    input_shape = tuple(int(s) for s in input_shape)
    if not isinstance(spectral_normalization, bool):
        raise ValueError(
            "Expected `spectral_normalization` to be a bool. "
            f"Received: spectral_normalization={spectral_normalization!r}"
        )

    def normalized(layer):
        if not spectral_normalization:
            return layer
        # The power iteration runs in float32 (in float16 it loses the norm's precision and
        # the normalisation's 1/epsilon overflows); the wrapped layer keeps its policy.
        return keras.layers.SpectralNormalization(layer, name=f"{layer.name}_sn", dtype="float32")

    # === Layers and functional model ===
    x = keras.Input(tuple(input_shape), name="images")
    h = x
    for i, units in enumerate(widths):
        conv = keras.layers.Conv2D(units, 4, strides=2, padding="same", name=f"block{i}_conv")
        h = normalized(conv)(h)
        h = keras.layers.LeakyReLU(0.2, name=f"block{i}_lrelu")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    # The score is an unnormalised log-density: float32 under mixed precision.
    score = keras.layers.Dense(1, dtype="float32", name="score")
    outputs = normalized(score)(h)
    return keras.Model(x, outputs, name=name)


def _single_io(argument, model):
    """The (input shape, output shape) of a functional/Sequential model with one of each."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not isinstance(model, keras.Model) or not inputs or len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"Expected `{argument}` to be a built functional or Sequential keras.Model with "
            f"one input and one output. Received: {model!r}"
        )
    return tuple(inputs[0].shape), tuple(outputs[0].shape)


def check_gan_networks(generator, discriminator):
    """Checks that a generator and a discriminator fit together; returns their shapes.

    Args:
        generator: keras.Model (functional or Sequential), latent `[B, L]` to samples.
        discriminator: keras.Model (functional or Sequential), samples to one score per
            example (`[B]` or `[B, 1]`).

    Returns:
        A tuple `(latent_dim, sample_shape)`: `L` and the shape of one sample.

    Raises:
        ValueError: if either is not a model with one known input and output, the
            generator's input is not `[B, L]`, its output shape differs from the
            discriminator's input shape (the message names both), or the discriminator
            gives more than one value per example.
    """
    z_shape, sample_shape = _single_io("generator", generator)
    x_shape, score_shape = _single_io("discriminator", discriminator)
    if len(z_shape) != 2 or z_shape[1] is None:
        raise ValueError(
            "Expected `generator` to take latent vectors [B, latent_dim]. Received a "
            f"generator with input shape {z_shape}"
        )
    if sample_shape[1:] != x_shape[1:]:
        raise ValueError(
            f"Expected the generator's output shape {sample_shape} to equal the "
            f"discriminator's input shape {x_shape} (per example)"
        )
    per_example = score_shape[1:]
    if any(d != 1 for d in per_example) or len(per_example) > 1:
        raise ValueError(
            "Expected `discriminator` to output one score per example ([B] or [B, 1]). "
            f"Received a discriminator with output shape {score_shape}"
        )
    return int(z_shape[1]), tuple(x_shape[1:])
