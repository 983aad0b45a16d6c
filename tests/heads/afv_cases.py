"""`AdversarialFisherVector` cases for the shared layer harness (merged into tests/registry.py).

Each case builds a fresh tiny discriminator (seeded initialisers, so every rebuilt layer
has the same weights) through `make_init_kwargs`, and passes its Fisher statistics
through the `statistics=` constructor argument, which the config keeps, so that every
layer the harness builds (from_config, `.keras`, distributed, mixed precision) can be
called without `adapt`. The discriminator's weights are trainable (for the GAN) but the
layer stops their gradient, hence `no_gradient`.
"""

import keras
import numpy as np

from mmrep.heads import AdversarialFisherVector
from tests.harness import LayerCase

_B, _SIDE, _CHANNELS = 4, 6, 2
_NAME = "tiny_discriminator"


def conv_discriminator(side=_SIDE, channels=_CHANNELS, name=_NAME):
    """Conv(3 filters, 3x3, stride 2) -> tanh -> Flatten -> Dense(1): 85 parameters at 6x6x2."""
    inputs = keras.Input((side, side, channels))
    x = keras.layers.Conv2D(
        3,
        3,
        strides=2,
        padding="same",
        activation="tanh",
        kernel_initializer=keras.initializers.GlorotUniform(seed=1),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=2),
        name="conv",
    )(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(
        1,
        kernel_initializer=keras.initializers.GlorotUniform(seed=3),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=4),
        name="head",
    )(x)
    return keras.Model(inputs, x, name=name)


_FULL_DIM = 3 * 3 * _CHANNELS * 3 + 3 + 3 * 3 * 3 + 1  # conv kernel, bias, dense kernel, bias
_HEAD_DIM = 3 * 3 * 3 + 1


def _statistics(dim, seed):
    rng = np.random.default_rng(seed)
    return {
        "mean_score": np.round(rng.normal(0.0, 0.1, dim), 4).tolist(),
        "fisher_information": np.round(rng.uniform(0.05, 0.5, dim), 4).tolist(),
    }


def _discriminator():
    return {"discriminator": conv_discriminator()}


def _images():
    return np.random.default_rng(5).normal(size=(_B, _SIDE, _SIDE, _CHANNELS)).astype("float32")


# The discriminator's weights (paths "conv/...", "head/...") get no gradient through the layer.
_FROZEN = {"no_gradient": ("conv/", "head/")}

AFV_CASES = [
    LayerCase(
        name="afv_all_parameters_conv",
        layer_cls=AdversarialFisherVector,
        init_kwargs={"statistics": _statistics(_FULL_DIM, 0), "batch_size": 3},
        make_init_kwargs=_discriminator,
        make_inputs=_images,
        expected_output_shape=(_B, _FULL_DIM),
        mixed_output_dtype="float32",
        atol=1e-5,
        **_FROZEN,
    ),
    LayerCase(
        name="afv_projection_power_l2",
        layer_cls=AdversarialFisherVector,
        init_kwargs={
            "statistics": _statistics(_FULL_DIM, 1),
            "projection_dim": 16,
            "seed": 7,
            "power_normalize": True,
            "l2_normalize": True,
        },
        make_init_kwargs=_discriminator,
        make_inputs=_images,
        expected_output_shape=(_B, 16),
        mixed_output_dtype="float32",
        atol=1e-5,
        **_FROZEN,
    ),
    LayerCase(
        name="afv_named_layer_subset",
        layer_cls=AdversarialFisherVector,
        init_kwargs={
            "statistics": _statistics(_HEAD_DIM, 2),
            "parameters": ["head"],
            "subset_size": 12,
            "seed": 3,
        },
        make_init_kwargs=_discriminator,
        make_inputs=_images,
        expected_output_shape=(_B, 12),
        mixed_output_dtype="float32",
        atol=1e-5,
        **_FROZEN,
    ),
]
