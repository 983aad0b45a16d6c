"""Argument and waveform checks shared by the audio layers.

Checks on values only known when the graph runs (the number of samples of a batch traced
with an unknown length, NaN samples, samples beyond `MAX_ABS_SAMPLE`, per-clip lengths)
are `tf.debugging.Assert` ops, so they hold in a `tf.function` and in an exported
SavedModel too; eagerly they raise `tf.errors.InvalidArgumentError` at once, except
samples beyond `MAX_ABS_SAMPLE`, a `ValueError`. What is known while tracing raises
`ValueError` or `TypeError` there. XLA compiles assertions away: under `jit_compile=True`
these checks do not run.
"""

import numbers

import keras
import tensorflow as tf

from mmrep.utils.arguments import is_int

INT16_SCALE = 1.0 / 32768.0
# A floating waveform is in [-1, 1]; samples are accepted up to this magnitude, since
# resampling a clipped clip overshoots 1 by a few percent and two summed clips reach 2.
# Floats still in int16 units (PCM not divided by 32768) have peaks in the hundreds or
# thousands, and are refused.
MAX_ABS_SAMPLE = 2.0


def check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"Expected `{name}` to be a number. Received: {name}={value!r}")


def check_sample_rate(layer, sample_rate):
    """Refuses a declared sample rate other than the layer's."""
    if sample_rate is None:
        return
    if not is_int(sample_rate) or sample_rate != layer.sample_rate:
        raise ValueError(
            f"{layer.name}: expected audio at sample_rate={layer.sample_rate} Hz; resample "
            "it first (mmrep.preprocessing.resample, or load_audio(path, "
            f"sample_rate={layer.sample_rate})). Received: sample_rate={sample_rate!r}"
        )


def float_waveform(layer, inputs):
    """`[B, S]` float32: floats converted, int16 scaled by 1/32768, other dtypes refused."""
    x = tf.convert_to_tensor(inputs) if not keras.ops.is_tensor(inputs) else inputs
    dtype = keras.backend.standardize_dtype(x.dtype)
    if len(x.shape) != 2:
        raise ValueError(
            f"{layer.name}: expected a waveform batch of shape [batch, samples]. "
            f"Received: shape={tuple(x.shape)}"
        )
    if dtype == "int16":
        return tf.cast(x, "float32") * INT16_SCALE
    if not keras.backend.is_float_dtype(dtype):
        raise TypeError(
            f"{layer.name}: expected a floating waveform in [-1, 1] or int16 PCM (scaled by "
            f"1/32768). Received: dtype={dtype}; convert other integer PCM to float first"
        )
    return tf.cast(x, "float32")


def _assert(condition, message, *data):
    """Raises `InvalidArgumentError` eagerly, or returns an Assert op to depend on."""
    if tf.executing_eagerly():
        if not bool(condition):
            values = " ".join(str(keras.ops.convert_to_numpy(d).tolist()) for d in data)
            raise tf.errors.InvalidArgumentError(None, None, f"{message} {values}")
        return None
    # In a graph the op runs because the checked tensor depends on it (`with_checks`);
    # XLA compiles Assert to nothing, so under jit_compile these checks do not run.
    return tf.debugging.Assert(condition, [message, *data], summarize=8)


def with_checks(tensor, asserts):
    asserts = [a for a in asserts if a is not None]
    if not asserts:
        return tensor
    with tf.control_dependencies(asserts):
        return tf.identity(tensor)


def samples_assert(layer, waveform, min_samples, what):
    """Static `ValueError` or an in-graph assert that the batch holds >= `min_samples`."""
    samples = waveform.shape[-1]
    message = (
        f"{layer.name}: expected at least {min_samples} samples per clip ({what}). "
        "Received samples:"
    )
    if samples is not None:
        if samples < min_samples:
            raise ValueError(f"{message} {samples}")
        return None
    count = tf.shape(waveform)[-1]
    return _assert(count >= min_samples, message, count)


def sample_values_assert(layer, waveform):
    """A check that every sample is finite and within `MAX_ABS_SAMPLE` in magnitude.

    One reduction (whether all samples are within the bound, which NaN is not) when the
    samples are good; what a failing check reports is computed only then. NaN or
    infinite samples raise `InvalidArgumentError` with their count; finite samples beyond
    the bound (int16 units given as floats) raise `ValueError` eagerly, naming the largest
    magnitude. In a graph both are in-graph assertions (`InvalidArgumentError` when run).

    Returns:
        `None` eagerly (after raising for bad samples), else a tensor to depend on.
    """
    # `all(|x| <= bound)`, not `any(not |x| <= bound)`: Grappler rewrites `not (a <= b)`
    # as `a > b`, which NaN fails too.
    good = tf.reduce_all(tf.abs(waveform) <= MAX_ABS_SAMPLE)
    finite_message = (
        f"{layer.name}: expected finite waveform samples. Received NaN or infinite samples, count:"
    )
    range_message = (
        f"{layer.name}: expected waveform samples in [-{MAX_ABS_SAMPLE:g}, "
        f"{MAX_ABS_SAMPLE:g}] (floating audio is in [-1, 1]; divide int16 PCM held as "
        "floats by 32768, or pass it as int16). Received max |sample|"
    )

    def non_finite():
        return tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(waveform)), "int32"))

    def outside():
        within = tf.reduce_sum(tf.cast(tf.abs(waveform) <= MAX_ABS_SAMPLE, "int32"))
        return tf.size(waveform) - within

    if tf.executing_eagerly():
        if not bool(good):
            _assert(tf.equal(non_finite(), 0), finite_message, non_finite())
            peak = float(tf.reduce_max(tf.abs(waveform)))
            raise ValueError(f"{range_message} {peak:g}; {int(outside())} samples outside")
        return None

    def passed():
        return tf.identity(good)

    def failed():
        count = non_finite()
        finite = tf.debugging.Assert(tf.equal(count, 0), [finite_message, count])
        with tf.control_dependencies([finite]):
            peak = tf.reduce_max(tf.abs(waveform))
            bounded = tf.debugging.Assert(
                peak <= MAX_ABS_SAMPLE,
                [f"{range_message}:", peak, "samples outside:", outside()],
            )
        with tf.control_dependencies([bounded]):
            return tf.identity(good)

    # The details are computed in the failing branch only.
    return tf.cond(good, passed, failed)


def assert_waveform(layer, waveform, min_samples):
    """`waveform` once it holds >= `min_samples` samples per clip and no NaN or Inf."""
    what = f"one {1000 * min_samples / layer.sample_rate:g} ms window"
    return with_checks(
        waveform,
        [samples_assert(layer, waveform, min_samples, what), sample_values_assert(layer, waveform)],
    )


def assert_lengths(layer, lengths, num_samples, min_length):
    """Integer `[B]` lengths with `min_length <= lengths <= num_samples`, as int32."""
    if not keras.ops.is_tensor(lengths):
        lengths = tf.convert_to_tensor(lengths)
    dtype = keras.backend.standardize_dtype(lengths.dtype)
    if not dtype.startswith(("int", "uint")) or len(lengths.shape) != 1:
        raise ValueError(
            f"{layer.name}: expected `lengths` to be an integer tensor [batch] of samples "
            f"per clip. Received: shape={tuple(lengths.shape)}, dtype={dtype}"
        )
    lengths = tf.cast(lengths, "int32")
    checks = [
        _assert(
            tf.reduce_all(lengths >= min_length),
            f"{layer.name}: expected every clip's `lengths` >= {min_length} samples. "
            "Received lengths:",
            lengths,
        ),
        _assert(
            tf.reduce_all(lengths <= num_samples),
            f"{layer.name}: expected `lengths` <= the batch's samples per clip. "
            "Received lengths, samples:",
            lengths,
            num_samples,
        ),
    ]
    return with_checks(lengths, checks)
