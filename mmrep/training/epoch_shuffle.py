"""Epoch-deterministic shuffling: epoch e's example order depends only on `(seed, e)`.

A resumed training run must see, in epoch e, the batches the uninterrupted run saw in
epoch e. `tf.data`'s `shuffle(seed=s, reshuffle_each_iteration=True)` does not give that:
its k-th iteration draws the k-th order of *this process*, so a process restarted at
epoch 3 replays epoch 0's order. Keras 3's TensorFlow trainer, given a finite dataset and
no `steps_per_epoch`, creates a fresh iterator over the dataset at the start of every
epoch, after the callbacks' `on_epoch_begin` (keras/src/trainers/epoch_iterator.py,
`EpochIterator._enumerate_iterator`). `epoch_shuffled` uses that moment: the pipeline
starts with a one-element dataset that reads an epoch counter (a `tf.Variable`) when an
iterator is created, and shuffles the examples with seeds built from `(seed, epoch)`
alone; a callback sets the counter to Keras' epoch index in `on_epoch_begin`. Since
`mmrep.training.BackupAndRestore` restores the epoch index, a resumed run gets the same
order in every epoch as an uninterrupted one.

The contract:

- epoch e's batches are `examples.shuffle(buffer_size, seeds(seed, e)).batch(global_batch_size)`:
  a function of the input order, `seed`, `e`, `buffer_size` and the batch size only, not of
  TensorFlow's global seed, the process, or how many epochs the process has run;
- an iterator created when the counter holds e yields epoch e and moves the counter to
  e + 1, so outside `fit` (or if the callback is forgotten) successive iterations still
  give successive epochs, counted from 0 in this process;
- with `fit`, pass the returned callback, and no `steps_per_epoch` (or exactly the number
  of batches of an epoch): with a smaller one Keras keeps an iterator across epochs.

Under `tf.distribute`, give the global batch size: Keras splits each batch over the
replicas, and every worker of `MultiWorkerMirroredStrategy` builds the same order (its
auto-sharding then gives each worker its part of every global batch). The default full
shuffle holds the whole epoch in the shuffle buffer; pass `buffer_size` for data that does
not fit in memory (the order is then a windowed shuffle, still a function of `(seed, e)`).
"""

import typing

import keras
import tensorflow as tf

from mmrep.utils.arguments import check_int, is_int

_SEED_LIMIT = 2**63
# `tf.data` reduces a shuffle's seeds modulo 2**31 - 1.
_SHUFFLE_SEED_LIMIT = 2**31 - 1
# The graph-level seed of every epoch's shuffle (any nonzero constant): the order then
# depends on the op-level seed alone, which is derived from (seed, epoch).
_GRAPH_SEED = 0x5EED


class EpochShuffled(typing.NamedTuple):
    """What `epoch_shuffled` returns: the dataset and the callback that tells it the epoch.

    Attributes:
        dataset: `tf.data.Dataset` of batches; one pass is one epoch.
        callback: `EpochCallback` to pass to `Model.fit(callbacks=[...])`.
    """

    dataset: tf.data.Dataset
    callback: "EpochCallback"


class EpochCallback(keras.callbacks.Callback):
    """Sets the epoch counter of an `epoch_shuffled` dataset to Keras' epoch index.

    Args:
        epoch: the `tf.Variable` (int64 scalar) the dataset reads when an iterator is
            created.
    """

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


def epoch_shuffled(dataset, global_batch_size, seed, buffer_size=None, drop_remainder=False):
    """Shuffles and batches a finite dataset so that epoch e's order depends on (seed, e) only.

    Use it as the training input of `Model.fit` together with
    `mmrep.training.BackupAndRestore`: a run killed in epoch 3 and restarted resumes at
    epoch 3 with epoch 3's order, so it ends with the weights of an uninterrupted run.
    See the module docstring for the contract.

    Args:
        dataset: `tf.data.Dataset` of single examples (not batched), finite. Its own
            order must be deterministic (no unseeded shuffle or nondeterministic
            `interleave` upstream).
        global_batch_size: int. Examples per batch, over all replicas.
        seed: int in `[0, 2**63)`. Epoch e is shuffled with a seed drawn by a
            stateless generator from `(seed, e)`.
        buffer_size: int or `None`. The shuffle buffer; `None` (the default) shuffles
            the whole epoch uniformly, which needs the dataset's cardinality to be known
            and holds every example in memory.
        drop_remainder: bool. Whether to drop the last, smaller batch of an epoch.
            Defaults to `False`.

    Returns:
        `EpochShuffled(dataset, callback)`: the batched dataset and the `EpochCallback`
        to pass to `fit`. When the input's cardinality is known the dataset's
        cardinality is the number of batches per epoch.

    Raises:
        TypeError: if `dataset` is not a `tf.data.Dataset`.
        ValueError: for an infinite dataset, an unknown cardinality with
            `buffer_size=None`, or a batch size, seed or buffer size out of range.

    Example:

    >>> x, y = np.ones((150, 3), "float32"), np.zeros(150, "int32")
    >>> examples = tf.data.Dataset.from_tensor_slices((x, y))
    >>> train = epoch_shuffled(examples, global_batch_size=64, seed=1)
    >>> [int(batch_x.shape[0]) for batch_x, _ in train.dataset]
    [64, 64, 22]
    >>> model.fit(train.dataset, epochs=10, callbacks=[train.callback, backup])  # doctest: +SKIP
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "Expected `dataset` to be a tf.data.Dataset of single examples. "
            f"Received: dataset of type {type(dataset).__name__}"
        )
    global_batch_size = check_int("global_batch_size", global_batch_size, minimum=1)
    seed = check_int("seed", seed, minimum=0, maximum=_SEED_LIMIT - 1)
    if buffer_size is not None and not is_int(buffer_size, 1):
        raise ValueError(
            "Expected `buffer_size` to be a positive int or None (a full shuffle). "
            f"Received: buffer_size={buffer_size!r}"
        )
    if not isinstance(drop_remainder, bool):
        raise ValueError(
            f"Expected `drop_remainder` to be a bool. Received: drop_remainder={drop_remainder!r}"
        )
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "Expected `dataset` to be finite (one pass is one epoch). Received: an infinite "
            "dataset; remove its `.repeat()`."
        )
    known = cardinality != tf.data.UNKNOWN_CARDINALITY
    if buffer_size is None:
        if not known:
            raise ValueError(
                "`buffer_size=None` shuffles the whole epoch, which needs the dataset's "
                "cardinality. Received: a dataset of unknown cardinality; pass a "
                "`buffer_size` or apply `tf.data.experimental.assert_cardinality(n)`."
            )
        buffer_size = max(cardinality, 1)

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_shuffled_epoch")

    def next_epoch(_):
        # Read once per iterator: the epoch this pass serves, then advance the counter.
        return epoch.assign_add(1) - 1

    def one_epoch(epoch_index):
        # Inside this traced function `set_seed` sets only the function graph's seed, so
        # the shuffle's seeds ignore the process-wide seed.
        tf.random.set_seed(_GRAPH_SEED)
        epoch_seed = tf.random.stateless_uniform(
            [],
            seed=tf.stack([tf.constant(seed, tf.int64), epoch_index]),
            maxval=_SHUFFLE_SEED_LIMIT,
            dtype=tf.int64,
        )
        return dataset.shuffle(buffer_size, seed=epoch_seed, reshuffle_each_iteration=False)

    batches = (
        tf.data.Dataset.from_tensors(tf.constant(0, tf.int64))
        .map(next_epoch)
        .flat_map(one_epoch)
        .batch(global_batch_size, drop_remainder=drop_remainder)
    )
    if known:
        full, rest = divmod(cardinality, global_batch_size)
        num_batches = full + (1 if rest and not drop_remainder else 0)
        # Keras reads the epoch length from the cardinality; without it the first epoch
        # ends with an "input ran out of data" warning.
        batches = batches.apply(tf.data.experimental.assert_cardinality(num_batches))
    batches = batches.prefetch(tf.data.AUTOTUNE)
    return EpochShuffled(batches, EpochCallback(epoch))
