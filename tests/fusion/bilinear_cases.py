"""Registry cases for the bilinear and tensor fusion layers (merged into tests/registry.py).

Small widths keep every harness check fast. Presence masks are float32 0/1 (Keras `fit`
under MirroredStrategy cannot split bool inputs) and include missing modalities.
"""

import numpy as np

from mmrep.fusion.bilinear import BilinearFusion
from mmrep.fusion.tensor_fusion import LowRankTensorFusion, TensorFusion
from tests.harness import LayerCase


def _features(batch=4, seed=0, **shapes):
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((batch, *s)).astype("float32") for m, s in shapes.items()}


def _presence_two():
    return {"presence": np.array([[1, 1], [1, 0], [0, 1], [1, 1]], "float32")}


def _presence_three():
    return {"presence": np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]], "float32")}


BILINEAR_CASES = [
    LayerCase(
        name="bilinear_full_sets_presence",
        layer_cls=BilinearFusion,
        init_kwargs={"mode": "full", "modalities": ["image", "text"]},
        make_inputs=lambda: _features(image=(3, 5), text=(3, 4)),
        make_call_tensors=_presence_two,
        expected_output_shape=(4, 20),
        atol=1e-5,
    ),
    LayerCase(
        name="bilinear_compact_learned_missing_presence",
        layer_cls=BilinearFusion,
        init_kwargs={
            "mode": "compact",
            "output_dim": 16,
            "modalities": ["image", "text"],
            "seed": 3,
            "missing": "learned",
        },
        make_inputs=lambda: _features(seed=1, image=(6,), text=(5,)),
        make_call_tensors=_presence_two,
        expected_output_shape=(4, 16),
        atol=1e-5,
    ),
    LayerCase(
        name="bilinear_compact_sets_no_norm",
        layer_cls=BilinearFusion,
        init_kwargs={"mode": "compact", "output_dim": 12, "signed_sqrt": False},
        make_inputs=lambda: _features(seed=2, audio=(3, 5), video=(3, 7)),
        expected_output_shape=(4, 12),
        atol=1e-5,
    ),
    LayerCase(
        name="bilinear_mfb_presence",
        layer_cls=BilinearFusion,
        init_kwargs={
            "mode": "low_rank",
            "output_dim": 4,
            "factor_k": 3,
            "modalities": ["text", "image"],
        },
        make_inputs=lambda: _features(seed=3, image=(6,), text=(5,)),
        make_call_tensors=_presence_two,
        expected_output_shape=(4, 4),
        atol=1e-5,
    ),
    LayerCase(
        name="bilinear_mlb_sets_learned_missing",
        layer_cls=BilinearFusion,
        init_kwargs={
            "mode": "low_rank",
            "variant": "mlb",
            "output_dim": 3,
            "hidden_dim": 6,
            "missing": "learned",
            "modalities": ["image", "text"],
        },
        make_inputs=lambda: _features(seed=4, image=(2, 5), text=(2, 4)),
        make_call_tensors=_presence_two,
        expected_output_shape=(4, 3),
        atol=1e-5,
    ),
    LayerCase(
        name="tensor_fusion_three_presence",
        layer_cls=TensorFusion,
        init_kwargs={"modalities": ["text", "audio", "video"]},
        make_inputs=lambda: _features(seed=5, audio=(3,), text=(2,), video=(2,)),
        make_call_tensors=_presence_three,
        expected_output_shape=(4, 36),
    ),
    LayerCase(
        name="low_rank_tensor_fusion_three_presence",
        layer_cls=LowRankTensorFusion,
        init_kwargs={"output_dim": 3, "rank": 2, "modalities": ["text", "audio", "video"]},
        make_inputs=lambda: _features(seed=6, audio=(3,), text=(4,), video=(2,)),
        make_call_tensors=_presence_three,
        expected_output_shape=(4, 3),
        atol=1e-5,
    ),
    LayerCase(
        name="low_rank_tensor_fusion_no_mask",
        layer_cls=LowRankTensorFusion,
        init_kwargs={"output_dim": 2, "rank": 3},
        make_inputs=lambda: _features(seed=7, audio=(3,), text=(4,)),
        expected_output_shape=(4, 2),
        atol=1e-5,
    ),
]
