"""The image backbones `ImageEncoder` wraps: how each is built, preprocessed and split in blocks.

Each backbone is a `BackboneSpec`: a builder returning a Keras functional model without its
classification top (`include_top=False, weights=None` for keras.applications), the default
input size, the preprocessing its ImageNet weights expect, and a regular expression that
assigns each layer to a "block" (a residual or inverted-residual block, the stem, the top
convolution) for partial unfreezing. `BACKBONES` maps names to specs.

Preprocessing, on float32 pixels in 0..255 (what `keras.applications.<module>.preprocess_input`
expects):

- `"in_model"`: MobileNetV3 and EfficientNet rescale inside the model (`Rescaling`, and for
  EfficientNet a `Normalization` whose mean and variance are weights), and their
  `preprocess_input` is the identity.
- `"caffe"`: ResNet50, RGB to BGR and the ImageNet channel means subtracted, no scaling.
- `"tf"`: `x / 127.5 - 1`, to [-1, 1] (`small_cnn`).
"""

import dataclasses
import re
from collections.abc import Callable

import keras
from keras import ops

from mmrep.utils.arguments import is_int

# keras.applications.imagenet_utils, mode="caffe": BGR channel means.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
PREPROCESSING = ("in_model", "caffe", "tf")
# Arguments the encoder sets itself; a backbone_kwargs entry for them is refused.
RESERVED_KWARGS = (
    "include_top",
    "weights",
    "input_shape",
    "input_tensor",
    "pooling",
    "classes",
    "classifier_activation",
    "include_preprocessing",
    "name",
)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build, preprocess for, load and partially unfreeze one backbone.

    Attributes:
        name: str. The name `ImageEncoder(backbone=...)` takes.
        builder: callable `(input_shape, **backbone_kwargs) -> keras.Model` giving the
            network without its classification top and with random weights.
        default_size: int. Side of the square input the published weights were trained at.
        preprocessing: str. One of `PREPROCESSING` (see the module docstring).
        block_pattern: str. A regular expression whose first group, matched at the start of
            a layer name, names the layer's block. Blocks are ordered bottom to top by their
            first layer in the model.
        top_layers: tuple of `(layer name, class name)`: the weight-carrying layers that the
            `include_top=True` model has beyond this one, bottom to top. A full weights file
            holds them; loading sets them aside.
        imagenet_file: str. The no-top ImageNet file keras.applications downloads.
        imagenet_url: str. Where keras.applications downloads it from.
        imagenet_md5: str. The file's MD5 hash, as keras.applications checks it.
        reference: str. Where the architecture comes from (module and paper).
    """

    name: str
    builder: Callable[..., keras.Model]
    default_size: int
    preprocessing: str
    block_pattern: str
    top_layers: tuple = ()
    imagenet_file: str = ""
    imagenet_url: str = ""
    imagenet_md5: str = ""
    reference: str = ""

    def build(self, image_size, backbone_kwargs=None):
        """The backbone for `[B, *image_size, 3]` inputs, random weights, current policy."""
        return self.builder((*image_size, 3), **(backbone_kwargs or {}))

    def block_of(self, layer_name):
        """The block `layer_name` belongs to, or `None`."""
        match = re.match(self.block_pattern, layer_name)
        return match.group(1) if match else None


def small_cnn(input_shape=(32, 32, 3), filters=(16, 32, 64), name="small_cnn"):
    """A small convolutional backbone for tests and CPU demos: conv-BN-ReLU blocks.

    Block `i` (from 1) is `block{i}_conv` (3x3, same padding, no bias), `block{i}_bn`
    (`BatchNormalization`) and `block{i}_relu`; every block after the first starts with
    a 2x2 max pool `block{i}_pool`. The output is the last block's feature map, of
    `filters[-1]` channels at `1 / 2 ** (len(filters) - 1)` of the input size. It
    expects inputs scaled to [-1, 1] (`ImageEncoder` does that).

    Args:
        input_shape: tuple `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        filters: sequence of positive ints, the width of each block. Defaults to
            `(16, 32, 64)`.
        name: str. The model's name. Defaults to `"small_cnn"`.

    Returns:
        A functional `keras.Model` mapping `[B, H, W, C]` to `[B, h, w, filters[-1]]`.

    Raises:
        ValueError: if `filters` is not a non-empty sequence of positive ints, or the
            input is too small for its pools.
    """
    widths = tuple(filters) if isinstance(filters, list | tuple) else ()
    if not widths or not all(is_int(w, 1) for w in widths):
        raise ValueError(
            "Expected `filters` to be a non-empty sequence of positive ints. "
            f"Received: filters={filters!r}"
        )
    widths = tuple(int(w) for w in widths)
    smallest = 2 ** (len(widths) - 1)
    if any(side is not None and side < smallest for side in input_shape[:2]):
        raise ValueError(
            f"small_cnn with {len(widths)} blocks needs inputs of at least {smallest}x"
            f"{smallest}. Received: input_shape={tuple(input_shape)}"
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, width in enumerate(widths, start=1):
        if i > 1:
            x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    return keras.Model(inputs, x, name=name)


def _application(constructor):
    def build(input_shape, **kwargs):
        return constructor(input_shape=input_shape, include_top=False, weights=None, **kwargs)

    return build


def _small_cnn(input_shape, **kwargs):
    return small_cnn(input_shape, **kwargs)


_APPS = keras.applications
# Where keras.applications downloads its ImageNet weights from.
_KERAS_WEIGHTS = "https://storage.googleapis.com/"
BACKBONES = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="mobilenet_v3_small",
            builder=_application(_APPS.MobileNetV3Small),
            default_size=224,
            preprocessing="in_model",
            # Stem `conv`, inverted-residual blocks `expanded_conv[_N]_*`, top `conv_1`.
            block_pattern=r"(conv_1|conv|expanded_conv(?:_\d+)?)(?:_|$)",
            top_layers=(("conv_2", "Conv2D"), ("logits", "Conv2D")),
            imagenet_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            imagenet_url=_KERAS_WEIGHTS + "tensorflow/keras-applications/mobilenet_v3/"
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            imagenet_md5="d3e8ec802a04aa4fc771ee12a9a9b836",
            reference="keras.applications.MobileNetV3Small; Howard et al., "
            "'Searching for MobileNetV3', ICCV 2019",
        ),
        BackboneSpec(
            name="mobilenet_v3_large",
            builder=_application(_APPS.MobileNetV3Large),
            default_size=224,
            preprocessing="in_model",
            block_pattern=r"(conv_1|conv|expanded_conv(?:_\d+)?)(?:_|$)",
            top_layers=(("conv_2", "Conv2D"), ("logits", "Conv2D")),
            imagenet_file="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
            imagenet_url=_KERAS_WEIGHTS + "tensorflow/keras-applications/mobilenet_v3/"
            "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
            imagenet_md5="07fb09a5933dd0c8eaafa16978110389",
            reference="keras.applications.MobileNetV3Large; Howard et al., "
            "'Searching for MobileNetV3', ICCV 2019",
        ),
        BackboneSpec(
            name="resnet50",
            builder=_application(_APPS.ResNet50),
            default_size=224,
            preprocessing="caffe",
            # Stem `conv1_*`, then `conv{stage}_block{n}_*`.
            block_pattern=r"(conv1|conv\d+_block\d+)_",
            top_layers=(("predictions", "Dense"),),
            imagenet_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            imagenet_url=_KERAS_WEIGHTS + "tensorflow/keras-applications/resnet/"
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            imagenet_md5="4d473c1dd8becc155b73f8504c6f6626",
            reference="keras.applications.ResNet50; He et al., 'Deep Residual Learning "
            "for Image Recognition', CVPR 2016",
        ),
        BackboneSpec(
            name="efficientnet_b0",
            builder=_application(_APPS.EfficientNetB0),
            default_size=224,
            preprocessing="in_model",
            # `stem_*`, MBConv blocks `block{stage}{letter}_*`, `top_*`.
            block_pattern=r"(stem|block\d+[a-z]|top)_",
            top_layers=(("predictions", "Dense"),),
            imagenet_file="efficientnetb0_notop.h5",
            imagenet_url=_KERAS_WEIGHTS + "keras-applications/efficientnetb0_notop.h5",
            imagenet_md5="50bc09e76180e00e4465e1a485ddc09d",
            reference="keras.applications.EfficientNetB0; Tan and Le, 'EfficientNet: "
            "Rethinking Model Scaling for Convolutional Neural Networks', ICML 2019",
        ),
        BackboneSpec(
            name="small_cnn",
            builder=_small_cnn,
            default_size=32,
            preprocessing="tf",
            block_pattern=r"(block\d+)_",
            reference="mmrep.encoders.image.small_cnn (tests and CPU demos)",
        ),
    )
}


def get_backbone(name):
    """The `BackboneSpec` called `name`.

    Args:
        name: str, a key of `BACKBONES`.

    Returns:
        The `BackboneSpec`.

    Raises:
        ValueError: if there is none.
    """
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(
            f"Expected `backbone` to be one of {sorted(BACKBONES)}. Received: backbone={name!r}"
        )
    return BACKBONES[name]


def check_backbone_kwargs(spec, backbone_kwargs):
    """`backbone_kwargs` as a dict, refusing the arguments the encoder sets itself.

    Args:
        spec: the `BackboneSpec` they are for.
        backbone_kwargs: dict or `None`.

    Returns:
        A new dict (empty for `None`).

    Raises:
        ValueError: if it is not a dict or sets one of `RESERVED_KWARGS`.
    """
    if backbone_kwargs is None:
        return {}
    if not isinstance(backbone_kwargs, dict):
        raise ValueError(
            "Expected `backbone_kwargs` to be a dict of builder arguments. "
            f"Received: backbone_kwargs={backbone_kwargs!r}"
        )
    reserved = sorted(set(backbone_kwargs) & set(RESERVED_KWARGS))
    if reserved:
        raise ValueError(
            f"`backbone_kwargs` cannot set {reserved} for backbone {spec.name!r}: "
            "ImageEncoder sets them (use its "
            "`weights`, `pooling` and `image_size` arguments). "
            f"Received: backbone_kwargs={backbone_kwargs!r}"
        )
    return dict(backbone_kwargs)


def assign_blocks(model, spec):
    """`[(block name, [layers])]` bottom to top for the layers of `model`.

    Every layer with trainable weights must belong to a block; layers without weights
    (activations, pads, adds) that match no block are left out.

    Args:
        model: a backbone built by `spec`.
        spec: its `BackboneSpec`.

    Returns:
        A list of `(block name, list of layers)`, ordered by each block's first layer.

    Raises:
        ValueError: if a layer with trainable weights matches no block.
    """
    blocks = {}
    for layer in model.layers:
        block = spec.block_of(layer.name)
        if block is None:
            if any(v.trainable for v in layer.weights):
                raise ValueError(
                    f"backbone {spec.name!r}: layer {layer.name!r} has trainable weights "
                    f"but matches no block of {spec.block_pattern!r}"
                )
            continue
        blocks.setdefault(block, []).append(layer)
    return list(blocks.items())


def preprocess(spec, images):
    """Applies `spec`'s preprocessing (see the module docstring).

    Args:
        spec: a `BackboneSpec`.
        images: float32 tensor `[B, H, W, 3]`, RGB pixels in 0..255.

    Returns:
        What `keras.applications.<module>.preprocess_input` returns for them.
    """
    if spec.preprocessing == "in_model":
        return images
    if spec.preprocessing == "caffe":
        bgr = ops.flip(images, axis=-1)
        return bgr - ops.convert_to_tensor(CAFFE_BGR_MEAN, dtype=images.dtype)
    return images / 127.5 - 1.0
