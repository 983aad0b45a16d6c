"""Refusing input values a layer cannot mean: outside a declared range, not whole, not 0/1.

A tensor of the right shape and dtype can still hold values the layer would misread
without a word: float pixels of 0..255 given to an encoder told `value_range=(0, 1)`,
token ids of 3.7 (cast to 3), a segment id past the type-vocabulary (a GPU gathers
zeros for it), a presence flag of 0.5. Each check here costs one reduction over the
tensor when its values are good; only a failing check computes what it reports.

Eagerly a bad tensor raises `ValueError` naming the layer, what was expected and what
came (how many values are outside, the smallest and largest, a few of them). In a graph
(a `tf.function`, `fit`, an exported SavedModel) the check is an in-graph assertion that
the returned tensor depends on, raising `tf.errors.InvalidArgumentError` with the same
facts when the graph runs, so a GPU never reads such values silently. XLA compiles
assertions away: under `jit_compile=True` (Keras's default for `fit` on a GPU) these
checks do not run, as for `mmrep.utils.finite_inputs.checked_finite`.

NaN is never a good value (it fails every comparison), nor is an infinity outside the
range. A check reduces `all(good)`, never `any(not good)`: Grappler rewrites
`not (a <= b)` as `a > b`, which would let NaN through.
"""

import numpy as np
import tensorflow as tf

# Bad values a failing check shows, besides their count, minimum and maximum.
_SHOWN = 3


def checked_values(x, good, name, what, expected):
    """`x`, after refusing it where the bool tensor `good` is `False`.

    Args:
        x: tensor `[B, ...]`.
        good: bool tensor of `x`'s shape, e.g. `(x >= 0) & (x <= 1)`.
        name: str. Who checks (a layer's name), to start the message.
        what: str. What `x` holds, e.g. `"pixels"`.
        expected: str. What `x` should hold, e.g. `"in [0, 1] (value_range)"`.

    Returns:
        `x` (in a graph, with the assertion attached).

    Raises:
        ValueError: eagerly, where `good` is `False`.
    """
    ok = tf.reduce_all(good)
    head = f"{name}: expected {what} {expected}."
    if tf.executing_eagerly():
        if not bool(ok):
            raise ValueError(f"{head} Received {_describe(np.asarray(x), np.asarray(good))}")
        return x

    def passed():
        return tf.identity(ok)

    def failed():
        # `equal(good, False)`, not `logical_not(good)`: Grappler may rewrite `not (a <= b)`
        # as `a > b`, which NaN fails too.
        bad = tf.boolean_mask(x, tf.equal(good, False))
        count = tf.size(bad)
        data = [
            f"{head} Received values outside it, count:",
            count,
            "of",
            tf.size(x),
            "; min:",
            tf.reduce_min(x),
            "max:",
            tf.reduce_max(x),
            "; e.g.:",
            bad[:_SHOWN],
        ]
        # The assertion runs in this branch only: the details cost nothing on good input.
        with tf.control_dependencies([tf.debugging.Assert(ok, data, summarize=_SHOWN)]):
            return tf.identity(ok)

    guard = tf.cond(ok, passed, failed)
    with tf.control_dependencies([guard]):
        return tf.identity(x)


def checked_range(x, name, low, high, what="inputs", why=""):
    """`x`, after refusing values outside `[low, high]` (and NaN).

    Args:
        x: numeric tensor.
        name: str. Who checks, to start the message.
        low: number. The smallest value allowed.
        high: number. The largest value allowed.
        what: str. What `x` holds. Defaults to `"inputs"`.
        why: str. Where the range comes from, e.g. `" (value_range)"`. Defaults to `""`.

    Returns:
        `x` (in a graph, with the assertion attached).

    Raises:
        ValueError: eagerly, for a value outside the range.

    Example:

    >>> checked_range(np.array([0.0, 1.0], "float32"), "encoder", 0, 1).shape
    TensorShape([2])
    """
    x = tf.convert_to_tensor(x)
    lo, hi = tf.cast(low, x.dtype), tf.cast(high, x.dtype)
    good = tf.logical_and(x >= lo, x <= hi)
    return checked_values(x, good, name, what, f"in [{_number(low)}, {_number(high)}]{why}")


def checked_whole(x, name, what="ids"):
    """`x`, after refusing floating values that are not whole numbers (3.7, NaN, inf).

    Integer tensors pass unchecked. Use it before casting float ids to an integer dtype,
    which would silently truncate 3.7 to 3.

    Args:
        x: numeric tensor.
        name: str. Who checks, to start the message.
        what: str. What `x` holds. Defaults to `"ids"`.

    Returns:
        `x` (in a graph, with the assertion attached).

    Raises:
        ValueError: eagerly, for a floating value that is not a finite whole number.
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        return x
    good = tf.logical_and(tf.math.is_finite(x), tf.equal(x, tf.floor(x)))
    return checked_values(x, good, name, what, "to be whole numbers (they are cast to integers)")


def checked_flags(x, name, what="presence flags"):
    """`x`, after refusing values other than 0 and 1 (bool tensors pass unchecked).

    Args:
        x: numeric or bool tensor.
        name: str. Who checks, to start the message.
        what: str. What `x` holds. Defaults to `"presence flags"`.

    Returns:
        `x` (in a graph, with the assertion attached).

    Raises:
        ValueError: eagerly, for a value other than 0 and 1.
    """
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.bool:
        return x
    good = tf.logical_or(tf.equal(x, 0), tf.equal(x, 1))
    return checked_values(x, good, name, what, "to be 0 (missing) or 1 (present)")


def _number(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(values, good):
    """What a failing eager check reports: count, min, max and a few bad values."""
    bad = values[~good]
    shown = ", ".join(_number(v.item()) for v in bad[:_SHOWN])
    more = ", ..." if bad.size > _SHOWN else ""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    extent = ""
    if finite.size:
        extent = f"min {_number(finite.min().item())}, max {_number(finite.max().item())}; "
    non_finite = values.size - finite.size
    if non_finite:
        extent += f"{non_finite} NaN or infinite; "
    return f"{extent}{bad.size} of {values.size} values outside it, e.g. [{shown}{more}]"
