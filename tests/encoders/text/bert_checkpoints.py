"""Tiny random BERT checkpoints written by Hugging Face `transformers` in its real formats.

The reference for the BERT tests is `transformers`' PyTorch `BertModel` on the CPU. These
helpers build one with small sizes and random weights (biases and LayerNorm parameters
too, so that nothing passes by being zero or one), save it as `save_pretrained` does, and
rewrite the files into the other layouts that real checkpoints come in.
"""

import json
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file

TINY = {
    "vocab_size": 97,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 24,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
}


def make_bert(seed=0, **overrides):
    """A randomly initialised `transformers.BertModel` (eval mode, eager attention)."""
    config = transformers.BertConfig(**{**TINY, **overrides}, attn_implementation="eager")
    torch.manual_seed(seed)
    model = transformers.BertModel(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.1 * noise if name.endswith("LayerNorm.weight") else 0.2 * noise)
    return model


def save(model, directory, layout="bare", max_shard_size=None):
    """Saves `model` to `directory` in one of the layouts real BERT checkpoints use.

    Layouts: `"bare"` (`BertModel.save_pretrained`: `encoder.layer.0...`), `"prefixed"`
    (as `BertForPreTraining` saves: `bert.`-prefixed keys plus `cls.` head tensors),
    `"gamma_beta"` (prefixed, LayerNorm parameters named gamma/beta, as checkpoints
    converted from the original TensorFlow release have), `"sharded"` (bare, split into
    shards with an index), and `"pickle"` (`pytorch_model.bin` only).
    """
    directory = Path(directory)
    if layout == "sharded":
        model.save_pretrained(directory, max_shard_size=max_shard_size or "20KB")
        assert (directory / "model.safetensors.index.json").is_file()
        return directory
    model.save_pretrained(directory)
    if layout == "bare":
        return directory
    weights = directory / "model.safetensors"
    state = load_file(weights)
    if layout == "pickle":
        weights.unlink()
        torch.save(state, directory / "pytorch_model.bin")
        return directory
    state = {f"bert.{k}": v for k, v in state.items()}
    hidden, vocab = model.config.hidden_size, model.config.vocab_size
    state["cls.predictions.bias"] = torch.zeros(vocab)
    state["cls.predictions.transform.dense.weight"] = torch.zeros(hidden, hidden)
    state["cls.seq_relationship.weight"] = torch.zeros(2, hidden)
    if layout == "gamma_beta":
        state = {
            k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
                "LayerNorm.bias", "LayerNorm.beta"
            ): v
            for k, v in state.items()
        }
    elif layout != "prefixed":
        raise ValueError(f"unknown layout {layout!r}")
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["BertForPreTraining"]
    (directory / "config.json").write_text(json.dumps(config))
    save_file(state, weights, metadata={"format": "pt"})
    return directory


def reference_outputs(model, token_ids, padding_mask, segment_ids=None):
    """`BertModel` outputs as float64 numpy: (sequence_output, pooled_output)."""
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(np.asarray(token_ids), dtype=torch.long),
            attention_mask=torch.as_tensor(np.asarray(padding_mask), dtype=torch.long),
            token_type_ids=None
            if segment_ids is None
            else torch.as_tensor(np.asarray(segment_ids), dtype=torch.long),
        )
    return (
        out.last_hidden_state.double().numpy(),
        out.pooler_output.double().numpy(),
    )


def padded_batch(lengths, max_length, vocab_size, seed=0, pair_split=None):
    """Random ids with `[CLS]`=2 first and padding (id 0) after each length."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (len(lengths), max_length)).astype("int32")
    mask = (np.arange(max_length)[None] < np.asarray(lengths)[:, None]).astype("int32")
    ids[:, 0] = 2
    ids *= mask
    segments = np.zeros_like(ids)
    if pair_split is not None:
        for row, (split, length) in enumerate(zip(pair_split, lengths, strict=True)):
            segments[row, split:length] = 1
    return {"token_ids": ids, "padding_mask": mask, "segment_ids": segments}
