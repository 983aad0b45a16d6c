"""Text encoder benchmark: BertEncoder vs Hugging Face transformers on PyTorch (CPU)."""

import tempfile

import numpy as np

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
    import tensorflow as tf
    import torch
    import transformers

    from mmrep.encoders import BertEncoder

    config, batch, length = (BERT_BASE, 32, 128) if size == "full" else (SMOKE, 2, 8)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    reference_model = transformers.BertModel(transformers.BertConfig(**config)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        reference_model.save_pretrained(tmp)
        encoder = BertEncoder.from_pretrained(tmp)

    rng = np.random.default_rng(0)
    lengths = rng.integers(length // 2, length + 1, batch)
    mask = (np.arange(length)[None] < lengths[:, None]).astype("int32")
    ids = rng.integers(1000 % config["vocab_size"], config["vocab_size"], (batch, length))
    ids = (ids * mask).astype("int32")
    inputs = {"token_ids": ids, "padding_mask": mask, "segment_ids": np.zeros_like(ids)}
    tf_inputs = {k: tf.constant(v) for k, v in inputs.items()}
    ours = tf.function(lambda x: encoder(x)["sequence_output"])
    torch_inputs = {
        "input_ids": torch.as_tensor(ids, dtype=torch.long),
        "attention_mask": torch.as_tensor(mask, dtype=torch.long),
    }

    def reference():
        with torch.inference_mode():
            return reference_model(**torch_inputs).last_hidden_state

    return Comparison(
        mmrep=lambda: ours(tf_inputs).numpy(),
        reference=reference,
        reference_name=f"transformers {transformers.__version__} BertModel, PyTorch "
        f"{torch.__version__} (sdpa attention, inference_mode)",
        work=f"{config['num_hidden_layers']} layers x {config['hidden_size']}, "
        f"batch {batch} x {length} tokens (padded), tf.function",
        items=batch,
    )
