"""Registry cases for the image encoder (merged into tests/registry.py).

Small inputs and small backbones (`small_cnn`, MobileNetV3Small at 32x32), so that every
harness check stays fast; the inputs are not at the backbone's size, so the in-graph
resize is part of what is saved, exported and distributed.
"""

import numpy as np

from mmrep.encoders.image import ImageEncoder
from tests.harness import LayerCase


def _uint8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype("uint8")


def _unit_float(shape, seed=1):
    return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype("float32")


IMAGE_CASES = [
    LayerCase(
        name="image_small_cnn_uint8_avg",
        layer_cls=ImageEncoder,
        init_kwargs={"backbone": "small_cnn"},
        make_inputs=lambda: _uint8((2, 40, 36, 3)),
        expected_output_shape=(2, 64),
        atol=1e-5,
        # Random weights: BatchNorm trains on batch statistics, which are per replica
        # under MirroredStrategy (not synchronised), so one step on two devices differs.
        deterministic_training=False,
    ),
    LayerCase(
        name="image_small_cnn_float_feature_map",
        layer_cls=ImageEncoder,
        init_kwargs={
            "backbone": "small_cnn",
            "pooling": None,
            "value_range": (0.0, 1.0),
            "backbone_kwargs": {"filters": [8, 16]},
            "freeze_batchnorm": True,
        },
        make_inputs=lambda: _unit_float((2, 32, 32, 3)),
        expected_output_shape=(2, 16, 16, 16),
        atol=1e-5,
    ),
    LayerCase(
        name="image_mobilenet_v3_small_32_top_blocks",
        layer_cls=ImageEncoder,
        init_kwargs={
            "backbone": "mobilenet_v3_small",
            "image_size": (32, 32),
            "pooling": "max",
            "trainable_blocks": 3,
            "freeze_batchnorm": True,
        },
        make_inputs=lambda: 255.0 * _unit_float((2, 48, 44, 3), seed=2),
        expected_output_shape=(2, 576),
        atol=1e-5,
    ),
]
