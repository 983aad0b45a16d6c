"""Harness cases for the multimodal-VAE layers (merged into tests/registry.py)."""

import numpy as np

from mmrep.heads.vae.multimodal_vae import MultimodalVAE
from mmrep.heads.vae.product_of_experts import ProductOfExperts
from tests.harness import LayerCase


def _experts(batch=4, modalities=3, latent=5):
    rng = np.random.default_rng(0)
    return {
        "means": rng.standard_normal((batch, modalities, latent)).astype("float32"),
        "log_vars": rng.uniform(-2.0, 2.0, (batch, modalities, latent)).astype("float32"),
    }


def _presence():
    # Float 0/1 (MirroredStrategy cannot split bool); one example with no expert at all.
    return {
        "presence": np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]], "float32"),
    }


MVAE_CASES = [
    LayerCase(
        name="product_of_experts_presence",
        layer_cls=ProductOfExperts,
        init_kwargs={},
        make_inputs=_experts,
        make_call_tensors=_presence,
        expected_output_shape={"z_mean": (4, 5), "z_log_var": (4, 5)},
        expected_output_dtype={"z_mean": "float32", "z_log_var": "float32"},
    ),
    LayerCase(
        name="product_of_experts_all_present",
        layer_cls=ProductOfExperts,
        init_kwargs={},
        make_inputs=lambda: _experts(batch=2, modalities=2, latent=3),
        expected_output_shape={"z_mean": (2, 3), "z_log_var": (2, 3)},
        expected_output_dtype={"z_mean": "float32", "z_log_var": "float32"},
    ),
]


def _mvae_networks():
    import keras

    return {
        "encoders": {"image": keras.layers.Dense(6), "label": keras.layers.Dense(6)},
        "decoders": {"image": keras.layers.Dense(8), "label": keras.layers.Dense(3)},
    }


def _mvae_inputs():
    rng = np.random.default_rng(1)
    return {
        "image": rng.uniform(0.0, 1.0, (4, 8)).astype("float32"),
        "label": np.eye(3, dtype="float32")[[0, 2, 1, 1]],
        "presence": np.array([[1, 1], [1, 0], [0, 1], [1, 1]], "float32"),
    }


MVAE_CASES.append(
    LayerCase(
        name="multimodal_vae_image_label_presence",
        layer_cls=MultimodalVAE,
        init_kwargs={
            "reconstruction_losses": {"image": "bernoulli", "label": "categorical"},
            "latent_dim": 2,
            "num_subsets": 1,
            "seed": 0,
        },
        make_init_kwargs=_mvae_networks,
        make_inputs=_mvae_inputs,
        expected_output_shape={
            "z_mean": (4, 2),
            "z_log_var": (4, 2),
            "expert_means": (4, 2, 2),
            "expert_log_vars": (4, 2, 2),
            "image_reconstruction": (4, 8),
            "label_reconstruction": (4, 3),
        },
        expected_output_dtype={
            "z_mean": "float32",
            "z_log_var": "float32",
            "expert_means": "float32",
            "expert_log_vars": "float32",
            "image_reconstruction": "float32",
            "label_reconstruction": "float32",
        },
        # The latent sample differs between one device and two replicas' streams; the
        # step equivalence is tested with the posterior mean in test_multimodal_vae.py.
        deterministic_training=False,
        # The model computes the ELBO's terms in float32 and returns them so.
        mixed_output_dtype="float32",
    )
)
