"""AudioExamples: framing into 0.96 s examples, masks of padded batches, short clips."""

import numpy as np
import pytest
import tensorflow as tf

from mmrep.encoders import AudioExamples
from tests.encoders.audio import reference as ref

RNG = np.random.default_rng(5)


def _noise(samples, scale=0.5):
    return (scale * RNG.uniform(-1, 1, samples)).astype("float32")


def test_three_seconds_of_1khz_sine_give_three_examples():
    sine = np.sin(2 * np.pi * 1000 * np.arange(48000) / 16000).astype("float32")
    out = AudioExamples()(sine[None])
    assert out["examples"].shape == (1, 3, 96, 64)
    np.testing.assert_array_equal(out["mask"].numpy(), [[True, True, True]])
    expected = ref.frame_examples(ref.log_mel(sine))
    assert expected.shape == (3, 96, 64)
    np.testing.assert_allclose(out["examples"].numpy()[0], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("samples", [15600, 15760, 31199, 31200, 40000])
@pytest.mark.parametrize("hop", [96, 48])
def test_examples_match_reference_framing(samples, hop):
    clip = _noise(samples)
    out = AudioExamples(example_hop=hop)(clip[None])
    expected = ref.frame_examples(ref.log_mel(clip), hop=hop)
    assert len(expected) == ref.example_counts([samples], hop=hop)[0]
    assert out["examples"].shape == (1, len(expected), 96, 64)
    np.testing.assert_allclose(out["examples"].numpy()[0], expected, rtol=0, atol=1e-5)
    assert out["mask"].numpy().all()


def test_padded_batch_with_lengths_equals_clips_alone():
    long, short = _noise(40000), _noise(20000, 0.2)
    batch = np.full((2, 40000), np.nan, "float32")  # padding holds NaN: never read
    batch[0], batch[1, :20000] = long, short
    out = AudioExamples()(batch, lengths=np.array([40000, 20000]))
    mask = out["mask"].numpy()
    np.testing.assert_array_equal(mask, [[True, True], [True, False]])
    np.testing.assert_array_equal(mask.sum(1), ref.example_counts([40000, 20000]))
    examples = out["examples"].numpy()
    alone = AudioExamples()(short[None])["examples"].numpy()[0]
    np.testing.assert_allclose(examples[1, :1], alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(examples[0], ref.frame_examples(ref.log_mel(long)), atol=1e-5)
    # The masked example is the short clip followed by silence, not the NaN padding.
    assert np.all(np.isfinite(examples))


def test_pad_short_pads_to_one_example_and_masks():
    short = _noise(5000)
    out = AudioExamples(pad_short=True)(short[None])
    assert out["examples"].shape == (1, 1, 96, 64)
    np.testing.assert_array_equal(out["mask"].numpy(), [[True]])
    padded = np.concatenate([short, np.zeros(15600 - 5000, "float32")])
    expected = ref.frame_examples(ref.log_mel(padded))
    np.testing.assert_allclose(out["examples"].numpy()[0], expected, rtol=0, atol=1e-5)


def test_pad_short_with_lengths():
    batch = np.zeros((3, 40000), "float32")
    batch[0, :300] = _noise(300)  # shorter than one frame: still one (padded) example
    batch[1, :5000] = _noise(5000)
    batch[2] = _noise(40000)
    lengths = np.array([300, 5000, 40000])
    out = AudioExamples(pad_short=True)(batch, lengths=lengths)
    np.testing.assert_array_equal(
        out["mask"].numpy().sum(1), ref.example_counts(lengths, pad_short=True)
    )
    np.testing.assert_array_equal(out["mask"].numpy(), [[1, 0], [1, 0], [1, 1]])


def test_int16_batch_and_dynamic_shapes_in_a_traced_graph():
    layer = AudioExamples(pad_short=True)
    traced = tf.function(
        lambda x, n: layer(x, lengths=n),
        input_signature=[tf.TensorSpec([None, None], tf.int16), tf.TensorSpec([None], tf.int64)],
    )
    ints = RNG.integers(-3000, 3000, (2, 20000)).astype("int16")
    out = traced(ints, np.array([20000, 10000]))
    assert out["examples"].shape == (2, 1, 96, 64)
    expected = ref.frame_examples(ref.log_mel(ints[0] / 32768.0))
    np.testing.assert_allclose(out["examples"].numpy()[0], expected, atol=1e-5)
    out = traced(ints[:, :1000], np.array([1000, 400]))  # padded up to one example
    assert out["examples"].shape == (2, 1, 96, 64)


# === Bad input ===


def test_too_short_without_padding_names_the_samples_needed():
    with pytest.raises(ValueError, match=r"at least 15600 samples.*Received samples: 15599"):
        AudioExamples()(np.zeros((1, 15599), "float32"))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"`lengths` >= 15600 samples.*\[20000, 15000\]"
    ):
        AudioExamples()(np.zeros((2, 20000), "float32"), lengths=np.array([20000, 15000]))
    traced = tf.function(AudioExamples(), input_signature=[tf.TensorSpec([None, None])])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"at least 15600 samples"):
        traced(np.zeros((1, 8000), "float32"))


def test_empty_clips_are_an_error_even_when_padding():
    with pytest.raises(ValueError, match=r"at least 1 samples.*Received samples: 0"):
        AudioExamples(pad_short=True)(np.zeros((1, 0), "float32"))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`lengths` >= 1 samples"):
        AudioExamples(pad_short=True)(np.zeros((2, 100), "float32"), lengths=np.array([100, 0]))


@pytest.mark.parametrize(
    ("lengths", "error", "match"),
    [
        (np.array([20000, 20001]), tf.errors.InvalidArgumentError, r"<= the batch's samples"),
        (np.array([20000.0, 16000.0]), ValueError, r"integer tensor \[batch\].*dtype=float"),
        (np.array([[20000, 16000]]), ValueError, r"shape=\(1, 2\)"),
        (np.array([20000, 16000, 16000]), ValueError, r"`lengths` of shape \[2\].*\(3,\)"),
    ],
)
def test_bad_lengths_are_named(lengths, error, match):
    with pytest.raises(error, match=match):
        AudioExamples()(np.zeros((2, 20000), "float32"), lengths=lengths)


def test_non_finite_audio_inside_a_clip_is_an_error():
    batch = np.zeros((2, 20000), "float32")
    batch[1, 100] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected finite"):
        AudioExamples()(batch)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected finite"):
        AudioExamples()(batch, lengths=np.array([20000, 16000]))


def test_wrong_sample_rate_is_an_error():
    with pytest.raises(ValueError, match=r"Received: sample_rate=8000"):
        AudioExamples()(np.zeros((1, 16000), "float32"), sample_rate=8000)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"example_frames": 0}, r"Received: example_frames=0"),
        ({"example_hop": -1}, r"Received: example_hop=-1"),
        ({"pad_short": "yes"}, r"Received: pad_short='yes'"),
        ({"frontend": "vggish"}, r"LogMelSpectrogram.*Received: frontend='vggish'"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AudioExamples(**kwargs)
