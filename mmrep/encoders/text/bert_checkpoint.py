"""Loading a local Hugging Face BERT checkpoint folder into a `BertEncoder`.

Accepted: `config.json` with `model_type: "bert"`, and weights in `model.safetensors`, a
sharded `model.safetensors.index.json`, or (only with `allow_pickle=True`, since unpickling
can run code) `pytorch_model.bin`. Keys may be bare (`encoder.layer.0...`, as `BertModel`
saves them) or `bert.`-prefixed (as `BertForPreTraining`, `BertForMaskedLM` and the
sequence-classification models save them), and LayerNorm parameters may be named
`weight`/`bias` or `gamma`/`beta` (checkpoints converted from the original TensorFlow
release). Weights of task heads (`cls.`, `classifier.`, `qa_outputs.`) are not part of the
encoder: they are reported in the log and left out.
"""

import json
import logging
import os
from pathlib import Path

import numpy as np

from mmrep.encoders.text.safetensors_io import (
    CheckpointError,
    read_safetensors,
    read_sharded_safetensors,
)

logger = logging.getLogger("mmrep")

# Tensors some checkpoints carry that are buffers, not weights.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")
# config.json key -> BertEncoder argument.
_CONFIG_KEYS = {
    "vocab_size": "vocabulary_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocabulary_size",
    "hidden_act": "activation",
    "hidden_dropout_prob": "dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "layer_norm_eps": "layer_norm_epsilon",
    "initializer_range": "initializer_range",
}
_REQUIRED_CONFIG = (
    "vocab_size",
    "num_hidden_layers",
    "num_attention_heads",
    "hidden_size",
    "intermediate_size",
)


def read_bert_config(directory):
    """`config.json` of a BERT checkpoint as `BertEncoder` constructor arguments."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json (a Hugging Face checkpoint has one)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    model_type = config.get("model_type")
    if model_type != "bert":
        architectures = config.get("architectures")
        raise CheckpointError(
            f"{path}: expected a BERT checkpoint (model_type 'bert'). Received: "
            f"model_type={model_type!r}, architectures={architectures!r}"
        )
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"{path}: expected position_embedding_type 'absolute'. Received: "
            f"{config['position_embedding_type']!r}"
        )
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise CheckpointError(f"{path}: a decoder checkpoint; BertEncoder is the encoder only")
    missing = [k for k in _REQUIRED_CONFIG if k not in config]
    if missing:
        raise CheckpointError(f"{path}: missing BERT config keys {missing}")
    return {arg: config[key] for key, arg in _CONFIG_KEYS.items() if key in config}


def _read_weights(directory, allow_pickle):
    directory = Path(directory)
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return read_safetensors(single), single
    if index.is_file():
        return read_sharded_safetensors(index), index
    pickled = directory / "pytorch_model.bin"
    if pickled.is_file():
        if not allow_pickle:
            raise CheckpointError(
                f"{pickled}: a pickle checkpoint, which can run arbitrary code when loaded; "
                "it is refused unless you pass allow_pickle=True (or convert it to "
                "model.safetensors)"
            )
        import torch

        state = torch.load(pickled, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}, pickled
    present = sorted(p.name for p in directory.iterdir())
    raise CheckpointError(
        f"{directory}: expected model.safetensors, model.safetensors.index.json or "
        f"pytorch_model.bin (with allow_pickle=True). Found: {present}"
    )


def _canonical_names(tensors):
    """Strips the `bert.` prefix and renames gamma/beta; sets task-head tensors apart."""
    prefixed = any(k.startswith("bert.") for k in tensors)
    canonical, heads = {}, []
    for key, value in tensors.items():
        if prefixed and key.startswith("bert."):
            name = key[len("bert.") :]
        elif key.startswith(_HEAD_PREFIXES):
            heads.append(key)
            continue
        else:
            name = key
        if name.endswith("LayerNorm.gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith("LayerNorm.beta"):
            name = name[: -len("beta")] + "bias"
        if name in _BUFFERS:
            continue
        canonical[name] = value
    return canonical, heads


def _expected_shapes(config):
    v, h, i = config["vocabulary_size"], config["hidden_size"], config["intermediate_size"]
    p = config.get("max_position_embeddings", 512)
    t = config.get("type_vocabulary_size", 2)
    shapes = {
        "embeddings.word_embeddings.weight": (v, h),
        "embeddings.position_embeddings.weight": (p, h),
        "embeddings.token_type_embeddings.weight": (t, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
        "pooler.dense.weight": (h, h),
        "pooler.dense.bias": (h,),
    }
    for n in range(config["num_layers"]):
        layer = f"encoder.layer.{n}."
        for part, out, inp in (
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ):
            shapes[f"{layer}{part}.weight"] = (out, inp)
            shapes[f"{layer}{part}.bias"] = (out,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{layer}{norm}.weight"] = (h,)
            shapes[f"{layer}{norm}.bias"] = (h,)
    return shapes


def _tokenizer_vocabulary_size(directory):
    """The number of ids the folder's tokenizer can produce, or `None` without one."""
    directory = Path(directory)
    tokenizer_json = directory / "tokenizer.json"
    if tokenizer_json.is_file():
        spec = json.loads(tokenizer_json.read_text())
        vocab = spec.get("model", {}).get("vocab", {})
        ids = list(vocab.values()) if isinstance(vocab, dict) else [len(vocab) - 1]
        ids += [t["id"] for t in spec.get("added_tokens", [])]
        return max(ids) + 1 if ids else None
    vocab_txt = directory / "vocab.txt"
    if vocab_txt.is_file():
        with open(vocab_txt, encoding="utf-8") as f:
            return sum(1 for _ in f)
    return None


def _assignments(encoder, tensors):
    """(variable, thunk) pairs; a thunk returns the checkpoint value in Keras layout.

    Hugging Face kernels are `[out, in]` and are transposed; query, key and value are
    concatenated into the fused projection. A thunk raises `KeyError` when a tensor it
    needs is absent (possible only with `strict=False`).
    """

    def kernel(*names):
        return lambda: np.concatenate(
            [np.asarray(tensors[n + ".weight"], "float32").T for n in names], axis=1
        )

    def vector(*names):
        return lambda: np.concatenate([np.asarray(tensors[n], "float32") for n in names])

    def table(name):
        return lambda: np.asarray(tensors[name], "float32")

    emb = encoder.embedding
    pairs = [
        (emb.word_embeddings.embeddings, table("embeddings.word_embeddings.weight")),
        (emb.position_embeddings.embeddings, table("embeddings.position_embeddings.weight")),
        (emb.token_type_embeddings.embeddings, table("embeddings.token_type_embeddings.weight")),
        (emb.layer_norm.gamma, vector("embeddings.LayerNorm.weight")),
        (emb.layer_norm.beta, vector("embeddings.LayerNorm.bias")),
        (encoder.pooler.kernel, kernel("pooler.dense")),
        (encoder.pooler.bias, vector("pooler.dense.bias")),
    ]
    for n, block in enumerate(encoder.blocks):
        layer = f"encoder.layer.{n}."
        qkv = [f"{layer}attention.self.{p}" for p in ("query", "key", "value")]
        pairs += [
            (block.qkv.kernel, kernel(*qkv)),
            (block.qkv.bias, vector(*(q + ".bias" for q in qkv))),
        ]
        for dense, part in (
            (block.attention_output, "attention.output.dense"),
            (block.intermediate, "intermediate.dense"),
            (block.output_dense, "output.dense"),
        ):
            pairs += [
                (dense.kernel, kernel(layer + part)),
                (dense.bias, vector(f"{layer}{part}.bias")),
            ]
        for norm, part in (
            (block.attention_norm, "attention.output.LayerNorm"),
            (block.output_norm, "output.LayerNorm"),
        ):
            pairs += [
                (norm.gamma, vector(f"{layer}{part}.weight")),
                (norm.beta, vector(f"{layer}{part}.bias")),
            ]
    return pairs


def load_bert_checkpoint(encoder_cls, directory, *, allow_pickle=False, strict=True, **kwargs):
    """Builds `encoder_cls` from a Hugging Face BERT checkpoint folder (see module doc).

    Raises:
        FileNotFoundError: `directory` is not a folder.
        CheckpointError: not a BERT checkpoint; missing, unexpected (with `strict`) or
            wrongly shaped weights, each listed; a tokenizer in the folder with more ids
            than the embedding table has rows; a pickle checkpoint without opt-in.
    """
    directory = Path(os.fspath(directory))
    if not directory.is_dir():
        raise FileNotFoundError(f"BERT checkpoint folder not found: {directory}")
    config = read_bert_config(directory)
    config.update(kwargs)
    tensors, source = _read_weights(directory, allow_pickle)
    tensors, heads = _canonical_names(tensors)
    if heads:
        logger.info("%s: left out %d task-head tensors: %s", source, len(heads), heads)

    shapes = _expected_shapes(config)
    missing = sorted(set(shapes) - set(tensors))
    unexpected = sorted(set(tensors) - set(shapes))
    wrong = [
        f"{k}: expected {list(s)}, found {list(tensors[k].shape)}"
        for k, s in shapes.items()
        if k in tensors and tuple(tensors[k].shape) != s
    ]
    if wrong:
        raise CheckpointError(
            f"{source}: tensor shapes do not match config.json: " + "; ".join(wrong)
        )
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{source}: not the weights of a BERT encoder with this config. "
            f"Missing: {missing}. Unexpected: {unexpected}. (strict=False loads anyway, "
            "leaving missing weights at their initial values.)"
        )
    if missing or unexpected:
        logger.warning(
            "%s: missing weights %s keep their initial values; unexpected %s are ignored",
            source,
            missing,
            unexpected,
        )

    tokenizer_ids = _tokenizer_vocabulary_size(directory)
    if tokenizer_ids is not None and tokenizer_ids > config["vocabulary_size"]:
        raise CheckpointError(
            f"{directory}: the tokenizer produces ids up to {tokenizer_ids - 1} but the "
            f"embedding table has vocab_size={config['vocabulary_size']} rows; expected a "
            f"tokenizer of at most {config['vocabulary_size']} tokens"
        )

    encoder = encoder_cls(**config)
    encoder.build({k: (None, None) for k in ("token_ids", "padding_mask", "segment_ids")})
    for variable, value in _assignments(encoder, tensors):
        try:
            variable.assign(value())
        except KeyError:  # reported above; only reachable with strict=False
            continue
    logger.info("%s: loaded %d tensors into %s", source, len(shapes) - len(missing), encoder.name)
    return encoder
