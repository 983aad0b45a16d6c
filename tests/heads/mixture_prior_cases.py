"""Harness cases of `GaussianMixturePrior` (alone and inside `VAEHead`), merged into
tests/registry.py."""

import numpy as np

from mmrep.heads.vae.mixture_prior import GaussianMixturePrior
from mmrep.heads.vae.vae import VAEHead
from tests.harness import LayerCase


def _latent():
    return np.random.default_rng(6).standard_normal((4, 3)).astype("float32")


def _posterior():
    rng = np.random.default_rng(7)
    return {
        "z_mean": rng.standard_normal((4, 3)).astype("float32"),
        "z_log_var": rng.uniform(-1.0, 1.0, (4, 3)).astype("float32"),
    }


def _features():
    return np.random.default_rng(8).standard_normal((4, 6)).astype("float32")


_PRIOR_DTYPES = {"kl": "float32", "responsibilities": "float32", "cluster": "int32"}

MIXTURE_PRIOR_CASES = [
    LayerCase(
        name="gaussian_mixture_prior",
        layer_cls=GaussianMixturePrior,
        init_kwargs={"num_components": 5, "seed": 2},
        make_inputs=_latent,
        make_call_tensors=_posterior,
        expected_output_shape={"kl": (4,), "responsibilities": (4, 5), "cluster": (4,)},
        expected_output_dtype=_PRIOR_DTYPES,
        # The KL and responsibilities are mixture statistics, float32 under every policy.
        mixed_output_dtype="float32",
        atol=1e-5,
    ),
    LayerCase(
        name="vae_head_gaussian_mixture_prior",
        layer_cls=VAEHead,
        init_kwargs={"latent_dim": 3, "hidden_units": (5,), "seed": 1},
        # A fresh prior for every layer the harness builds (a shared one would share weights).
        make_init_kwargs=lambda: {"prior": GaussianMixturePrior(4, seed=3)},
        make_inputs=_features,
        expected_output_shape={
            **dict.fromkeys(("z", "z_mean", "z_log_var"), (4, 3)),
            "responsibilities": (4, 4),
            "cluster": (4,),
        },
        expected_output_dtype={
            **dict.fromkeys(("z", "z_mean", "z_log_var", "responsibilities"), "float32"),
            "cluster": "int32",
        },
        mixed_output_dtype="float32",
        # Training samples z from the head's seed generator, whose stream is not split over
        # two replicas as on one device: the distributed step runs (finite loss) but its
        # weights cannot be compared with the single-device step.
        deterministic_training=False,
        atol=1e-5,
    ),
]
