"""Harness cases of `MultimodalAutoencoder`, merged into tests/registry.py."""

import numpy as np

from mmrep.fusion.autoencoder import MultimodalAutoencoder
from tests.harness import LayerCase


def _features():
    rng = np.random.default_rng(3)
    return {
        "image": rng.standard_normal((4, 8)).astype("float32"),
        "text": rng.standard_normal((4, 5)).astype("float32"),
    }


def _presence():
    # Float 0/1 (MirroredStrategy cannot split bool inputs); rows 1 and 2 miss a modality.
    return {"presence": np.array([[1, 1], [1, 0], [0, 1], [1, 1]], "float32")}


_RECONSTRUCTED = {"code": (4, 3), "image_reconstruction": (4, 8), "text_reconstruction": (4, 5)}
_FLOAT32 = dict.fromkeys(_RECONSTRUCTED, "float32")

AUTOENCODER_CASES = [
    LayerCase(
        name="autoencoder_deep_l1_contractive_presence",
        layer_cls=MultimodalAutoencoder,
        init_kwargs={
            "code_dim": 3,
            "modalities": ["image", "text"],
            "encoder_units": [6],
            "decoder_units": [5],
            "activation": "tanh",
            "sparsity": "l1",
            "sparsity_weight": 0.1,
            "contractive_weight": 0.01,
            "reconstruction_weight": {"image": 2.0},
        },
        make_inputs=_features,
        make_call_tensors=_presence,
        expected_output_shape=_RECONSTRUCTED,
        expected_output_dtype=_FLOAT32,
    ),
    LayerCase(
        # Modality dropout and noise draw from the layer's seed generator, whose stream
        # is not split the same way over two replicas as on one device: the distributed
        # check still runs the step (finite loss) but cannot compare the weights.
        name="autoencoder_modality_dropout_noise_presence",
        layer_cls=MultimodalAutoencoder,
        init_kwargs={
            "code_dim": 3,
            "modality_dropout": 0.5,
            "noise": "masking",
            "noise_level": 0.2,
            "seed": 7,
            "reconstruction_metrics": True,
        },
        make_inputs=_features,
        make_call_tensors=_presence,
        expected_output_shape=_RECONSTRUCTED,
        expected_output_dtype=_FLOAT32,
        deterministic_training=False,
    ),
    LayerCase(
        # The KL sparsity penalty uses the batch mean of the code: on two replicas each
        # takes the mean of its half (like batch normalisation), so one step differs
        # from one device's; the distributed check runs it but does not compare.
        name="autoencoder_tied_concat_kl_code_only",
        layer_cls=MultimodalAutoencoder,
        init_kwargs={
            "code_dim": 3,
            "fusion": "concat",
            "tied_weights": True,
            "sparsity": "kl",
            "sparsity_weight": 0.5,
            "return_reconstructions": False,
        },
        make_inputs=_features,
        expected_output_shape=(4, 3),
        # Only the code is returned: the output biases are trained by the added loss.
        no_gradient=("output_bias",),
        deterministic_training=False,
    ),
]
