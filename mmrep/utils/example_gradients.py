"""Per-example gradients: row i is the gradient of `fn(inputs)[i]` w.r.t. chosen variables.

The Fisher score of an Adversarial Fisher Vector (Zhai et al., NeurIPS 2019) is the
gradient of the discriminator's output for ONE example with respect to its parameters, so
a batch needs one gradient per example, not the usual sum. Two ways give the same `[B, P]`:

- `method="vectorized"`: `tf.vectorized_map` over the examples of a chunk; each iteration
  takes the gradient of `fn` on a batch of one example, and TensorFlow's `pfor` turns the
  `B` iterations into batched ops. `GradientTape.jacobian(..., experimental_use_pfor=True)`
  was measured slower on a DCGAN-like 32x32 discriminator (2 CPU cores, 64 examples):
  its vectorised backward pass runs over the whole chunk for every output (cost `B²`), so
  at its best chunk size (2) it reached 0.7x the speed of `vectorized_map`, at 16 0.25x.
  Chunks of `batch_size` examples go through a `tf.while_loop`, so the memory of the
  intermediates is bounded by the chunk, not the batch. `pfor` has no batched rule for a
  convolution's per-example kernel gradient and runs those in an inner loop (it logs
  a request to fix that), which keeps the speed-up over a loop of compiled per-example
  gradients at about 2x on CPU (tests/benchmarks/bench_afv.py).
- `method="loop"`: one `GradientTape.gradient` per example in a `tf.while_loop` (a Python
  loop when eager). The reference, and the benchmark's baseline.

Both evaluate `fn` on batches of ONE example, so `fn` must treat examples independently
(BatchNormalization in inference mode, no batch statistics, no cross-example losses);
otherwise the result is not a per-example gradient of the batch's output.

The module is not named `per_example_gradients`, so that the function keeps that name
unshadowed where a package re-exports it (`mmrep.heads.per_example_gradients`).
"""

import contextlib
import logging

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from mmrep.utils.arguments import is_int

_METHODS = ("vectorized", "loop")


def per_example_gradients(fn, variables, inputs, batch_size=None, method="vectorized"):
    """The gradient of each example's scalar output with respect to `variables`.

    Row `i` of the result is `d fn(inputs)[i] / d variables`, each variable's gradient
    flattened (row-major) and the variables concatenated in the order given. A variable
    with no path to the output contributes zeros.

    Eagerly, the vectorised computation is traced into a `tf.function` once per call
    (`pfor` needs a graph); call it inside your own `tf.function` to trace it once for
    many calls. It works inside `tf.function`, SavedModels and under an outer
    `GradientTape` (the result is differentiable w.r.t. `inputs`).

    Args:
        fn: callable mapping a batch of `b` examples (the structure of `inputs`, each
            tensor sliced to `b` rows) to per-example scalars of shape `[b]`. It must
            treat examples independently (see the module docstring).
        variables: non-empty list of floating variables (Keras or `tf.Variable`) or
            tensors that `fn` reads. Tensors must be the very tensors `fn` uses (such as
            the values of a `keras.StatelessScope`).
        inputs: a batched tensor `[B, ...]` or a dict/list/tuple structure of batched
            tensors with the same `B`.
        batch_size: int or `None`. Examples per vectorised chunk; bounds peak memory
            (about `batch_size` times one example's activations and gradients). `None`
            vectorises the whole batch at once. Ignored by `method="loop"`. Defaults to
            `None`.
        method: `"vectorized"` (default) or `"loop"`.

    Returns:
        A `[B, P]` tensor, `P` the total number of elements of `variables`, in their
        common floating dtype (float64 if any variable is float64).

    Raises:
        TypeError: `fn` is not callable; a variable is not floating.
        ValueError: empty `variables`; `batch_size` not a positive int; unknown
            `method`; inputs without a batch axis or with different batch sizes;
            `fn` not returning shape `[b]`.

    Example:

    >>> dense = keras.layers.Dense(1)
    >>> dense.build((None, 2))
    >>> x = np.ones((3, 2), "float32")
    >>> g = per_example_gradients(lambda b: dense(b)[:, 0], dense.weights, x)
    >>> tuple(g.shape)
    (3, 3)

    Reference:
        Zhai, Talbott, Guestrin & Susskind, "Adversarial Fisher Vectors for Unsupervised
        Representation Learning", NeurIPS 2019 (the per-example Fisher scores).
        Agarwal, "Auto-Vectorizing TensorFlow Graphs: Jacobians, Auto-Batching and
        Beyond", 2019 (`pfor`, behind `tf.vectorized_map`).
    """
    if not callable(fn):
        raise TypeError(f"Expected `fn` to be callable. Received: {type(fn).__name__}")
    if method not in _METHODS:
        raise ValueError(f"Expected `method` to be one of {list(_METHODS)}. Received: {method!r}")
    if batch_size is not None and not is_int(batch_size, 1):
        raise ValueError(
            f"Expected `batch_size` to be a positive int or None. Received: {batch_size!r}"
        )
    batch_size = None if batch_size is None else int(batch_size)
    variables = _check_variables(variables)
    inputs = tree.map_structure(tf.convert_to_tensor, inputs)
    static_batch = _batch_size_of(inputs)
    dtype = tf.as_dtype(np.result_type(*[tf.as_dtype(v.dtype).as_numpy_dtype for v in variables]))
    width = sum(int(np.prod(v.shape)) for v in variables)

    def one_chunk_by_tape(chunk):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            score = _checked_scores(fn(chunk))[0]
        grads = tape.gradient(score, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return _flatten(grads, dtype)[None]

    def one_chunk_vectorized(chunk):
        def one_example(example):
            return one_chunk_by_tape(tree.map_structure(lambda t: t[None], example))[0]

        return tf.vectorized_map(one_example, chunk)

    def compute(inputs):
        if method == "loop":
            rows = _chunked(one_chunk_by_tape, inputs, 1, width, dtype)
        elif static_batch == 0:
            rows = tf.zeros((0, width), dtype)
        elif static_batch is not None and static_batch <= (batch_size or static_batch):
            rows = one_chunk_vectorized(inputs)
        elif batch_size is None:
            # pfor cannot run zero iterations of some ops (a stack of an empty list).
            rows = tf.cond(
                tf.shape(tree.flatten(inputs)[0])[0] > 0,
                lambda: one_chunk_vectorized(inputs),
                lambda: tf.zeros((0, width), dtype),
            )
        else:
            rows = _chunked(one_chunk_vectorized, inputs, batch_size, width, dtype)
        rows.set_shape((static_batch, width))
        return rows

    with _quiet_pfor_todo():
        if method == "vectorized" and tf.executing_eagerly():
            return tf.function(compute)(inputs)
        return compute(inputs)


class _PforTodoFilter(logging.Filter):
    """Drops pfor's "Conv2DBackpropFilter uses a while_loop. Fix that!" (TensorFlow's
    own note to its developers, logged at every trace of a convolution's per-example weight gradient; it asks
    nothing of the caller, and the measured speed-up over a loop includes it)."""

    def filter(self, record):
        return "uses a while_loop. Fix that!" not in record.getMessage()


@contextlib.contextmanager
def _quiet_pfor_todo():
    logger, drop = tf.get_logger(), _PforTodoFilter()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _check_variables(variables):
    if isinstance(variables, (str, bytes)) or not hasattr(variables, "__iter__"):
        raise TypeError(
            "Expected `variables` to be a list of variables or tensors. "
            f"Received: {type(variables).__name__}"
        )
    variables = list(variables)
    if not variables:
        raise ValueError(
            "Expected `variables` to be a non-empty list of variables. Received: an empty list"
        )
    for i, v in enumerate(variables):
        dtype = getattr(v, "dtype", None)
        if dtype is None or not tf.as_dtype(dtype).is_floating:
            raise TypeError(
                f"Expected floating variables. Received `variables[{i}]` of type "
                f"{type(v).__name__} with dtype {dtype}"
            )
    # A tape watches TensorFlow objects: a Keras variable through its `tf.Variable`.
    return [v.value if isinstance(v, keras.Variable) else v for v in variables]


def _batch_size_of(inputs):
    """The static batch size of `inputs` (`None` if unknown); checks every leaf has one."""
    leaves = tree.flatten(inputs)
    if not leaves or any(t.shape.rank in (None, 0) for t in leaves):
        shapes = [tuple(t.shape) for t in leaves]
        raise ValueError(
            "Expected `inputs` to be a batched tensor [B, ...] or a structure of them. "
            f"Received shapes: {shapes}"
        )
    sizes = {t.shape[0] for t in leaves} - {None}
    if len(sizes) > 1:
        raise ValueError(
            "Expected every tensor of `inputs` to have the same batch size. Received "
            f"batch sizes: {[t.shape[0] for t in leaves]}"
        )
    return sizes.pop() if sizes else None


def _checked_scores(scores):
    scores = tf.convert_to_tensor(scores)
    if scores.shape.rank != 1 or scores.shape[0] not in (None, 1):
        raise ValueError(
            "Expected `fn` to map a batch of b examples to per-example scalars of shape "
            f"[b]. For a batch of 1 example it returned shape {tuple(scores.shape)}"
        )
    if not scores.dtype.is_floating:
        raise ValueError(f"Expected `fn` to return floating scores. Received: {scores.dtype}")
    return scores


def _flatten(grads, dtype):
    return tf.concat(
        [tf.reshape(tf.cast(tf.convert_to_tensor(g), dtype), [-1]) for g in grads], axis=0
    )


def _chunked(chunk_fn, inputs, chunk_size, width, dtype):
    """`chunk_fn` over consecutive slices of `chunk_size` examples, rows concatenated.

    A `tf.while_loop` (a Python loop when eager), so that the graph holds one chunk's ops
    and memory one chunk's intermediates, whatever the batch size.
    """
    total = tf.shape(tree.flatten(inputs)[0])[0]
    num_chunks = (total + chunk_size - 1) // chunk_size
    rows = tf.TensorArray(
        dtype, size=num_chunks, infer_shape=False, element_shape=tf.TensorShape([None, width])
    )

    def body(i, rows):
        start = i * chunk_size
        chunk = tree.map_structure(lambda t: t[start : start + chunk_size], inputs)
        return i + 1, rows.write(i, chunk_fn(chunk))

    _, rows = tf.while_loop(lambda i, _: i < num_chunks, body, (tf.constant(0), rows))
    return tf.cond(num_chunks > 0, lambda: rows.concat(), lambda: tf.zeros((0, width), dtype))
