"""ImageEncoder: a keras.applications (or small) CNN with its resize and preprocessing in the graph."""

import keras
from keras import ops

from mmrep.encoders.image import backbones as bb
from mmrep.encoders.image.image_weights import load_backbone_weights, resolve_weights
from mmrep.utils.arguments import is_int
from mmrep.utils.value_checks import checked_range

_POOLINGS = (None, "avg", "max")
# Floating pixels may overshoot `value_range` by this fraction of its width on either side
# (bicubic or Lanczos resampling, noise augmentation); a wrong scale or offset (0..255
# given for 0..1, -1..1 for 0..1) lands far outside and is refused.
VALUE_RANGE_TOLERANCE = 0.1


@keras.saving.register_keras_serializable(package="mmrep")
class ImageEncoder(keras.layers.Layer):
    """Image features from a CNN backbone, with resizing and preprocessing in the graph.

    Wraps a keras.applications backbone built with `include_top=False, weights=None`
    (`"mobilenet_v3_small"`, `"mobilenet_v3_large"`, `"resnet50"`, `"efficientnet_b0"`)
    or `"small_cnn"`, a few conv-BatchNorm-ReLU blocks for tests and CPU demos (see
    `mmrep.encoders.image.BACKBONES`). Images of any size are resized in the graph to
    `image_size` (bilinear with antialiasing, as `tf.image.resize(..., antialias=True)`;
    skipped when the static size already matches) and preprocessed as the backbone's
    ImageNet weights expect, exactly as `keras.applications.<module>.preprocess_input` on
    0..255 pixels: ResNet50 converts RGB to BGR and subtracts the ImageNet means ("caffe");
    MobileNetV3 and EfficientNet rescale inside the model; `small_cnn` scales to [-1, 1].
    Greyscale images (1 channel) are repeated to RGB. Pixel conversion, resizing and
    preprocessing run in float32 under any dtype policy, and so do the Rescaling and
    Normalization layers inside MobileNetV3 and EfficientNet; the rest of the backbone is
    built under the layer's dtype policy (float32 variables, compute in the policy).

    Weights come from a local file (nothing is downloaded): a keras.applications `.h5`
    (the no-top file, or the full one whose top is set aside), a `.keras` saved
    keras.applications model, or a `.weights.h5`. A file of another backbone or width
    raises `ImageWeightsError` listing the missing, unexpected and misshapen layers. The
    file is read once, at construction: `get_config()` records `weights=None`, and the
    values travel in the encoder's own saved weights (`.keras`, `save_weights`,
    SavedModel), so a saved model does not need the file again.

    Transfer learning: `trainable=False` freezes the whole backbone, and its
    BatchNormalization layers then run in inference mode even when called with
    `training=True` (Keras 3 runs a non-trainable BatchNormalization on its moving
    statistics). `trainable_blocks=N` (or `unfreeze_top_blocks(N)`) leaves only the top
    N blocks trainable (`blocks` lists them bottom to top). With `freeze_batchnorm=True`
    (the usual fine-tuning advice) BatchNormalization stays frozen, in inference mode,
    even inside trainable blocks. By default it is `True` when `weights` are loaded and
    `False` for a randomly initialised backbone, which is trained from scratch and needs
    its batch statistics. These choices are part of the config (the resolved bool). Dropout inside a backbone (EfficientNet's
    drop-connect) still follows `training`. After changing them on a compiled model,
    compile it again.

    Args:
        backbone: str. A key of `BACKBONES`. Defaults to `"mobilenet_v3_small"`.
        weights: `None` (random initialisation), `"imagenet"` (keras.applications' no-top
            ImageNet file of the backbone: from Keras's cache, `~/.keras/models/`, or
            downloaded into it with its MD5 checked), or the path of a local weights file
            (see above). URLs are refused. Defaults to `None`.
        pooling: `"avg"` or `"max"` for a vector `[B, output_dim]` per image (global
            pooling of the last feature map, in float32), or `None` for the feature map
            `[B, h, w, output_dim]` (dense local descriptors). Defaults to `"avg"`.
        image_size: int, `(height, width)`, or `None` for the backbone's default (224
            for keras.applications, 32 for `small_cnn`). The size images are resized to.
            Defaults to `None`.
        value_range: `(low, high)`. The range of floating inputs, mapped linearly to
            0..255 (not clipped); uint8 inputs are always 0..255. Floating pixels more
            than 10% of its width outside it (`VALUE_RANGE_TOLERANCE`), or NaN, are an
            error: a `ValueError` eagerly, an in-graph assertion in a `tf.function` or
            SavedModel (compiled away under XLA). Defaults to `(0.0, 255.0)`.
        trainable_blocks: int or `None`. How many blocks, counted from the top, are
            trainable; `None` for all, `0` for none. Defaults to `None`.
        freeze_batchnorm: bool or `None`. Keep every BatchNormalization frozen and in
            inference mode. `None` means `True` when `weights` is given (transfer) and
            `False` when it is `None` (training from scratch). Defaults to `None`.
        backbone_kwargs: dict or `None`. Further builder arguments, such as
            `{"alpha": 0.75, "minimalistic": True}` for MobileNetV3 or
            `{"filters": [8, 16]}` for `small_cnn`. Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name`, `dtype`, `trainable`.

    Call arguments:
        images: `[B, H, W, C]`, uint8 (0..255) or floating (in `value_range`), C = 3
            (RGB) or 1 (greyscale); H and W may differ from `image_size` and be unknown
            when tracing.
        training: bool. Training mode for the backbone's BatchNormalization (when not
            frozen) and Dropout layers.

    Returns:
        `[B, output_dim]` (pooled) or `[B, h, w, output_dim]` (`pooling=None`), in the
        compute dtype.

    Raises:
        ValueError: for an unknown backbone or pooling, a bad `image_size`,
            `value_range`, `trainable_blocks` or `backbone_kwargs`, a URL as
            `weights`, `"imagenet"` for a backbone without ImageNet weights; when
            called, images that are not of rank 4 or not of 1 or 3
            channels, and (eagerly) floating pixels outside `value_range`.
        TypeError: when called, images neither uint8 nor floating (e.g. string, bool).
        FileNotFoundError: if `weights` names no file.
        ImageWeightsError: if the file holds other weights, or `"imagenet"` weights are
            neither cached nor downloadable (the message says where to put the file).

    Example:

    >>> encoder = ImageEncoder("small_cnn", image_size=32, pooling="avg")
    >>> images = np.zeros((2, 48, 40, 3), "uint8")
    >>> tuple(encoder(images).shape)
    (2, 64)
    """

    def __init__(
        self,
        backbone="mobilenet_v3_small",
        weights=None,
        pooling="avg",
        image_size=None,
        value_range=(0.0, 255.0),
        trainable_blocks=None,
        freeze_batchnorm=None,
        backbone_kwargs=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        spec = bb.get_backbone(backbone)
        if pooling not in _POOLINGS:
            raise ValueError(
                f"Expected `pooling` to be one of {_POOLINGS}. Received: pooling={pooling!r}"
            )
        if freeze_batchnorm is None:
            freeze_batchnorm = weights is not None
        if not isinstance(freeze_batchnorm, bool):
            raise ValueError(
                f"Expected `freeze_batchnorm` to be a bool or None. Received: {freeze_batchnorm!r}"
            )
        self.spec = spec
        self.backbone = spec.name
        self.pooling = pooling
        self.image_size = _image_size(image_size, spec.default_size)
        self.value_range = _value_range(value_range)
        self.freeze_batchnorm = freeze_batchnorm
        self.backbone_kwargs = bb.check_backbone_kwargs(spec, backbone_kwargs)
        weights_path = resolve_weights(weights, spec)
        # Pixels must reach the preprocessing in their own dtype: no autocast on the way in.
        self.autocast = False

        # === Layers ===
        self.backbone_model = self._build_backbone()
        self._blocks = bb.assign_blocks(self.backbone_model, spec)
        if weights_path is not None:
            load_backbone_weights(self.backbone_model, spec, weights_path, self.backbone_kwargs)
        self.trainable_blocks = None
        self.unfreeze_top_blocks(trainable_blocks)

    def _build_backbone(self):
        # keras.applications builders read the global policy: build under the layer's own.
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.dtype_policy)
        try:
            model = self.spec.build(self.image_size, self.backbone_kwargs)
        finally:
            keras.config.set_dtype_policy(previous)
        for layer in model.layers:
            if isinstance(layer, keras.layers.Rescaling | keras.layers.Normalization):
                # In-model preprocessing in float32; the next layer casts to the compute dtype.
                layer.dtype_policy = "float32"
                if hasattr(layer, "finalize_state"):
                    layer.finalize_state()
        return model

    # === Properties ===

    @property
    def output_dim(self):
        """int. Channels of the backbone's last feature map (the pooled vector's size)."""
        return int(self.backbone_model.output.shape[-1])

    @property
    def feature_map_shape(self):
        """`(h, w, output_dim)`: the backbone's output for `image_size` inputs."""
        return tuple(int(d) for d in self.backbone_model.output.shape[1:])

    @property
    def blocks(self):
        """Block names, bottom to top (what `trainable_blocks` counts from the top)."""
        return [name for name, _ in self._blocks]

    def block_layers(self, name):
        """The backbone layers of block `name`.

        Args:
            name: str, one of `blocks`.

        Returns:
            A list of layers of `backbone_model`, in model order.

        Raises:
            ValueError: if there is no such block.
        """
        for block, layers in self._blocks:
            if block == name:
                return list(layers)
        raise ValueError(f"Expected a block name in {self.blocks}. Received: {name!r}")

    def load_pretrained(self, weights):
        """Copies the backbone weights in a local file into this encoder.

        Args:
            weights: `"imagenet"` or the path of a `.h5`, `.keras` or `.weights.h5` file
                (see the class docstring).

        Returns:
            The encoder.

        Raises:
            ValueError: for a URL.
            FileNotFoundError: if the file does not exist.
            ImageWeightsError: if it holds other weights; nothing is changed then.
        """
        path = resolve_weights(weights, self.spec)
        load_backbone_weights(self.backbone_model, self.spec, path, self.backbone_kwargs)
        return self

    # === Freezing ===

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        keras.layers.Layer.trainable.fset(self, value)
        if getattr(self, "_blocks", None) is not None:
            self._apply_freezing()

    def unfreeze_top_blocks(self, num_blocks):
        """Leaves only the top `num_blocks` blocks trainable (`None`: all of them).

        BatchNormalization stays frozen when `freeze_batchnorm` is set, and nothing is
        trainable while the layer's own `trainable` is False. The choice is kept in the
        config. Compile a model again after calling this.

        Args:
            num_blocks: int in `[0, len(blocks)]`, or `None` for every block.

        Returns:
            The layer.

        Raises:
            ValueError: if `num_blocks` is out of range or not an int.
        """
        count = len(self._blocks)
        if num_blocks is not None and not is_int(num_blocks, 0, count):
            raise ValueError(
                f"Expected `trainable_blocks` to be None or an int in [0, {count}] (backbone "
                f"{self.backbone!r} has {count} blocks: {self.blocks}). "
                f"Received: trainable_blocks={num_blocks!r}"
            )
        self.trainable_blocks = None if num_blocks is None else int(num_blocks)
        self._apply_freezing()
        return self

    def _apply_freezing(self):
        count = len(self._blocks)
        unfrozen = count if self.trainable_blocks is None else self.trainable_blocks
        self.backbone_model.trainable = self._trainable
        for index, (_, layers) in enumerate(self._blocks):
            block_trainable = self._trainable and index >= count - unfrozen
            for layer in layers:
                frozen_bn = self.freeze_batchnorm and isinstance(
                    layer, keras.layers.BatchNormalization
                )
                layer.trainable = block_trainable and not frozen_bn

    # === Call ===

    def _check_images(self, shape, dtype):
        dtype = keras.backend.standardize_dtype(dtype)
        if len(shape) != 4:
            raise ValueError(
                f"{self.name}: expected images of shape [batch, height, width, channels]. "
                f"Received: shape={tuple(shape)}"
            )
        if shape[-1] not in (1, 3):
            raise ValueError(
                f"{self.name}: expected 3 (RGB) or 1 (greyscale, repeated to RGB) channels "
                f"in the last axis. Received: shape={tuple(shape)}"
            )
        if dtype != "uint8" and not keras.backend.is_float_dtype(dtype):
            raise TypeError(
                f"{self.name}: expected uint8 images (0..255) or floating images in "
                f"value_range={self.value_range}. Received: dtype={dtype}"
                + ("; cast integer pixels to uint8 or float" if "int" in dtype else "")
            )

    def preprocess(self, images):
        """What the backbone receives: float32 `[B, *image_size, 3]`, preprocessed.

        Args:
            images: `[B, H, W, C]` as in `call`.

        Returns:
            The images mapped to 0..255, repeated to RGB if greyscale, resized to
            `image_size`, then passed through the backbone's preprocessing.

        Raises:
            ValueError: eagerly, for floating pixels outside `value_range` (widened by
                `VALUE_RANGE_TOLERANCE` of its width) or NaN; in a graph, an in-graph
                assertion raises `InvalidArgumentError` instead.
        """
        if not ops.is_tensor(images):
            images = ops.convert_to_tensor(images)
        self._check_images(images.shape, images.dtype)
        dtype = keras.backend.standardize_dtype(images.dtype)
        x = ops.cast(images, "float32")
        low, high = self.value_range
        if dtype != "uint8":
            slack = VALUE_RANGE_TOLERANCE * (high - low)
            x = checked_range(
                x,
                self.name,
                low - slack,
                high + slack,
                what="floating pixels",
                why=f" (value_range={self.value_range} widened by "
                f"{VALUE_RANGE_TOLERANCE:.0%} of its width)",
            )
        if dtype != "uint8" and (low, high) != (0.0, 255.0):
            x = (x - low) * (255.0 / (high - low))
        if images.shape[-1] == 1:
            x = ops.repeat(x, 3, axis=-1)
        if tuple(images.shape[1:3]) != self.image_size:
            x = ops.image.resize(x, self.image_size, interpolation="bilinear", antialias=True)
        return bb.preprocess(self.spec, x)

    def call(self, images, training=None):
        features = self.backbone_model(self.preprocess(images), training=training)
        if self.pooling is None:
            return ops.cast(features, self.compute_dtype)
        # Pooled in float32: a float16 sum over a large map can lose precision.
        features = ops.cast(features, "float32")
        reduce = ops.mean if self.pooling == "avg" else ops.max
        return ops.cast(reduce(features, axis=(1, 2)), self.compute_dtype)

    def set_weights(self, weights):
        super().set_weights(weights)
        # A Normalization layer (EfficientNet) keeps a copy of its mean and variance.
        for layer in self.backbone_model.layers:
            if hasattr(layer, "finalize_state"):
                layer.finalize_state()

    def build(self, input_shape=None):
        # The backbone is built (with its weights) at construction.
        self.built = True

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] not in (1, 3):
            self._check_images(input_shape, "float32")
        if self.pooling is None:
            return (input_shape[0], *self.feature_map_shape)
        return (input_shape[0], self.output_dim)

    def compute_output_spec(self, images, training=None):
        self._check_images(images.shape, images.dtype)
        return keras.KerasTensor(self.compute_output_shape(images.shape), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": self.backbone,
                # The weights file is read once; its values travel in the saved weights.
                "weights": None,
                "pooling": self.pooling,
                "image_size": list(self.image_size),
                "value_range": list(self.value_range),
                "trainable_blocks": self.trainable_blocks,
                "freeze_batchnorm": self.freeze_batchnorm,
                "backbone_kwargs": dict(self.backbone_kwargs) or None,
            }
        )
        return config


def _image_size(value, default):
    if value is None:
        return (default, default)
    size = (value, value) if is_int(value) else value
    try:
        size = tuple(size)
    except TypeError:
        size = ()
    if len(size) != 2 or not all(is_int(s, 1) for s in size):
        raise ValueError(
            "Expected `image_size` to be None, a positive int or (height, width). "
            f"Received: image_size={value!r}"
        )
    return tuple(int(s) for s in size)


def _value_range(value):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected `value_range` to be (low, high) numbers. Received: value_range={value!r}"
        ) from None
    if not low < high:
        raise ValueError(f"Expected `value_range` with low < high. Received: value_range={value!r}")
    return (low, high)
