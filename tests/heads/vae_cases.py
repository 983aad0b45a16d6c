"""Harness cases of `VAEHead` and `VectorDecoder`, merged into tests/registry.py."""

import numpy as np

from mmrep.heads.vae.decoders import VectorDecoder
from mmrep.heads.vae.vae import VAEHead
from tests.harness import LayerCase


def _features(dim=6):
    return np.random.default_rng(4).standard_normal((4, dim)).astype("float32")


def _label():
    # A one-hot condition (float: MirroredStrategy cannot split bool inputs).
    return {"condition": np.eye(3, dtype="float32")[[0, 2, 1, 2]]}


def _latents():
    return np.random.default_rng(5).standard_normal((4, 3)).astype("float32")


def _vae_outputs(latent_dim):
    return dict.fromkeys(("z", "z_mean", "z_log_var"), (4, latent_dim))


_FLOAT32_OUTPUTS = dict.fromkeys(("z", "z_mean", "z_log_var"), "float32")
# Training draws z from the layer's seed generator, whose stream is not split over two
# replicas as on one device: the distributed check runs the step (finite loss) but cannot
# compare weights. tests/heads/test_vae.py checks the step with noise made negligible.
_SAMPLED = {"deterministic_training": False, "mixed_output_dtype": "float32"}

VAE_CASES = [
    LayerCase(
        name="vae_head_plain",
        layer_cls=VAEHead,
        init_kwargs={"latent_dim": 3, "seed": 1},
        make_inputs=_features,
        expected_output_shape=_vae_outputs(3),
        expected_output_dtype=_FLOAT32_OUTPUTS,
        **_SAMPLED,
    ),
    LayerCase(
        name="vae_head_beta_hidden",
        layer_cls=VAEHead,
        init_kwargs={"latent_dim": 2, "beta": 4.0, "hidden_units": [5, 4], "activation": "tanh"},
        make_inputs=_features,
        expected_output_shape=_vae_outputs(2),
        expected_output_dtype=_FLOAT32_OUTPUTS,
        **_SAMPLED,
    ),
    LayerCase(
        name="vae_head_conditional",
        layer_cls=VAEHead,
        init_kwargs={"latent_dim": 2, "hidden_units": [5], "seed": 3},
        make_inputs=_features,
        make_call_tensors=_label,
        expected_output_shape=_vae_outputs(2),
        expected_output_dtype=_FLOAT32_OUTPUTS,
        **_SAMPLED,
    ),
    LayerCase(
        name="vector_decoder_gaussian_learned_variance",
        layer_cls=VectorDecoder,
        init_kwargs={"output_dim": 6, "hidden_units": [5], "variance": "learned"},
        make_inputs=_latents,
        expected_output_shape=(4, 12),
    ),
    LayerCase(
        name="vector_decoder_bernoulli_conditional",
        layer_cls=VectorDecoder,
        init_kwargs={"output_dim": 7, "distribution": "bernoulli"},
        make_inputs=_latents,
        make_call_tensors=_label,
        expected_output_shape=(4, 7),
    ),
    LayerCase(
        name="vector_decoder_gaussian_linear",
        layer_cls=VectorDecoder,
        init_kwargs={"output_dim": 5},
        make_inputs=_latents,
        expected_output_shape=(4, 5),
    ),
]
