"""Registry cases for the BERT layers (merged into tests/registry.py)."""

import numpy as np

from mmrep.encoders import BertEmbedding, BertEncoder, BertTransformerBlock
from tests.harness import LayerCase

_TINY = {
    "vocabulary_size": 30,
    "num_layers": 2,
    "num_heads": 2,
    "hidden_size": 8,
    "intermediate_size": 12,
    "max_position_embeddings": 16,
    "dropout": 0.0,
    "attention_dropout": 0.0,
}


def _token_batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 30, (4, 6)).astype("int32")
    mask = (np.arange(6)[None] < np.array([[6], [3], [1], [5]])).astype("int32")
    segments = np.zeros_like(ids)
    segments[:, 3:] = 1
    return {"token_ids": ids * mask, "padding_mask": mask, "segment_ids": segments * mask}


def _hidden():
    return np.random.default_rng(1).standard_normal((4, 6, 8)).astype("float32")


BERT_CASES = [
    LayerCase(
        name="bert_encoder_dict",
        layer_cls=BertEncoder,
        init_kwargs=_TINY,
        make_inputs=_token_batch,
        expected_output_shape={"pooled_output": (4, 8), "sequence_output": (4, 6, 8)},
        expected_output_dtype={"pooled_output": "float32", "sequence_output": "float32"},
        atol=1e-5,
    ),
    LayerCase(
        name="bert_encoder_mean_normalized_frozen",
        layer_cls=BertEncoder,
        init_kwargs={**_TINY, "pooling": "mean", "normalize": True, "frozen_layers": 1},
        make_inputs=_token_batch,
        expected_output_shape=(4, 8),
        atol=1e-5,
    ),
    LayerCase(
        name="bert_embedding",
        layer_cls=BertEmbedding,
        init_kwargs={
            "vocabulary_size": 30,
            "hidden_size": 8,
            "max_position_embeddings": 16,
            "dropout": 0.0,
        },
        make_inputs=lambda: _token_batch()["token_ids"],
        make_call_tensors=lambda: {"segment_ids": _token_batch()["segment_ids"]},
        expected_output_shape=(4, 6, 8),
    ),
    LayerCase(
        name="bert_transformer_block",
        layer_cls=BertTransformerBlock,
        init_kwargs={
            "hidden_size": 8,
            "num_heads": 2,
            "intermediate_size": 12,
            "dropout": 0.0,
            "attention_dropout": 0.0,
        },
        make_inputs=_hidden,
        make_call_tensors=lambda: {"padding_mask": _token_batch()["padding_mask"]},
        expected_output_shape=(4, 6, 8),
        atol=1e-5,
    ),
]
