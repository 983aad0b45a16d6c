"""`FisherVector` cases for the shared layer harness (merged into tests/registry.py).

Non-trainable cases get their mixture through the `gmm=` constructor argument, which the
config keeps, so that every rebuilt layer (from_config, `.keras`, distributed) encodes with
the same mixture. The `external_mixture=True` mode is not a case: its `mixture=` argument
is a dict of tensors without a batch axis, which the harness cannot feed as model inputs;
tests/heads/test_fisher_vector.py covers it.
"""

import numpy as np

from mmrep.heads import FisherVector
from tests.harness import LayerCase

_K, _D, _N, _B = 3, 4, 5, 4


def _gmm():
    rng = np.random.default_rng(3)
    weights = np.array([0.5, 0.3, 0.2])
    return {
        "weights": weights.tolist(),
        "means": np.round(rng.standard_normal((_K, _D)), 3).tolist(),
        "variances": np.round(rng.uniform(0.5, 2.0, (_K, _D)), 3).tolist(),
    }


def _descriptors():
    return np.random.default_rng(4).standard_normal((_B, _N, _D)).astype("float32")


def _mask():
    # Full, partly padded, a single real descriptor, and an empty set (encodes to zeros).
    mask = np.ones((_B, _N), "float32")
    mask[1, 3:] = 0
    mask[2, 1:] = 0
    mask[3, :] = 0
    return {"mask": mask}


FISHER_CASES = [
    LayerCase(
        name="fisher_vector_improved_mask",
        layer_cls=FisherVector,
        init_kwargs={"num_components": _K, "gmm": _gmm()},
        make_inputs=_descriptors,
        make_call_tensors=_mask,
        expected_output_shape=(_B, 2 * _K * _D),
    ),
    LayerCase(
        name="fisher_vector_plain_with_weights",
        layer_cls=FisherVector,
        init_kwargs={
            "num_components": _K,
            "improved": False,
            "include_weights": True,
            "gmm": _gmm(),
        },
        make_inputs=_descriptors,
        expected_output_shape=(_B, _K + 2 * _K * _D),
        atol=1e-5,
    ),
    LayerCase(
        name="fisher_vector_trainable_gmm_mask",
        layer_cls=FisherVector,
        init_kwargs={"num_components": _K, "trainable_gmm": True, "include_weights": True},
        make_inputs=_descriptors,
        make_call_tensors=_mask,
        expected_output_shape=(_B, _K + 2 * _K * _D),
    ),
]
