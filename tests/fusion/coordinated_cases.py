"""Registry cases for CoordinatedEmbedding (merged into tests/registry.py).

Small widths keep every harness check fast. Presence masks are float32 0/1 (Keras `fit`
under MirroredStrategy cannot split bool inputs) and include missing modalities. The
contrastive losses that train this layer have their own distributed tests
(tests/losses/test_contrastive.py).
"""

import numpy as np

from mmrep.fusion.coordinated import CoordinatedEmbedding
from tests.harness import LayerCase


def _features(batch=6, seed=0, **dims):
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((batch, d)).astype("float32") for m, d in dims.items()}


def _presence():
    return {"presence": np.array([[1, 1], [1, 1], [1, 1], [0, 1], [1, 1], [1, 0]], "float32")}


COORDINATED_CASES = [
    LayerCase(
        name="coordinated_mlp_presence",
        layer_cls=CoordinatedEmbedding,
        init_kwargs={
            "embedding_dim": 4,
            "modalities": ["text", "image"],
            "hidden_dims": (6,),
        },
        make_inputs=lambda: _features(image=8, text=5),
        make_call_tensors=_presence,
        expected_output_shape={"image": (6, 4), "text": (6, 4), "logit_scale": (6, 1)},
        expected_output_dtype={"image": "float32", "text": "float32", "logit_scale": "float32"},
        atol=1e-5,
    ),
    LayerCase(
        name="coordinated_three_modalities_two_hidden",
        layer_cls=CoordinatedEmbedding,
        init_kwargs={"embedding_dim": 3, "hidden_dims": (4, 5), "hidden_activation": "tanh"},
        make_inputs=lambda: _features(batch=4, seed=1, audio=4, image=6, text=5),
        expected_output_shape={
            "audio": (4, 3),
            "image": (4, 3),
            "text": (4, 3),
            "logit_scale": (4, 1),
        },
        expected_output_dtype={
            "audio": "float32",
            "image": "float32",
            "text": "float32",
            "logit_scale": "float32",
        },
        atol=1e-5,
    ),
    LayerCase(
        name="coordinated_linear_fixed_temperature",
        layer_cls=CoordinatedEmbedding,
        init_kwargs={
            "embedding_dim": 3,
            "use_bias": False,
            "learn_logit_scale": False,
            "logit_scale_init": 2.0,
        },
        make_inputs=lambda: _features(batch=4, seed=2, image=5, text=7),
        make_call_tensors=lambda: {
            "presence": np.array([[1, 0], [1, 1], [0, 1], [1, 1]], "float32")
        },
        expected_output_shape={"image": (4, 3), "text": (4, 3), "logit_scale": (4, 1)},
        expected_output_dtype={"image": "float32", "text": "float32", "logit_scale": "float32"},
    ),
]
