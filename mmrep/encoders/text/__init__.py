"""Text encoders: BERT from Hugging Face checkpoints (a folder, or an id through the Hugging
Face cache), and its tokenizers."""

from mmrep.encoders.text.bert import BertEncoder
from mmrep.encoders.text.bert_layers import BertEmbedding, BertTransformerBlock
from mmrep.encoders.text.safetensors_io import CheckpointError
from mmrep.encoders.text.tokenizer import TextTokenizer
from mmrep.encoders.text.wordpiece_tokenizer import WordPieceTokenizer

__all__ = [
    "BertEmbedding",
    "BertEncoder",
    "BertTransformerBlock",
    "CheckpointError",
    "TextTokenizer",
    "WordPieceTokenizer",
]
