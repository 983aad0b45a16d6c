"""LogMelSpectrogram against a float64 numpy VGGish frontend, and its handling of bad input."""

import keras
import librosa
import numpy as np
import pytest
import tensorflow as tf

from mmrep.encoders import LogMelSpectrogram, mel_weight_matrix
from tests.encoders.audio import reference as ref

RNG = np.random.default_rng(11)
SECONDS = np.arange(48000) / 16000.0


def _sine(hertz, amplitude=1.0, samples=48000):
    return (amplitude * np.sin(2 * np.pi * hertz * SECONDS[:samples])).astype("float32")


SIGNALS = {
    "uniform_noise": RNG.uniform(-1, 1, 48000).astype("float32"),
    "quiet_noise": (1e-3 * RNG.standard_normal(20000)).astype("float32"),
    "sine_1khz_full_scale": _sine(1000.0),
    "sine_7khz": _sine(7001.0, 0.9, 24000),
    "sine_off_bin_3210hz": _sine(3210.7, 0.5, 30000),
    "two_tones_and_silence": np.concatenate(
        [_sine(440.0, 0.3, 8000) + _sine(2500.0, 0.2, 8000), np.zeros(8000, "float32")]
    ),
}


def test_mel_matrix_matches_the_reference_and_tf_signal():
    expected = ref.mel_matrix()
    np.testing.assert_allclose(mel_weight_matrix(), expected, rtol=0, atol=1e-12)
    # TensorFlow's own mel matrix follows the same recipe (HTK, linear in mel, DC out).
    tf_signal = tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125.0, 7500.0, tf.float64)
    np.testing.assert_allclose(tf_signal.numpy(), expected, rtol=0, atol=1e-12)


def test_mel_matrix_against_librosa_htk_filterbank():
    """librosa (htk=True, norm=None) puts the same bands on the same bins.

    Its triangles are linear in Hz between the same mel-spaced edges, VGGish's are linear
    in mel, so the weights differ inside a band by the mel scale's curvature (< 0.01
    here). VGGish also zeroes the DC row explicitly; with a lower edge of 125 Hz the DC
    bin lies outside every band in both, so that row is 0 in librosa's matrix too.
    """
    ours = mel_weight_matrix()
    theirs = librosa.filters.mel(
        sr=16000, n_fft=512, n_mels=64, fmin=125.0, fmax=7500.0, htk=True, norm=None
    ).T
    assert ours.shape == theirs.shape == (257, 64)
    np.testing.assert_array_equal(ours[0], 0.0)
    np.testing.assert_array_equal(theirs[0], 0.0)
    np.testing.assert_array_equal(ours > 0, theirs > 0)
    np.testing.assert_array_equal(ours.argmax(axis=0), theirs.argmax(axis=0))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=0.01)
    # Where the triangles peak the two agree to the curvature alone.
    bins = ours.argmax(axis=0)
    np.testing.assert_allclose(ours[bins, range(64)], theirs[bins, range(64)], atol=0.01)


@pytest.mark.parametrize("name", list(SIGNALS))
def test_matches_float64_reference(name):
    waveform = SIGNALS[name]
    out = LogMelSpectrogram()(waveform[None]).numpy()[0]
    expected = ref.log_mel(waveform)
    assert out.shape == expected.shape == (1 + (len(waveform) - 400) // 160, 64)
    # The issue asks for 1e-4; the float64 STFT gives about 1e-6.
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_float32_stft_is_close_on_noise_and_looser_on_loud_tones():
    layer = LogMelSpectrogram(stft_dtype="float32")
    noise = SIGNALS["uniform_noise"]
    np.testing.assert_allclose(layer(noise[None]).numpy()[0], ref.log_mel(noise), atol=1e-4)
    tone = SIGNALS["sine_7khz"]
    error = np.abs(layer(tone[None]).numpy()[0] - ref.log_mel(tone)).max()
    assert 1e-5 < error < 2e-3  # the documented float32 FFT noise in quiet bands


def test_yamnet_parameters_and_batch_of_clips():
    batch = np.stack([SIGNALS["uniform_noise"][:16000], SIGNALS["two_tones_and_silence"]])
    out = LogMelSpectrogram(log_offset=0.001)(batch).numpy()
    for clip, got in zip(batch, out, strict=True):
        np.testing.assert_allclose(got, ref.log_mel(clip, log_offset=0.001), atol=1e-5)


@pytest.mark.parametrize("samples", [400, 401, 559, 560, 16000, 48000])
def test_frame_count_has_no_padding(samples):
    out = LogMelSpectrogram()(np.zeros((1, samples), "float32"))
    assert out.shape == (1, 1 + (samples - 400) // 160, 64)
    np.testing.assert_allclose(out.numpy(), np.log(0.01), rtol=1e-6)


def test_int16_is_scaled_by_1_over_32768():
    ints = RNG.integers(-32768, 32768, (2, 4000)).astype("int16")
    layer = LogMelSpectrogram()
    np.testing.assert_allclose(
        layer(ints).numpy(), layer(ints.astype("float32") / 32768.0).numpy(), atol=0, rtol=0
    )
    np.testing.assert_allclose(layer(ints).numpy()[0], ref.log_mel(ints[0] / 32768.0), atol=1e-5)


def test_float64_and_float16_waveforms_are_converted():
    clip = SIGNALS["quiet_noise"][:4000]
    expected = LogMelSpectrogram()(clip[None]).numpy()
    np.testing.assert_array_equal(
        LogMelSpectrogram()(clip[None].astype("float64")).numpy(), expected
    )
    half = clip[None].astype("float16")
    np.testing.assert_array_equal(
        LogMelSpectrogram()(half).numpy(),
        LogMelSpectrogram()(half.astype("float32")).numpy(),
    )


def test_mixed_precision_computes_in_float32():
    clip = SIGNALS["sine_off_bin_3210hz"][None, :8000]
    exact = LogMelSpectrogram()(clip).numpy()
    out = LogMelSpectrogram(dtype="mixed_float16")(clip)
    assert out.dtype == "float16"
    # Only the output is rounded: float16 keeps 11 bits of |log-mel| <= 8.
    np.testing.assert_allclose(out.numpy().astype("float64"), exact, rtol=0, atol=8 * 2**-11)


def test_gradient_is_finite_on_silence():
    waveform = tf.constant(np.zeros((1, 2000), "float32"))
    with tf.GradientTape() as tape:
        tape.watch(waveform)
        loss = tf.reduce_sum(LogMelSpectrogram()(waveform))
    assert np.all(np.isfinite(tape.gradient(loss, waveform).numpy()))


def test_jit_compiled_matches_eager():
    layer = LogMelSpectrogram()
    clip = SIGNALS["two_tones_and_silence"][None]
    compiled = tf.function(layer, jit_compile=True)
    np.testing.assert_allclose(compiled(clip).numpy(), layer(clip).numpy(), atol=1e-5)


# === Bad input ===


@pytest.mark.parametrize(
    ("waveform", "error", "match"),
    [
        (np.zeros((1, 0), "float32"), ValueError, r"at least 400 samples.*Received samples: 0"),
        (np.zeros((2, 399), "float32"), ValueError, r"at least 400 samples.*: 399"),
        (np.zeros((400,), "float32"), ValueError, r"\[batch, samples\].*shape=\(400,\)"),
        (np.zeros((1, 400), "int32"), TypeError, r"int16 PCM.*Received: dtype=int32"),
        (np.zeros((1, 400), "uint8"), TypeError, r"dtype=uint8"),
        (np.zeros((1, 400), bool), TypeError, r"dtype=bool"),
    ],
)
def test_bad_waveforms_are_named(waveform, error, match):
    with pytest.raises(error, match=match):
        LogMelSpectrogram()(waveform)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_an_error(bad):
    waveform = np.zeros((2, 1000), "float32")
    waveform[1, 500] = bad
    waveform[0, 3] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected finite.*count: 2"):
        LogMelSpectrogram()(waveform)


def test_checks_run_in_a_traced_graph_with_unknown_length():
    layer = LogMelSpectrogram()
    traced = tf.function(layer, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    assert traced(np.zeros((1, 560), "float32")).shape == (1, 2, 64)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"at least 400 samples.*\[399\]"):
        traced(np.zeros((1, 399), "float32"))
    nan = np.zeros((1, 800), "float32")
    nan[0, 10] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected finite"):
        traced(nan)


def test_checks_survive_saved_model_export(tmp_path):
    inputs = keras.Input((None,), name="waveform")
    model = keras.Model(inputs, LogMelSpectrogram()(inputs))
    model.export(str(tmp_path), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path))
    clip = SIGNALS["quiet_noise"][None, :1000]
    np.testing.assert_allclose(reloaded.serve(clip).numpy()[0], ref.log_mel(clip[0]), atol=1e-5)
    clip = clip.copy()
    clip[0, 7] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected finite"):
        reloaded.serve(clip)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 400 samples"):
        reloaded.serve(np.zeros((1, 100), "float32"))


def test_declared_sample_rate_must_match():
    layer = LogMelSpectrogram()
    clip = np.zeros((1, 800), "float32")
    assert layer(clip, sample_rate=16000).shape == (1, 3, 64)
    with pytest.raises(ValueError, match=r"sample_rate=16000 Hz.*Received: sample_rate=44100"):
        layer(clip, sample_rate=44100)
    with pytest.raises(ValueError, match=r"Received: sample_rate='16k'"):
        layer(clip, sample_rate="16k")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_rate": 0}, r"`sample_rate` to be an int >= 1. Received: sample_rate=0"),
        ({"window_length": 2.5}, r"Received: window_length=2.5"),
        ({"fft_length": 256}, r"`fft_length` >= `window_length` \(400\). Received: fft_length=256"),
        ({"upper_edge_hertz": 9000.0}, r"upper_edge_hertz=9000.0"),
        ({"lower_edge_hertz": 7500.0}, r"lower_edge_hertz=7500.0"),
        ({"log_offset": 0.0}, r"`log_offset` > 0. Received: log_offset=0.0"),
        ({"stft_dtype": "float16"}, r"Received: stft_dtype='float16'"),
        (
            {"num_mel_bins": 1, "lower_edge_hertz": 100.0, "upper_edge_hertz": 110.0},
            r"cover at least one FFT bin. Received: num_mel_bins=1",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LogMelSpectrogram(**kwargs)
