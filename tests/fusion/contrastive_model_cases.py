"""Registry cases for ContrastiveModel (merged into tests/registry.py).

The embedding model is made fresh for every layer the harness builds
(`make_init_kwargs`), so no two models share weights. Presence masks are float32 0/1
(Keras `fit` under MirroredStrategy cannot split bool inputs). Its contrastive training
(cross-replica negatives, missing modalities, precision, XLA) is tested in
tests/fusion/test_contrastive_model.py.
"""

import keras
import numpy as np

from mmrep.fusion.contrastive_model import ContrastiveModel
from mmrep.fusion.coordinated import CoordinatedEmbedding
from mmrep.losses import ClipLoss, NTXentLoss
from tests.harness import LayerCase


def embedding_model(image_dim=6, text_dim=4, embedding_dim=3, presence=True, **layer_kwargs):
    """A functional model: inputs `image`, `text` (and `presence`) -> CoordinatedEmbedding."""
    inputs = {"image": keras.Input((image_dim,), name="image")}
    if presence:  # inputs in sorted order, as Keras flattens a dict
        inputs["presence"] = keras.Input((2,), name="presence")
    inputs["text"] = keras.Input((text_dim,), name="text")
    outputs = CoordinatedEmbedding(embedding_dim, **layer_kwargs)(
        {"image": inputs["image"], "text": inputs["text"]}, presence=inputs.get("presence")
    )
    return keras.Model(inputs, outputs, name="embedding_model")


def _inputs(batch=6, seed=0, presence=True):
    rng = np.random.default_rng(seed)
    x = {
        "image": rng.standard_normal((batch, 6)).astype("float32"),
        "text": rng.standard_normal((batch, 4)).astype("float32"),
    }
    if presence:  # columns image, text; every pattern but "none"
        x["presence"] = np.array([[1, 1], [1, 0], [1, 1], [0, 1], [1, 1], [1, 1]], "float32")
    return x


_OUTPUT_SHAPES = {"image": (6, 3), "text": (6, 3), "logit_scale": (6, 1)}
_OUTPUT_DTYPES = dict.fromkeys(_OUTPUT_SHAPES, "float32")

CONTRASTIVE_MODEL_CASES = [
    LayerCase(
        name="contrastive_model_clip_presence",
        layer_cls=ContrastiveModel,
        init_kwargs={"contrastive_loss": ClipLoss()},
        make_init_kwargs=lambda: {
            "embedding_model": embedding_model(hidden_dims=(5,), hidden_activation="tanh")
        },
        make_inputs=_inputs,
        expected_output_shape=_OUTPUT_SHAPES,
        expected_output_dtype=_OUTPUT_DTYPES,
        # The model returns its outputs in float32 under every policy.
        mixed_output_dtype="float32",
        atol=1e-5,
    ),
    LayerCase(
        name="contrastive_model_nt_xent_linear",
        layer_cls=ContrastiveModel,
        init_kwargs={"contrastive_loss": NTXentLoss(temperature=0.2), "name": "contrastive"},
        make_init_kwargs=lambda: {
            "embedding_model": embedding_model(presence=False, learn_logit_scale=False)
        },
        make_inputs=lambda: _inputs(seed=1, presence=False),
        expected_output_shape=_OUTPUT_SHAPES,
        expected_output_dtype=_OUTPUT_DTYPES,
        mixed_output_dtype="float32",
        atol=1e-5,
    ),
]
