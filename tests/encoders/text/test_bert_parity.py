"""BertEncoder against Hugging Face `transformers`' PyTorch BertModel on the same checkpoint."""

import numpy as np
import pytest

from mmrep.encoders import BertEncoder
from tests.encoders.text.bert_checkpoints import (
    TINY,
    make_bert,
    padded_batch,
    reference_outputs,
    save,
)

LENGTHS = [24, 9, 1, 17]
BATCH = padded_batch(LENGTHS, 24, TINY["vocab_size"], pair_split=[12, 5, 1, 8])


@pytest.fixture(scope="module")
def reference_model():
    return make_bert(seed=3)


@pytest.fixture(scope="module")
def reference(reference_model):
    return reference_outputs(reference_model, **BATCH)


def assert_matches(outputs, reference, batch=BATCH):
    sequence, pooled = reference
    mask = batch["padding_mask"].astype(bool)
    got = np.asarray(outputs["sequence_output"], "float64")
    assert got.shape == sequence.shape
    # Only real tokens: what BERT computes at padding positions carries no meaning.
    np.testing.assert_allclose(got[mask], sequence[mask], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(outputs["pooled_output"]), pooled, atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", ["bare", "prefixed", "gamma_beta", "sharded"])
def test_matches_transformers_in_every_key_layout(tmp_path, reference_model, reference, layout):
    save(reference_model, tmp_path, layout)
    encoder = BertEncoder.from_pretrained(tmp_path)
    assert_matches(encoder(BATCH), reference)


def test_pickle_checkpoint_with_opt_in(tmp_path, reference_model, reference):
    save(reference_model, tmp_path, "pickle")
    encoder = BertEncoder.from_pretrained(tmp_path, allow_pickle=True)
    assert_matches(encoder(BATCH), reference)


@pytest.mark.parametrize("act", ["gelu_new", "relu"])
def test_other_activations_and_epsilon_follow_the_config(tmp_path, act):
    model = make_bert(seed=5, hidden_act=act, layer_norm_eps=1e-5)
    save(model, tmp_path)
    encoder = BertEncoder.from_pretrained(tmp_path)
    assert encoder.activation == act and encoder.layer_norm_epsilon == 1e-5
    assert_matches(encoder(BATCH), reference_outputs(model, **BATCH))


def test_segment_ids_default_to_zeros(tmp_path, reference_model):
    save(reference_model, tmp_path)
    encoder = BertEncoder.from_pretrained(tmp_path)
    batch = {k: v for k, v in BATCH.items() if k != "segment_ids"}
    expected = reference_outputs(
        reference_model,
        batch["token_ids"],
        batch["padding_mask"],
        np.zeros_like(BATCH["token_ids"]),
    )
    assert_matches(encoder(batch), expected)


def test_shorter_sequences_and_a_jit_compiled_call(tmp_path, reference_model):
    save(reference_model, tmp_path)
    encoder = BertEncoder.from_pretrained(tmp_path)
    batch = padded_batch([7, 3], 7, TINY["vocab_size"], seed=4)
    import tensorflow as tf

    compiled = tf.function(encoder, jit_compile=True)
    assert_matches(compiled(batch), reference_outputs(reference_model, **batch), batch)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("pooling", ["cls", "pooled", "mean"])
def test_sentence_pooling_against_float64_formula(
    tmp_path, reference_model, reference, pooling, normalize
):
    save(reference_model, tmp_path)
    encoder = BertEncoder.from_pretrained(tmp_path, pooling=pooling, normalize=normalize)
    sequence, pooled = reference
    mask = BATCH["padding_mask"].astype("float64")[..., None]
    expected = {
        "cls": sequence[:, 0],
        "pooled": pooled,
        "mean": (sequence * mask).sum(1) / mask.sum(1),
    }[pooling]
    if normalize:
        expected = expected / np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(encoder(BATCH)), expected, atol=1e-4, rtol=0)
