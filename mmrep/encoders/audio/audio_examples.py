"""Waveforms to VGGish examples: log-mel patches of 96 frames, with a mask per example."""

import keras
import tensorflow as tf
from keras import ops

from mmrep.encoders.audio import waveform_checks as checks
from mmrep.encoders.audio.log_mel import LogMelSpectrogram, count_windows
from mmrep.utils.arguments import check_int


def resolve_frontend(frontend, dtype_policy):
    """A `LogMelSpectrogram` from an instance, its config or serialisation, or `None`."""
    if frontend is None:
        return LogMelSpectrogram(dtype=dtype_policy, name="log_mel")
    if isinstance(frontend, dict):
        if "class_name" in frontend:
            frontend = keras.saving.deserialize_keras_object(frontend)
        else:
            frontend = LogMelSpectrogram.from_config(frontend)
    if not isinstance(frontend, LogMelSpectrogram):
        raise ValueError(
            "Expected `frontend` to be a LogMelSpectrogram, its config, or None. "
            f"Received: frontend={frontend!r}"
        )
    return frontend


@keras.saving.register_keras_serializable(package="mmrep")
class AudioExamples(keras.layers.Layer):
    """Cuts waveforms into VGGish examples: `[B, E, 96, 64]` log-mel patches and a mask.

    The waveform goes through the log-mel `frontend` (VGGish's by default), and the frames
    are grouped into examples of `example_frames` frames every `example_hop` frames
    (0.96 s, without overlap, for VGGish). As in VGGish, frames after the last whole
    example are dropped, so a clip of `S` samples gives
    `1 + (F - example_frames) // example_hop` examples with `F = 1 + (S - 400) // 160`
    frames: 15600 samples are needed for one example, 3 s give 3.

    Variable-length clips share a batch when padded to a common length and described by
    `lengths`: samples past a clip's length are replaced by zeros before the frontend
    (whatever the padding held), and `mask[b, e]` is true for the examples made of clip
    `b`'s own frames.

    A clip too short for one example is an error naming the samples needed, unless
    `pad_short=True`: then the batch is zero-padded to one example when shorter, and a
    short clip's first example (its audio followed by silence) counts as valid, so every
    clip has at least one. Empty clips are always an error.

    Args:
        frontend: a `LogMelSpectrogram`, its config dict, or `None` for VGGish's.
            Defaults to `None`.
        example_frames: int. Frames per example. Defaults to `96`.
        example_hop: int. Frames between example starts. Defaults to `96`.
        pad_short: bool. Whether clips shorter than one example are padded (and masked)
            instead of refused. Defaults to `False`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: `[B, S]` waveform, floating in [-1, 1] or int16 (see `LogMelSpectrogram`;
            samples past a clip's `lengths` are not read, the others must be finite and
            within `MAX_ABS_SAMPLE` = 2 in magnitude).
        lengths: optional integer `[B]`, the samples of each clip (`1 <= lengths <= S`).
            `None` means every clip has `S` samples.
        sample_rate: optional int; a rate other than the frontend's is an error.

    Returns:
        dict with `"examples"`: `[B, E, example_frames, num_mel_bins]` in the compute
        dtype, and `"mask"`: `[B, E]` bool.

    Example:

    >>> out = AudioExamples()(np.zeros((2, 48000), "float32"), lengths=np.array([48000, 20000]))
    >>> tuple(out["examples"].shape), out["mask"].numpy().tolist()
    ((2, 3, 96, 64), [[True, True, True], [True, False, False]])

    Reference:
        Hershey et al., "CNN Architectures for Large-Scale Audio Classification",
        ICASSP 2017.
    """

    def __init__(self, frontend=None, example_frames=96, example_hop=96, pad_short=False, **kwargs):
        super().__init__(**kwargs)
        example_frames = check_int("example_frames", example_frames, minimum=1)
        example_hop = check_int("example_hop", example_hop, minimum=1)
        if not isinstance(pad_short, bool):
            raise ValueError(
                f"Expected `pad_short` to be a bool. Received: pad_short={pad_short!r}"
            )
        self.frontend = resolve_frontend(frontend, self.dtype_policy)
        self.example_frames = example_frames
        self.example_hop = example_hop
        self.pad_short = pad_short
        self.autocast = False

    @property
    def sample_rate(self):
        return self.frontend.sample_rate

    @property
    def min_samples(self):
        """Samples needed for one example (15600 for VGGish)."""
        return self.frontend.window_length + (self.example_frames - 1) * self.frontend.hop_length

    def num_examples(self, num_samples):
        """Whole examples in `num_samples` samples (int or integer tensor), padding aside."""
        frames = self.frontend.num_frames(num_samples)
        return count_windows(frames, self.example_frames, self.example_hop)

    def build(self, inputs_shape, lengths_shape=None):
        self.frontend.build(inputs_shape)

    def call(self, inputs, lengths=None, sample_rate=None):
        checks.check_sample_rate(self, sample_rate)
        waveform = checks.float_waveform(self, inputs)
        samples = waveform.shape[-1]
        num_samples = tf.shape(waveform)[-1]
        what = f"one example of {self.example_frames} frames"
        if lengths is None:
            need = 1 if self.pad_short else self.min_samples
            waveform = checks.with_checks(
                waveform,
                [
                    checks.samples_assert(self, waveform, need, what),
                    checks.sample_values_assert(self, waveform),
                ],
            )
            lengths = tf.fill(tf.shape(waveform)[:1], num_samples)
        else:
            lengths_batch, batch = getattr(lengths, "shape", [None])[0], waveform.shape[0]
            if lengths_batch is not None and batch is not None and lengths_batch != batch:
                raise ValueError(
                    f"{self.name}: expected `lengths` of shape [{batch}], one per clip. "
                    f"Received: shape={tuple(lengths.shape)}"
                )
            need = 1 if self.pad_short else self.min_samples
            if samples is not None:
                # Known while tracing: a batch too short for any clip fails here, early.
                checks.samples_assert(self, waveform, need, what)
            lengths = checks.assert_lengths(self, lengths, num_samples, need)
            # Samples past a clip's end are padding: zeros, whatever the caller put there
            # (NaN included), so a short clip's frames equal those of the clip alone.
            inside = tf.range(num_samples)[None, :] < lengths[:, None]
            waveform = tf.where(inside, waveform, 0.0)
            waveform = checks.with_checks(waveform, [checks.sample_values_assert(self, waveform)])
        if self.pad_short:
            waveform = self._pad_to_one_example(waveform, samples, num_samples)

        log_mel = self.frontend.log_mel(waveform)
        examples = tf.signal.frame(log_mel, self.example_frames, self.example_hop, axis=1)
        count = self.num_examples(lengths)
        if self.pad_short:
            count = ops.maximum(count, 1)
        positions = tf.range(tf.shape(examples)[1])
        mask = positions[None, :] < count[:, None]
        return {"examples": ops.cast(examples, self.compute_dtype), "mask": mask}

    def _pad_to_one_example(self, waveform, samples, num_samples):
        if samples is not None:
            missing = max(self.min_samples - samples, 0)
        else:
            missing = tf.maximum(self.min_samples - num_samples, 0)
        if isinstance(missing, int) and missing == 0:
            return waveform
        return tf.pad(waveform, [[0, 0], [0, missing]])

    def _num_output_examples(self, samples):
        if samples is None:
            return None
        return self.num_examples(max(int(samples), self.min_samples if self.pad_short else 0))

    def compute_output_shape(self, input_shape, lengths_shape=None):
        batch = input_shape[0]
        examples = self._num_output_examples(input_shape[-1])
        return {
            "examples": (batch, examples, self.example_frames, self.frontend.num_mel_bins),
            "mask": (batch, examples),
        }

    def compute_output_spec(self, inputs, lengths=None, sample_rate=None):
        shapes = self.compute_output_shape(inputs.shape)
        return {
            "examples": keras.KerasTensor(shapes["examples"], dtype=self.compute_dtype),
            "mask": keras.KerasTensor(shapes["mask"], dtype="bool"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "frontend": keras.saving.serialize_keras_object(self.frontend),
                "example_frames": self.example_frames,
                "example_hop": self.example_hop,
                "pad_short": self.pad_short,
            }
        )
        return config
