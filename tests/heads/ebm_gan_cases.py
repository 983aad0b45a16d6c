"""Harness cases for the energy-based GAN (merged into tests/registry.py).

The harness drives `EBMGAN` as a layer: its call is the discriminator's score `D(x)`, so
the shared checks cover the call, config, `.keras`/SavedModel export, mixed precision,
gradients and one MirroredStrategy SGD step through `D`. The generator gets no gradient
from a score (`no_gradient`). Its own two-optimizer `train_step` under MirroredStrategy
is checked against one device in tests/heads/test_ebm_gan_training.py.
"""

import numpy as np

from mmrep.heads.gan.ebm_gan import EBMGAN
from mmrep.heads.gan.gan_networks import dcgan_discriminator, dcgan_generator
from tests.harness import LayerCase

# Substrings of the generator's weight paths (dcgan_generator's layer names).
GENERATOR_WEIGHTS = ("project", "deconv", "_bn/", "to_image")


def _images():
    return np.random.default_rng(0).uniform(-1.0, 1.0, (4, 8, 8, 1)).astype("float32")


def _networks(spectral_normalization):
    def make():
        return {
            "generator": dcgan_generator(4, output_shape=(8, 8, 1), widths=(4, 2)),
            "discriminator": dcgan_discriminator(
                (8, 8, 1), widths=(2, 4), spectral_normalization=spectral_normalization
            ),
        }

    return make


EBM_GAN_CASES = [
    LayerCase(
        name="ebm_gan_spectral_norm_score",
        layer_cls=EBMGAN,
        init_kwargs={
            "objective": "least_squares",
            "generator_regularization": 1.0,
            "regularization_noise_std": 0.1,
            "gradient_penalty": 0.5,
            "seed": 0,
        },
        make_init_kwargs=_networks(True),
        make_inputs=_images,
        expected_output_shape=(4,),
        # The score is an unnormalised log-density, float32 under every policy.
        mixed_output_dtype="float32",
        no_gradient=GENERATOR_WEIGHTS,
    ),
    LayerCase(
        name="ebm_gan_hinge_score",
        layer_cls=EBMGAN,
        init_kwargs={
            "objective": "hinge",
            "ema_decay": 0.5,
            "discriminator_steps": 2,
            "generator_steps": 1,
        },
        make_init_kwargs=_networks(False),
        make_inputs=_images,
        expected_output_shape=(4,),
        mixed_output_dtype="float32",
        no_gradient=GENERATOR_WEIGHTS,
    ),
]
