"""Batches of examples from an array, a `tf.data.Dataset` or a sampler `n -> examples`.

`AdversarialFisherVector.adapt` takes generated samples in any of these forms (a fixed
array, a pipeline, or a generator's `sample(n)`), and `transform` the data to encode;
both walk them here, one bounded batch at a time.
"""

import numpy as np
import tensorflow as tf
from keras import tree

from mmrep.utils.arguments import is_int


def num_examples(batch):
    """The number of examples (leading axis) of a batch: a tensor or structure of them."""
    return int(tree.flatten(batch)[0].shape[0])


def known_total(data, num_samples=None):
    """How many examples `sample_batches` will yield, when known without iterating."""
    if isinstance(data, tf.data.Dataset) or callable(data):
        return num_samples
    try:
        total = int(np.shape(tree.flatten(data)[0])[0])
    except (IndexError, TypeError, ValueError):
        return None
    return total if num_samples is None else min(total, num_samples)


def sample_batches(data, batch_size, num_samples=None, name="samples"):
    """Yields batches of at most `batch_size` examples (`num_samples` in all, if given).

    Args:
        data: an array-like `[N, ...]` or a dict/list/tuple structure of them; a
            `tf.data.Dataset` of batches (its own batch size is kept); or a callable
            `n -> examples` such as a generator's `sample`, called with
            `min(batch_size, remaining)` until `num_samples` examples were drawn.
        batch_size: int. Examples per batch for arrays and samplers.
        num_samples: int or `None`. How many examples to take: required for a sampler;
            for arrays and datasets, the first `num_samples` (all by default).
        name: str. The argument's name in error messages.

    Yields:
        Structures of tensors or arrays with a leading batch axis.

    Raises:
        ValueError: a sampler without `num_samples`, or returning another number of
            examples than asked; arrays of different lengths; a bad `batch_size` or
            `num_samples`.
    """
    if not is_int(batch_size, 1):
        raise ValueError(f"Expected `batch_size` to be a positive int. Received: {batch_size!r}")
    if num_samples is not None and not is_int(num_samples, 1):
        raise ValueError(
            f"Expected `num_samples` to be a positive int or None. Received: {num_samples!r}"
        )
    batch_size = int(batch_size)
    num_samples = None if num_samples is None else int(num_samples)
    if isinstance(data, tf.data.Dataset):
        yield from _dataset_batches(data, num_samples)
    elif callable(data):
        if num_samples is None:
            raise ValueError(
                f"`{name}` is a sampler (a callable n -> examples): pass `num_samples`, "
                "the number of examples to draw from it."
            )
        yield from _sampler_batches(data, batch_size, num_samples, name)
    else:
        yield from _array_batches(data, batch_size, num_samples, name)


def _dataset_batches(dataset, num_samples):
    taken = 0
    for batch in dataset:
        n = num_examples(batch)
        if num_samples is not None and taken + n > num_samples:
            n = num_samples - taken
            batch = tree.map_structure(lambda t, n=n: t[:n], batch)
        if n:
            yield batch
        taken += n
        if num_samples is not None and taken >= num_samples:
            return


def _sampler_batches(sampler, batch_size, num_samples, name):
    taken = 0
    while taken < num_samples:
        n = min(batch_size, num_samples - taken)
        batch = sampler(n)
        got = num_examples(batch)
        if got != n:
            raise ValueError(f"`{name}({n})` returned {got} examples; expected {n}.")
        yield batch
        taken += n


def _array_batches(data, batch_size, num_samples, name):
    data = tree.map_structure(lambda t: t if tf.is_tensor(t) else np.asarray(t), data)
    leaves = tree.flatten(data)
    lengths = [t.shape[0] if len(t.shape) else None for t in leaves]
    if not leaves or None in lengths or len(set(lengths)) != 1:
        raise ValueError(
            f"Expected `{name}` to be an array [N, ...] (or a structure of arrays with the "
            f"same N), a tf.data.Dataset or a callable n -> examples. Received shapes: "
            f"{[tuple(t.shape) for t in leaves]}"
        )
    total = int(lengths[0]) if num_samples is None else min(int(lengths[0]), num_samples)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        yield tree.map_structure(lambda t, a=start, b=stop: t[a:b], data)
