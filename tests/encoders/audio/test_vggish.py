"""VGGish against an independent PyTorch network with the same weights; outputs and errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.encoders import AudioExamples, LogMelSpectrogram, VGGish
from tests.encoders.audio import reference as ref

RNG = np.random.default_rng(9)
TINY = {"conv_filters": (4, 8, 8, 8), "fc_units": (16,), "embedding_dim": 6}


@pytest.fixture(scope="module")
def published_vggish(published_weights):
    return ref.assign_tf1_weights(VGGish(), published_weights)


@pytest.fixture(scope="module")
def torch_vggish(published_weights):
    return ref.TorchVGGish(published_weights)


def test_published_size():
    layer = VGGish()
    layer.build()
    shapes = {w.path.split("/", 1)[1]: tuple(w.shape) for w in layer.weights}
    assert shapes["conv1/kernel"] == (3, 3, 1, 64)
    assert shapes["fc1_1/kernel"] == (12288, 4096)
    assert shapes["fc2/kernel"] == (4096, 128)
    assert layer.count_params() == sum(int(np.prod(s)) for s in ref.tf1_shapes().values())


def test_matches_torch_reference_on_examples(published_vggish, torch_vggish):
    examples = RNG.normal(-1.0, 2.0, (2, 3, 96, 64)).astype("float32")
    out = published_vggish(examples)
    expected = ref.torch_embeddings(torch_vggish, examples.reshape(6, 96, 64))
    got = out["sequence_output"].numpy().reshape(6, 128)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got / scale, expected / scale, rtol=0, atol=1e-4)
    assert out["mask"].numpy().all()


def test_waveform_through_reference_frontend_and_torch(published_vggish, torch_vggish):
    clip = np.sin(2 * np.pi * 1000 * np.arange(48000) / 16000).astype("float32")
    clip += 0.1 * RNG.standard_normal(48000).astype("float32")
    out = published_vggish(clip[None])
    assert out["sequence_output"].shape == (1, 3, 128)
    expected = ref.torch_embeddings(torch_vggish, ref.frame_examples(ref.log_mel(clip)))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        out["sequence_output"].numpy()[0] / scale, expected / scale, atol=1e-4
    )


def test_waveform_and_examples_inputs_agree():
    layer = VGGish(**TINY)
    batch = (0.3 * RNG.standard_normal((2, 40000))).astype("float32")
    lengths = np.array([40000, 17000])
    from_waveform = layer(batch, lengths=lengths)
    framed = AudioExamples()(batch, lengths=lengths)
    from_examples = layer(framed["examples"], example_mask=framed["mask"])
    np.testing.assert_array_equal(from_waveform["mask"].numpy(), [[1, 1], [1, 0]])
    np.testing.assert_allclose(
        from_waveform["sequence_output"].numpy(),
        from_examples["sequence_output"].numpy(),
        atol=1e-6,
    )
    # A masked position is zeros, not the embedding of padding.
    np.testing.assert_array_equal(from_waveform["sequence_output"].numpy()[1, 1], 0.0)


def _pool_reference(sequence, mask, pooling, score_kernel=None):
    sequence, out = sequence.astype("float64"), []
    for seq, valid in zip(sequence, mask.astype(bool), strict=True):
        rows = seq[valid]
        if not len(rows):
            out.append(np.zeros(seq.shape[-1]))
        elif pooling == "mean":
            out.append(rows.mean(0))
        elif pooling == "max":
            out.append(rows.max(0))
        else:
            scores = rows @ score_kernel.astype("float64")[:, 0]
            alpha = np.exp(scores - scores.max())
            out.append((alpha / alpha.sum()) @ rows)
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_pooling_over_valid_examples(pooling):
    examples = RNG.normal(0.0, 2.0, (3, 4, 96, 64)).astype("float32")
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], "float32")
    sequence_layer = VGGish(**TINY)
    sequence = sequence_layer(examples)["sequence_output"].numpy()
    pooled_layer = VGGish(pooling=pooling, **TINY)
    pooled_layer(examples[:1])
    pooled_layer.set_weights(
        sequence_layer.get_weights() + pooled_layer.get_weights()[len(sequence_layer.weights) :]
    )
    kernel = pooled_layer.get_weights()[-1] if pooling == "attention" else None
    out = pooled_layer(examples, example_mask=mask).numpy()
    expected = _pool_reference(sequence, mask, pooling, kernel)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[2], 0.0)  # no valid example: zeros


def test_pad_short_and_yamnet_style_frontend_round_trip_config():
    frontend = LogMelSpectrogram(log_offset=0.001)
    layer = VGGish(pooling="mean", pad_short=True, example_hop=48, frontend=frontend, **TINY)
    clip = (0.2 * RNG.standard_normal((2, 9000))).astype("float32")
    out = layer(clip)
    revived = VGGish.from_config(layer.get_config())
    assert revived.examples.frontend.log_offset == 0.001
    assert revived.examples.example_hop == 48 and revived.pad_short
    revived(clip)
    revived.set_weights(layer.get_weights())
    np.testing.assert_allclose(revived(clip).numpy(), out.numpy(), atol=1e-6)


def test_trains_end_to_end_from_waveforms():
    waveform = keras.Input((None,), name="waveform")
    lengths = keras.Input((), dtype="int32", name="lengths")
    pooled = VGGish(pooling="attention", **TINY)(waveform, lengths=lengths)
    model = keras.Model([waveform, lengths], keras.layers.Dense(1)(pooled))
    model.compile("adam", "mse")
    x = (0.3 * RNG.standard_normal((4, 20000))).astype("float32")
    n = np.array([20000, 16000, 19000, 15600], "int32")
    before = model.get_weights()
    history = model.fit([x, n], np.ones((4, 1)), epochs=2, batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_exported_waveform_model_takes_any_length(tmp_path):
    layer = VGGish(**TINY)
    waveform = keras.Input((None,), name="waveform")
    model = keras.Model(waveform, layer(waveform))
    model.export(str(tmp_path), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path))
    for samples in (15600, 40000):
        clip = (0.2 * RNG.standard_normal((1, samples))).astype("float32")
        served = reloaded.serve(clip)
        np.testing.assert_allclose(
            served["sequence_output"].numpy(), layer(clip)["sequence_output"].numpy(), atol=1e-6
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 15600 samples"):
        reloaded.serve(np.zeros((1, 15000), "float32"))


# === Bad input ===


@pytest.mark.parametrize(
    ("inputs", "kwargs", "error", "match"),
    [
        (np.zeros((2, 3, 96)), {}, ValueError, r"waveform \[batch, samples\] or examples"),
        (np.zeros((2, 1, 96, 32), "float32"), {}, ValueError, r"96, 64\].*\(2, 1, 96, 32\)"),
        (np.zeros((2, 1, 96, 64), "int32"), {}, TypeError, r"floating log-mel.*int32"),
        (
            np.zeros((2, 1, 96, 64), "float32"),
            {"lengths": np.array([1, 1])},
            ValueError,
            r"`lengths` and `sample_rate` describe waveform input",
        ),
        (
            np.zeros((2, 16000), "float32"),
            {"example_mask": np.ones((2, 1))},
            ValueError,
            r"`example_mask` goes with examples input",
        ),
        (
            np.zeros((2, 16000), "float32"),
            {"sample_rate": 22050},
            ValueError,
            r"Received: sample_rate=22050",
        ),
        (np.zeros((2, 15000), "float32"), {}, ValueError, r"at least 15600 samples.*15000"),
    ],
)
def test_bad_input_is_named(inputs, kwargs, error, match):
    with pytest.raises(error, match=match):
        VGGish(**TINY)(inputs, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pooling": "sum"}, r"Received: pooling='sum'"),
        ({"conv_filters": (64, 128, 256)}, r"4 ints, one per stage.*\(64, 128, 256\)"),
        ({"conv_filters": (64, 128, 0, 512)}, r"positive ints. Received: conv_filters"),
        ({"fc_units": 4096}, r"Received: fc_units=4096"),
        ({"embedding_dim": 0}, r"Received: embedding_dim=0"),
        ({"example_hop": 0}, r"Received: example_hop=0"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VGGish(**kwargs)
