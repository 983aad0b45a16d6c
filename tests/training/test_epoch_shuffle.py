"""Tests for `mmrep.training.epoch_shuffled`: epoch e's order is a function of (seed, e).

The reference is the pipeline itself iterated epoch after epoch from 0 in a fresh object:
another pipeline, built under another global seed, that jumps straight to epoch e (as a
process restarted at epoch e does) must give the same batches; Keras `fit` must feed
exactly those batches, epoch by epoch, and from `initial_epoch` on.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.training.epoch_shuffle import epoch_shuffled
from tests.harness import two_device_strategy

N = 10


def _examples():
    return tf.data.Dataset.range(N)


def _epoch(dataset):
    return [batch.numpy().tolist() for batch in dataset]


def _flat(batches):
    return [i for batch in batches for i in batch]


def test_epoch_order_depends_only_on_seed_and_epoch():
    tf.random.set_seed(1)
    first = epoch_shuffled(_examples(), 4, seed=7)
    epochs = [_epoch(first.dataset) for _ in range(4)]  # successive iterations: 0, 1, 2, 3
    for batches in epochs:
        assert sorted(_flat(batches)) == list(range(N))
        assert [len(b) for b in batches] == [4, 4, 2]
    assert len({tuple(_flat(b)) for b in epochs}) == 4  # every epoch has its own order

    tf.random.set_seed(123)  # another process-wide seed, and a fresh pipeline
    restarted = epoch_shuffled(_examples(), 4, seed=7)
    restarted.callback.on_epoch_begin(2)  # a process that starts at epoch 2
    assert _epoch(restarted.dataset) == epochs[2]
    assert _epoch(restarted.dataset) == epochs[3]  # and then goes on
    restarted.callback.on_epoch_begin(0)
    assert _epoch(restarted.dataset) == epochs[0]

    other_seed = epoch_shuffled(_examples(), 4, seed=8)
    assert _epoch(other_seed.dataset) != epochs[0]


def test_does_not_touch_the_global_seed():
    tf.random.set_seed(3)
    want = tf.random.uniform([4]).numpy()
    tf.random.set_seed(3)
    _epoch(epoch_shuffled(_examples(), 4, seed=7).dataset)
    np.testing.assert_array_equal(tf.random.uniform([4]).numpy(), want)


@pytest.mark.parametrize(
    "drop_remainder, buffer_size, sizes",
    [(False, None, [3, 3, 3, 1]), (True, None, [3, 3, 3]), (False, 2, [3, 3, 3, 1])],
)
def test_cardinality_is_the_number_of_batches(drop_remainder, buffer_size, sizes):
    shuffled = epoch_shuffled(
        _examples(), 3, seed=0, buffer_size=buffer_size, drop_remainder=drop_remainder
    )
    assert int(shuffled.dataset.cardinality()) == len(sizes)
    batches = _epoch(shuffled.dataset)
    assert [len(b) for b in batches] == sizes
    assert len(set(_flat(batches))) == sum(sizes)


class _Record(keras.layers.Layer):
    """Records the example ids of every batch it sees (run eagerly)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, x):
        self.seen.append(keras.ops.convert_to_numpy(x)[:, 0].astype(int).tolist())
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


def test_fit_feeds_each_epoch_its_order_and_resumes_at_initial_epoch():
    def examples():
        ids = np.arange(N, dtype="float32")[:, None]
        return tf.data.Dataset.from_tensor_slices((ids, np.zeros((N, 1), "float32")))

    reference = epoch_shuffled(_examples(), 4, seed=3)
    epochs = [_epoch(reference.dataset) for _ in range(3)]

    def fit(initial_epoch):
        record = _Record()
        model = keras.Sequential([keras.Input((1,)), record, keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
        train = epoch_shuffled(examples(), 4, seed=3)
        model.fit(train.dataset, epochs=3, initial_epoch=initial_epoch, shuffle=False,
                  callbacks=[train.callback], verbose=0)  # fmt: skip
        return record.seen

    assert fit(0) == epochs[0] + epochs[1] + epochs[2]
    assert fit(2) == epochs[2]


def test_distributed_replicas_split_the_same_batches():
    strategy = two_device_strategy()
    shuffled = epoch_shuffled(_examples(), 4, seed=11)
    reference = epoch_shuffled(_examples(), 4, seed=11)
    distributed = strategy.experimental_distribute_dataset(shuffled.dataset)
    for epoch in (1, 0):
        shuffled.callback.on_epoch_begin(epoch)
        reference.callback.on_epoch_begin(epoch)
        got = [
            [i for t in strategy.experimental_local_results(b) for i in t.numpy().tolist()]
            for b in distributed
        ]
        assert got == _epoch(reference.dataset)


def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match=r"tf\.data\.Dataset.*ndarray"):
        epoch_shuffled(np.arange(4), 2, seed=0)
    with pytest.raises(ValueError, match=r"finite.*repeat"):
        epoch_shuffled(_examples().repeat(), 2, seed=0)
    unknown = _examples().filter(lambda i: i % 2 == 0)
    with pytest.raises(ValueError, match=r"unknown cardinality.*buffer_size"):
        epoch_shuffled(unknown, 2, seed=0)
    assert sorted(_flat(_epoch(epoch_shuffled(unknown, 2, seed=0, buffer_size=8).dataset))) == [
        0, 2, 4, 6, 8
    ]  # fmt: skip
    for kwargs, name in [
        ({"global_batch_size": 0}, "global_batch_size"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"buffer_size": 0}, "buffer_size"),
        ({"drop_remainder": 1}, "drop_remainder"),
    ]:
        args = {"global_batch_size": 2, "seed": 0, **kwargs}
        with pytest.raises(ValueError, match=name):
            epoch_shuffled(_examples(), **args)
