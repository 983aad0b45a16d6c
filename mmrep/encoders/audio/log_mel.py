"""The VGGish log-mel frontend, in the graph: waveform to log-mel frames and to examples."""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mmrep.encoders.audio import waveform_checks as checks
from mmrep.utils.arguments import check_int

_STFT_DTYPES = ("float64", "float32")


def mel_weight_matrix(
    num_mel_bins=64,
    num_spectrogram_bins=257,
    sample_rate=16000,
    lower_edge_hertz=125.0,
    upper_edge_hertz=7500.0,
):
    """VGGish's mel filterbank: HTK mel scale, triangles linear in mel, DC row zeroed.

    Band edges are `num_mel_bins + 2` points evenly spaced in mel between the two edge
    frequencies; the weight of FFT bin `k` (centre frequency `k * sr / (2 (K - 1))`) in
    band `i` is the triangle through edges `i, i+1, i+2`, measured in mel. There is no
    area normalisation.

    Returns:
        float64 array `[num_spectrogram_bins, num_mel_bins]`.
    """
    nyquist = sample_rate / 2.0

    def to_mel(hertz):
        return 1127.0 * np.log1p(np.asarray(hertz, np.float64) / 700.0)

    bins_mel = to_mel(np.linspace(0.0, nyquist, num_spectrogram_bins))
    edges = np.linspace(to_mel(lower_edge_hertz), to_mel(upper_edge_hertz), num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # VGGish leaves the DC bin out of every band
    return weights


def count_windows(length, size, hop):
    """Whole windows of `size` every `hop` in `length` (an int or an integer tensor).

    `1 + (length - size) // hop`, or 0 when `length < size`: the frame count of the
    frontend and the example count of the framing both follow this rule.
    """
    if isinstance(length, int):
        return 0 if length < size else 1 + (length - size) // hop
    windows = 1 + (length - size) // hop
    return ops.where(length >= size, windows, ops.zeros_like(windows))


@keras.saving.register_keras_serializable(package="mmrep")
class LogMelSpectrogram(keras.layers.Layer):
    """Log-mel spectrogram of a waveform, exactly as VGGish computes it, inside the graph.

    Frames of `window_length` samples every `hop_length` samples (no padding, so
    `1 + (S - window_length) // hop_length` frames), a periodic Hann window
    `0.5 - 0.5 cos(2 pi n / N)`, the magnitude (not power) of an `fft_length`-point real
    FFT, a mel filterbank on the HTK scale `1127 ln(1 + f / 700)` with triangles linear in
    mel and the DC bin left out, and `log(mel + log_offset)`. The defaults are VGGish's;
    YAMNet's frontend differs only in `log_offset=0.001`.

    The layer always computes in float32, whatever the dtype policy, and the short-time
    Fourier transform in `stft_dtype`: float64 by default, because a float32 FFT of a
    loud pure tone leaves rounding noise of about 1e-7 of the peak in every bin, which
    `log(mel + 0.01)` turns into errors up to ~6e-4 in the quiet bands (VGGish's own
    numpy frontend is float64). `stft_dtype="float32"` is ~1.5x faster on CPU and
    suits hardware without float64. Only the output is cast to the compute dtype.

    Waveforms are float in [-1, 1] (float16/bfloat16/float64 are converted to float32),
    or int16 PCM, scaled by 1/32768 as `mmrep.preprocessing.load_audio` does; other
    integer dtypes are refused. NaN or infinite samples, float samples beyond
    `waveform_checks.MAX_ABS_SAMPLE` (2) in magnitude (int16 units held as floats), and
    clips shorter than one window, are errors, checked in the graph, so also in an
    exported SavedModel (the sample check, one reduction, costs about 5% of the
    frontend's time). XLA compiles such assertions away: under `jit_compile=True`
    (Keras's default for `fit` on a GPU) they do not run.

    Args:
        sample_rate: int. Sample rate the layer expects, in Hz. Defaults to `16000`.
        window_length: int. Samples per frame (25 ms at 16 kHz). Defaults to `400`.
        hop_length: int. Samples between frame starts (10 ms). Defaults to `160`.
        fft_length: int or `None`. FFT size; `None` takes the next power of two
            `>= window_length` (512). Defaults to `None`.
        num_mel_bins: int. Mel bands. Defaults to `64`.
        lower_edge_hertz: float. Lower edge of the lowest band. Defaults to `125.0`.
        upper_edge_hertz: float. Upper edge of the highest band. Defaults to `7500.0`.
        log_offset: float. Added before the log. Defaults to `0.01`.
        stft_dtype: `"float64"` or `"float32"`. Precision of the framing, window and FFT.
            Defaults to `"float64"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: `[B, S]` waveform, floating or int16.
        sample_rate: optional int. The rate the caller's audio has; a value other than
            the layer's `sample_rate` is an error (resample with
            `mmrep.preprocessing.resample` first).

    Returns:
        `[B, 1 + (S - window_length) // hop_length, num_mel_bins]` in the compute dtype.

    Example:

    >>> frontend = LogMelSpectrogram()
    >>> tuple(frontend(np.zeros((2, 16000), "float32")).shape)
    (2, 98, 64)

    Reference:
        Hershey et al., "CNN Architectures for Large-Scale Audio Classification",
        ICASSP 2017 (the VGGish frontend).
    """

    def __init__(
        self,
        sample_rate=16000,
        window_length=400,
        hop_length=160,
        fft_length=None,
        num_mel_bins=64,
        lower_edge_hertz=125.0,
        upper_edge_hertz=7500.0,
        log_offset=0.01,
        stft_dtype="float64",
        **kwargs,
    ):
        super().__init__(**kwargs)
        sample_rate = check_int("sample_rate", sample_rate, minimum=1)
        window_length = check_int("window_length", window_length, minimum=1)
        hop_length = check_int("hop_length", hop_length, minimum=1)
        num_mel_bins = check_int("num_mel_bins", num_mel_bins, minimum=1)
        if fft_length is None:
            resolved_fft = 2 ** math.ceil(math.log2(window_length))
        else:
            fft_length = check_int("fft_length", fft_length, minimum=1)
            if fft_length < window_length:
                raise ValueError(
                    "Expected `fft_length` >= `window_length` "
                    f"({window_length}). Received: fft_length={fft_length}"
                )
            resolved_fft = fft_length
        for name, value in (
            ("lower_edge_hertz", lower_edge_hertz),
            ("upper_edge_hertz", upper_edge_hertz),
        ):
            checks.check_number(name, value)
        if not 0.0 <= lower_edge_hertz < upper_edge_hertz <= sample_rate / 2:
            raise ValueError(
                "Expected 0 <= `lower_edge_hertz` < `upper_edge_hertz` <= sample_rate / 2 "
                f"({sample_rate / 2}). Received: lower_edge_hertz={lower_edge_hertz}, "
                f"upper_edge_hertz={upper_edge_hertz}"
            )
        checks.check_number("log_offset", log_offset)
        if not log_offset > 0:
            raise ValueError(f"Expected `log_offset` > 0. Received: log_offset={log_offset}")
        if stft_dtype not in _STFT_DTYPES:
            raise ValueError(
                f"Expected `stft_dtype` to be one of {_STFT_DTYPES}. "
                f"Received: stft_dtype={stft_dtype!r}"
            )
        self.sample_rate = sample_rate
        self.window_length = window_length
        self.hop_length = hop_length
        self.fft_length = fft_length
        self.num_mel_bins = num_mel_bins
        self.lower_edge_hertz = float(lower_edge_hertz)
        self.upper_edge_hertz = float(upper_edge_hertz)
        self.log_offset = float(log_offset)
        self.stft_dtype = stft_dtype
        self._fft_length = resolved_fft
        # Like LayerNormalization: the waveform must not be cast to float16 on the way in.
        self.autocast = False

        weights = mel_weight_matrix(
            self.num_mel_bins,
            resolved_fft // 2 + 1,
            self.sample_rate,
            self.lower_edge_hertz,
            self.upper_edge_hertz,
        )
        used = np.flatnonzero(weights.any(axis=1))
        if used.size == 0:
            raise ValueError(
                "Expected the mel bands to cover at least one FFT bin. Received: "
                f"num_mel_bins={num_mel_bins}, fft_length={resolved_fft}, "
                f"lower_edge_hertz={lower_edge_hertz}, upper_edge_hertz={upper_edge_hertz}"
            )
        # Only the FFT bins some band uses are kept (5..239 of 257 for VGGish): the
        # magnitude and the matmul skip the rest.
        self._bins = (int(used[0]), int(used[-1]) + 1)
        self._mel = weights[self._bins[0] : self._bins[1]].astype("float32")
        n = np.arange(self.window_length)
        self._window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / self.window_length)

    @property
    def min_samples(self):
        """Samples needed for one frame."""
        return self.window_length

    def num_frames(self, num_samples):
        """Frames for `num_samples` samples (an int or an integer tensor), 0 if too short."""
        return count_windows(num_samples, self.window_length, self.hop_length)

    def call(self, inputs, sample_rate=None):
        checks.check_sample_rate(self, sample_rate)
        waveform = checks.float_waveform(self, inputs)
        waveform = checks.assert_waveform(self, waveform, self.window_length)
        return self.log_mel(waveform)

    def log_mel(self, waveform):
        """Log-mel of a float32 `[B, S]` waveform already checked (no checks here)."""
        stft_dtype = tf.dtypes.as_dtype(self.stft_dtype)
        frames = tf.signal.frame(
            tf.cast(waveform, stft_dtype), self.window_length, self.hop_length, axis=-1
        )
        frames = frames * tf.constant(self._window, stft_dtype)
        spectrum = tf.signal.rfft(frames, fft_length=[self._fft_length])
        # The FFT needs the precision; its result does not: rounding each bin to complex64
        # costs a relative 1e-7 of that bin alone.
        spectrum = tf.cast(spectrum[..., self._bins[0] : self._bins[1]], "complex64")
        real, imag = tf.math.real(spectrum), tf.math.imag(spectrum)
        # sqrt has an infinite slope at 0 (silent frames, padding); the 1e-30 keeps the
        # gradient finite and moves a magnitude by at most 1e-15, far below `log_offset`.
        magnitude = tf.sqrt(real * real + imag * imag + 1e-30)
        mel = tf.tensordot(magnitude, tf.constant(self._mel), axes=1)
        return ops.cast(tf.math.log(mel + self.log_offset), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else self.num_frames(int(samples))
        return (*tuple(input_shape[:-1]), frames, self.num_mel_bins)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sample_rate": self.sample_rate,
                "window_length": self.window_length,
                "hop_length": self.hop_length,
                "fft_length": self.fft_length,
                "num_mel_bins": self.num_mel_bins,
                "lower_edge_hertz": self.lower_edge_hertz,
                "upper_edge_hertz": self.upper_edge_hertz,
                "log_offset": self.log_offset,
                "stft_dtype": self.stft_dtype,
            }
        )
        return config
