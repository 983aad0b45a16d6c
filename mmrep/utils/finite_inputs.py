"""Refusing NaN or Inf inputs: a clear error eagerly, an in-graph assert when traced.

Values outside a declared range, floats that should be whole ids and presence flags
other than 0/1 are refused the same way by `mmrep.utils.value_checks`; XLA compiles the
in-graph assertions of both away (`jit_compile=True`).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def checked_finite(x, name, what="inputs"):
    """`x`, after refusing NaN and Inf.

    Eagerly, a `ValueError` names the examples (rows of the leading axis) that hold them;
    in a graph, `tf.debugging.assert_all_finite` raises `InvalidArgumentError` when run
    (XLA drops such asserts). Non-floating tensors pass unchecked.

    Args:
        x: tensor `[B, ...]`.
        name: str. Who checks (a layer's name), to start the message.
        what: str. What `x` holds, for the message. Defaults to `"inputs"`.

    Returns:
        `x` (in a graph, with the assert attached).

    Raises:
        ValueError: eagerly, for NaN or Inf in `x`.
    """
    if not keras.backend.is_float_dtype(x.dtype):
        return x
    if tf.executing_eagerly():
        values = ops.convert_to_numpy(x)
        finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
        if not finite.all():
            raise ValueError(
                f"{name}: expected finite {what}. Received NaN or Inf among the {what} of "
                f"example(s) {np.flatnonzero(~finite).tolist()}"
            )
        return x
    return tf.debugging.assert_all_finite(x, f"{name}: NaN or Inf among the {what}")
