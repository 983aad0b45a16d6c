"""Text encoder benchmark: BertEncoder vs Hugging Face transformers on PyTorch (CPU).

The reference runs in a process of its own (see `tests/benchmarks/references.py`).
"""

import tempfile

import tensorflow as tf

from tests.benchmarks.references import ReferenceProcess, bert_batch
from tests.benchmarks.runner import Comparison, benchmark

BERT_BASE = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
}
SMOKE = {
    "vocab_size": 97,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 20,
    "max_position_embeddings": 32,
}


@benchmark("bert_encoder")
def bert_encoder(size="full"):
    """BERT-base forward pass, batch 32 x 128 tokens with padding, 2 CPU threads each."""
    import torch
    import transformers

    from mmrep.encoders import BertEncoder

    config, batch, length = (BERT_BASE, 32, 128) if size == "full" else (SMOKE, 2, 8)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        transformers.BertModel(transformers.BertConfig(**config)).save_pretrained(tmp)
        encoder = BertEncoder.from_pretrained(tmp)
        reference = ReferenceProcess("torch_bert", checkpoint=tmp, batch=batch, length=length)
    inputs = {k: tf.constant(v) for k, v in bert_batch(batch, length, config["vocab_size"]).items()}
    ours = tf.function(lambda x: encoder(x)["sequence_output"])
    return Comparison(
        mmrep=lambda: ours(inputs).numpy(),
        reference=reference,
        reference_name=f"transformers {transformers.__version__} BertModel, PyTorch "
        f"{torch.__version__}, 2 threads, inference_mode, own process",
        work=f"{config['num_hidden_layers']} layers x {config['hidden_size']}, "
        f"batch {batch} x {length} tokens (padded), tf.function",
        items=batch,
    )
