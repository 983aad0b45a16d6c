"""Loading BERT checkpoints: every kind of bad folder gets an error naming what is wrong."""

import json
import logging

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as numpy_load_file
from safetensors.torch import load_file, save_file

from mmrep.encoders import BertEncoder, CheckpointError
from mmrep.encoders.text.safetensors_io import read_safetensors, read_sharded_safetensors
from tests.encoders.text.bert_checkpoints import TINY, make_bert, padded_batch, save


@pytest.fixture(scope="module")
def model():
    return make_bert(seed=1)


def rewrite(directory, edit):
    path = directory / "model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path, metadata={"format": "pt"})


def edit_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_missing_folder_and_missing_files(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="nope"):
        BertEncoder.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        BertEncoder.from_pretrained(tmp_path)
    save(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"expected model.safetensors.*Found: \['config.json"):
        BertEncoder.from_pretrained(tmp_path)


def test_another_architecture_is_named(tmp_path, model):
    save(model, tmp_path)
    edit_config(tmp_path, model_type="roberta", architectures=["RobertaModel"])
    with pytest.raises(CheckpointError, match=r"model_type='roberta'.*RobertaModel"):
        BertEncoder.from_pretrained(tmp_path)


def test_bert_config_with_other_weights_lists_missing_and_unexpected(tmp_path, model):
    save(model, tmp_path)

    def rename(state):
        state["encoder.layer.1.attention.self.q.weight"] = state.pop(
            "encoder.layer.1.attention.self.query.weight"
        )

    rewrite(tmp_path, rename)
    with pytest.raises(CheckpointError) as error:
        BertEncoder.from_pretrained(tmp_path)
    message = str(error.value)
    assert "Missing: ['encoder.layer.1.attention.self.query.weight']" in message
    assert "Unexpected: ['encoder.layer.1.attention.self.q.weight']" in message


def test_non_strict_loads_the_rest_and_logs(tmp_path, model, caplog):
    save(model, tmp_path)
    rewrite(tmp_path, lambda state: state.pop("pooler.dense.weight"))
    with caplog.at_level(logging.WARNING, logger="mmrep"):
        encoder = BertEncoder.from_pretrained(tmp_path, strict=False)
    assert "pooler.dense.weight" in caplog.text
    expected = model.embeddings.word_embeddings.weight.detach().numpy()
    np.testing.assert_array_equal(encoder.embedding.word_embeddings.embeddings.numpy(), expected)


def test_shape_that_contradicts_the_config(tmp_path, model):
    save(model, tmp_path)
    edit_config(tmp_path, intermediate_size=40)
    with pytest.raises(
        CheckpointError,
        match=r"encoder.layer.0.intermediate.dense.weight: expected \[40, 32\], found \[37, 32\]",
    ):
        BertEncoder.from_pretrained(tmp_path)


def test_pickle_is_refused_without_opt_in(tmp_path, model):
    save(model, tmp_path, "pickle")
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        BertEncoder.from_pretrained(tmp_path)


def test_tokenizer_larger_than_the_embedding_table(tmp_path, model):
    save(model, tmp_path)
    (tmp_path / "vocab.txt").write_text(
        "\n".join(f"tok{i}" for i in range(TINY["vocab_size"] + 3)) + "\n"
    )
    with pytest.raises(CheckpointError, match=r"ids up to 99 .* vocab_size=97"):
        BertEncoder.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(90)) + "\n")
    assert BertEncoder.from_pretrained(tmp_path).vocabulary_size == 97


def test_sequence_longer_than_the_position_table(tmp_path, model):
    save(model, tmp_path)
    encoder = BertEncoder.from_pretrained(tmp_path)
    batch = padded_batch([30], 30, TINY["vocab_size"])
    with pytest.raises(
        ValueError, match=r"max_position_embeddings=24 tokens\. Received: length 30"
    ):
        encoder(batch)


def test_graph_checks_for_dynamic_length_and_id_range(tmp_path, model):
    import tensorflow as tf

    save(model, tmp_path)
    encoder = BertEncoder.from_pretrained(tmp_path)
    spec = tf.TensorSpec((None, None), tf.int32)
    serve = tf.function(
        lambda ids, mask: encoder({"token_ids": ids, "padding_mask": mask})["pooled_output"],
        input_signature=[spec, spec],
    )
    batch = padded_batch([30], 30, TINY["vocab_size"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_position_embeddings=24"):
        serve(batch["token_ids"], batch["padding_mask"])
    batch = padded_batch([5], 5, TINY["vocab_size"])
    batch["token_ids"][0, 2] = TINY["vocab_size"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="vocabulary_size=97"):
        serve(batch["token_ids"], batch["padding_mask"])


def test_bad_input_keys(tmp_path, model):
    save(model, tmp_path)
    encoder = BertEncoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"Missing: \['padding_mask'\]; unknown: \['ids'\]"):
        encoder({"token_ids": np.ones((1, 3), "int32"), "ids": np.ones((1, 3), "int32")})


def test_truncated_safetensors_file(tmp_path, model):
    save(model, tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        BertEncoder.from_pretrained(tmp_path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        BertEncoder.from_pretrained(tmp_path)


def test_sharded_index_naming_a_missing_shard(tmp_path, model):
    save(model, tmp_path, "sharded")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / shard).unlink()
    with pytest.raises(CheckpointError, match=f"the shard {shard} it names is missing"):
        read_sharded_safetensors(tmp_path / "model.safetensors.index.json")


def test_reader_against_the_safetensors_library(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f32": torch.tensor(rng.standard_normal((3, 4)), dtype=torch.float32),
        "f16": torch.tensor(rng.standard_normal(5), dtype=torch.float16),
        "i64": torch.arange(6).reshape(2, 3),
        "empty": torch.zeros(0, 4),
        "bf16": torch.tensor(rng.standard_normal((2, 2)), dtype=torch.bfloat16),
    }
    save_file(tensors, tmp_path / "x.safetensors")
    ours = read_safetensors(tmp_path / "x.safetensors")
    del tensors["bf16"]
    save_file(tensors, tmp_path / "y.safetensors")
    for name, expected in numpy_load_file(tmp_path / "y.safetensors").items():
        assert ours[name].dtype == expected.dtype and ours[name].shape == expected.shape
        np.testing.assert_array_equal(ours[name], expected)
    # numpy has no bfloat16: torch's float conversion is the reference.
    bf16 = torch.tensor(rng.standard_normal((2, 2)), dtype=torch.bfloat16)
    save_file({"bf16": bf16}, tmp_path / "z.safetensors")
    np.testing.assert_array_equal(
        read_safetensors(tmp_path / "z.safetensors")["bf16"].astype("float32"),
        bf16.float().numpy(),
    )
