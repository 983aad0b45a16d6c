"""Registry cases for the learnable pooling family (merged into tests/registry.py).

Small sets keep every harness check fast. Masks are float32 0/1 (Keras `fit` under
MirroredStrategy cannot split bool inputs); one row of each masked batch is empty and the
padded rows hold NaN, so every check also sees that padding never reaches the outputs.
"""

import numpy as np

from mmrep.heads.pooling.context_gating import ContextGating
from mmrep.heads.pooling.net_fisher_vector import NetFV
from mmrep.heads.pooling.netvlad import NetRVLAD, NetVLAD, SoftBagOfWords
from tests.harness import LayerCase

_MASK = np.array([[1, 1, 1, 1, 0], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], "float32")


def _sets(seed=0, dim=3):
    x = np.random.default_rng(seed).standard_normal((4, 5, dim)).astype("float32")
    x[_MASK == 0] = np.nan
    return x


def _dense_sets(seed=0, dim=3):
    return np.random.default_rng(seed).standard_normal((4, 5, dim)).astype("float32")


def _mask():
    return {"mask": _MASK.copy()}


NETVLAD_CASES = [
    LayerCase(
        name="netvlad_masked",
        layer_cls=NetVLAD,
        init_kwargs={"num_clusters": 4},
        make_inputs=_sets,
        make_call_tensors=_mask,
        expected_output_shape=(4, 12),
        atol=1e-5,
    ),
    LayerCase(
        name="netvlad_ghost_projection_gating_masked",
        layer_cls=NetVLAD,
        init_kwargs={"num_clusters": 3, "ghost_clusters": 2, "output_dim": 5, "gating": True},
        make_inputs=lambda: _sets(seed=1),
        make_call_tensors=_mask,
        expected_output_shape=(4, 5),
        atol=1e-5,
    ),
    LayerCase(
        name="netvlad_l2_no_mask",
        layer_cls=NetVLAD,
        init_kwargs={"num_clusters": 2, "normalization": "l2"},
        make_inputs=lambda: _dense_sets(seed=2, dim=4),
        expected_output_shape=(4, 8),
        atol=1e-5,
    ),
    LayerCase(
        name="netrvlad_gating_masked",
        layer_cls=NetRVLAD,
        init_kwargs={"num_clusters": 3, "gating": True},
        make_inputs=lambda: _sets(seed=3),
        make_call_tensors=_mask,
        expected_output_shape=(4, 9),
        atol=1e-5,
    ),
    LayerCase(
        name="soft_bag_of_words_l1_ghost_masked",
        layer_cls=SoftBagOfWords,
        init_kwargs={"num_clusters": 4, "ghost_clusters": 1, "normalization": "l1"},
        make_inputs=lambda: _sets(seed=4),
        make_call_tensors=_mask,
        expected_output_shape=(4, 4),
        atol=1e-5,
    ),
    LayerCase(
        name="soft_bag_of_words_projection_gating",
        layer_cls=SoftBagOfWords,
        init_kwargs={"num_clusters": 4, "output_dim": 3, "gating": True},
        make_inputs=lambda: _dense_sets(seed=5),
        expected_output_shape=(4, 3),
        atol=1e-5,
    ),
    LayerCase(
        name="netfv_masked",
        layer_cls=NetFV,
        init_kwargs={"num_clusters": 2},
        make_inputs=lambda: _sets(seed=6),
        make_call_tensors=_mask,
        expected_output_shape=(4, 12),
        atol=1e-5,
    ),
    LayerCase(
        name="netfv_ghost_projection_gating_masked",
        layer_cls=NetFV,
        init_kwargs={"num_clusters": 2, "ghost_clusters": 1, "output_dim": 4, "gating": True},
        make_inputs=lambda: _sets(seed=7),
        make_call_tensors=_mask,
        expected_output_shape=(4, 4),
        atol=1e-5,
    ),
    LayerCase(
        name="context_gating_vectors",
        layer_cls=ContextGating,
        init_kwargs={},
        make_inputs=lambda: np.random.default_rng(8).standard_normal((4, 6)).astype("float32"),
        expected_output_shape=(4, 6),
        atol=1e-5,
    ),
    LayerCase(
        name="context_gating_low_rank_sets",
        layer_cls=ContextGating,
        init_kwargs={"units": 2},
        make_inputs=lambda: _dense_sets(seed=9, dim=6),
        expected_output_shape=(4, 5, 6),
        atol=1e-5,
    ),
]
