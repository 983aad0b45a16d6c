"""Transfer with BertEncoder: freezing all or the lower layers, fine-tuning in mixed precision."""

import os

import keras
import numpy as np
import pytest

from mmrep.encoders import BertEncoder
from tests.encoders.text.bert_checkpoints import TINY, make_bert, padded_batch, save

LENGTHS = [10, 4, 7, 12, 3, 9, 12, 6]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save(make_bert(seed=2), tmp_path_factory.mktemp("bert"))


def toy_task(seed=0):
    """Does the sentence contain token 7? A task a BERT can learn in a few steps."""
    batch = padded_batch(LENGTHS * 4, 12, TINY["vocab_size"], seed=seed)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, len(LENGTHS) * 4)
    for row, (label, length) in enumerate(zip(labels, LENGTHS * 4, strict=True)):
        if label and length > 1:
            batch["token_ids"][row, rng.integers(1, length)] = 7
    labels = (batch["token_ids"] == 7).any(1).astype("float32")
    return batch, labels


def classifier(encoder):
    inputs = {
        k: keras.Input((None,), dtype="int32", name=k)
        for k in ("token_ids", "padding_mask", "segment_ids")
    }
    logits = keras.layers.Dense(1, dtype="float32")(encoder(inputs))
    return keras.Model(inputs, logits)


def weights_by_path(layer):
    return {v.path: v.numpy().copy() for v in layer.weights}


def test_frozen_lower_layers_do_not_move_and_the_rest_do(checkpoint, tmp_path):
    encoder = BertEncoder.from_pretrained(checkpoint, pooling="cls", frozen_layers=1)
    trainable = {v.path for v in encoder.trainable_weights}
    assert not any("embedding" in p or "transformer_layer_0" in p for p in trainable)
    assert any("transformer_layer_1" in p for p in trainable)
    model = classifier(encoder)
    before = weights_by_path(encoder)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.BinaryCrossentropy(from_logits=True))
    batch, labels = toy_task()
    model.fit(batch, labels, epochs=2, batch_size=16, verbose=0)
    after = weights_by_path(encoder)
    for path, value in before.items():
        moved = not np.array_equal(value, after[path])
        frozen = "embedding" in path or "transformer_layer_0" in path or "pooler" in path
        assert moved != frozen, f"{path}: moved={moved}, frozen={frozen}"

    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    encoder_again = next(layer for layer in reloaded.layers if isinstance(layer, BertEncoder))
    assert encoder_again.frozen_layers == 1
    assert {v.path for v in encoder_again.trainable_weights} == {
        v.path for v in encoder.trainable_weights
    }


def test_whole_encoder_frozen_and_unfrozen_again(checkpoint):
    encoder = BertEncoder.from_pretrained(checkpoint)
    encoder.trainable = False
    assert encoder.trainable_weights == []
    encoder.trainable = True
    encoder.freeze_lower_layers(2)
    assert {v.path.split("/")[1] for v in encoder.trainable_weights} == {"pooler"}
    encoder.freeze_lower_layers(0)
    assert len(encoder.trainable_weights) == len(encoder.weights)
    with pytest.raises(ValueError, match=r"int in \[0, 2\].*Received: 3"):
        encoder.freeze_lower_layers(3)


@pytest.mark.slow  # convergence
def test_mixed_float16_fine_tuning_learns_and_stays_close_to_float32(checkpoint):
    batch, labels = toy_task()
    full = BertEncoder.from_pretrained(checkpoint)(batch)
    keras.config.set_dtype_policy("mixed_float16")
    encoder = BertEncoder.from_pretrained(checkpoint)
    half = encoder(batch)
    assert half["sequence_output"].dtype == "float16"
    assert all(v.dtype == "float32" for v in encoder.weights)
    mask = batch["padding_mask"].astype(bool)
    np.testing.assert_allclose(
        np.asarray(half["sequence_output"], "float32")[mask],
        np.asarray(full["sequence_output"])[mask],
        atol=0.05,
    )

    model = classifier(BertEncoder.from_pretrained(checkpoint, pooling="cls"))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(batch, labels, epochs=15, batch_size=32, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.5 * history[0], history
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
