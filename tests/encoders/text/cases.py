"""Registry cases for the text encoders (merged into tests/registry.py)."""

import numpy as np

from mmrep.encoders.text.wordpiece_tokenizer import WordPieceTokenizer
from tests.encoders.text.checkpoints import build_vocabulary
from tests.encoders.text.corpus import CORPUS, LONG_PARAGRAPH
from tests.harness import LayerCase

_TOKENIZER_OUTPUTS = ("token_ids", "padding_mask", "segment_ids")
_NO_TRAINING = {
    "gradients": "string inputs and integer outputs, no weights: nothing to differentiate",
    "distributed": "no weights to train; the SGD step compared across replicas needs some",
}


def _texts():
    return np.array(
        [
            CORPUS["accents"][0],
            CORPUS["cjk"][3],
            "Paris is the [MASK] of France. 👍🏽",
            LONG_PARAGRAPH,
        ]
    )


def _pairs():
    return {"text": _texts(), "text_pair": np.array(["", "short", LONG_PARAGRAPH, "x y z"])}


def _tokenizer_case(name, init_kwargs, make_inputs, batch=4):
    length = init_kwargs["sequence_length"]
    return LayerCase(
        name=name,
        layer_cls=WordPieceTokenizer,
        init_kwargs=init_kwargs,
        make_inputs=make_inputs,
        expected_output_shape={k: (batch, length) for k in _TOKENIZER_OUTPUTS},
        expected_output_dtype={k: "int32" for k in _TOKENIZER_OUTPUTS},
        not_applicable=_NO_TRAINING,
    )


TEXT_CASES = [
    _tokenizer_case(
        "wordpiece_tokenizer_uncased",
        {"vocabulary": build_vocabulary(lowercase=True), "sequence_length": 16},
        _texts,
    ),
    _tokenizer_case(
        "wordpiece_tokenizer_cased_pairs",
        {
            "vocabulary": build_vocabulary(lowercase=False),
            "sequence_length": 12,
            "lowercase": False,
        },
        _pairs,
    ),
]
