"""Image encoders: keras.applications CNNs (and a small CNN) with in-graph preprocessing."""

from mmrep.encoders.image.backbones import BACKBONES, BackboneSpec, small_cnn
from mmrep.encoders.image.image_encoder import ImageEncoder
from mmrep.encoders.image.image_weights import load_backbone_weights
from mmrep.encoders.image.weight_files import ImageWeightsError

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "ImageEncoder",
    "ImageWeightsError",
    "load_backbone_weights",
    "small_cnn",
]
