"""per_replica_batch_size and distribute_dataset: batching, shard options, replica splits.

References: numpy slices of the examples (the global batches in order, and each
replica's contiguous share of them), and a one-device `fit` on the same global batches
for a MirroredStrategy `fit` on two logical CPUs. How the shard policies split files
between real workers is tested in test_multi_worker.py.
"""

from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.training import distribute_dataset, per_replica_batch_size
from tests.harness import two_device_strategy

POLICY = tf.data.experimental.AutoShardPolicy


def _examples(n=10):
    rng = np.random.default_rng(0)
    x = {
        "image": rng.standard_normal((n, 3)).astype("float32"),
        "presence": (rng.uniform(size=(n, 2)) > 0.3).astype("float32"),
    }
    y = np.arange(n, dtype="int32")
    return x, y


def test_per_replica_batch_size():
    assert per_replica_batch_size(8, two_device_strategy()) == 4
    assert per_replica_batch_size(8) == 8  # no scope: the default strategy, one replica
    with two_device_strategy().scope():
        assert per_replica_batch_size(8) == 4  # the current strategy


def test_indivisible_global_batch_names_both_numbers():
    with pytest.raises(
        ValueError,
        match=r"num_replicas_in_sync=2 .*Received: global_batch_size=7 \(use e.g. 6 or 8",
    ):
        per_replica_batch_size(7, two_device_strategy())
    with pytest.raises(ValueError, match="global_batch_size=1 "):
        distribute_dataset(tf.data.Dataset.range(4), 1, two_device_strategy())


@pytest.mark.parametrize("value", [0, -4, True, 8.0, "8", None])
def test_bad_global_batch_size_is_named(value):
    with pytest.raises(ValueError, match=f"positive int. Received: global_batch_size={value!r}"):
        per_replica_batch_size(value)


def test_batches_to_the_global_batch_in_order():
    x, y = _examples(10)
    batches = list(distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)), 4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]  # the remainder is kept by default
    for i, (bx, by) in enumerate(batches):
        rows = slice(4 * i, 4 * i + 4)
        np.testing.assert_array_equal(by.numpy(), y[rows])
        for key in x:
            np.testing.assert_array_equal(bx[key].numpy(), x[key][rows])
    dropped = distribute_dataset(tf.data.Dataset.from_tensor_slices(y), 4, drop_remainder=True)
    assert [len(b) for b in dropped] == [4, 4]
    assert dropped.element_spec.shape.as_list() == [4]  # static, as TPUs need


def test_tpu_strategy_drops_the_remainder_by_default():
    tpu = mock.Mock(spec=tf.distribute.TPUStrategy, num_replicas_in_sync=2)
    batches = distribute_dataset(tf.data.Dataset.range(10), 4, tpu)
    assert [len(b) for b in batches] == [4, 4]
    kept = distribute_dataset(tf.data.Dataset.range(10), 4, tpu, drop_remainder=False)
    assert [len(b) for b in kept] == [4, 4, 2]


@pytest.mark.parametrize(
    ("name", "policy"),
    [("auto", POLICY.AUTO), ("file", POLICY.FILE), ("data", POLICY.DATA), ("off", POLICY.OFF)],
)
def test_shard_policy_is_set(name, policy):
    dataset = distribute_dataset(tf.data.Dataset.range(8), 4, shard_policy=name)
    assert dataset.options().experimental_distribute.auto_shard_policy == policy


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match=r"tf.data.Dataset of single examples. .*type ndarray"):
        distribute_dataset(np.zeros((4, 2)), 2)
    with pytest.raises(ValueError, match=r"one of \['auto', 'data', 'file', 'off'\]. .*'files'"):
        distribute_dataset(tf.data.Dataset.range(4), 2, shard_policy="files")
    with pytest.raises(ValueError, match=r"bool or None. Received: drop_remainder='yes'"):
        distribute_dataset(tf.data.Dataset.range(4), 2, drop_remainder="yes")


def test_each_replica_gets_its_contiguous_share_of_the_global_batch():
    strategy = two_device_strategy()
    x, y = _examples(16)
    batches = distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)), 8, strategy)
    steps = list(strategy.experimental_distribute_dataset(batches))
    assert len(steps) == 2
    for step, (bx, by) in enumerate(steps):
        for replica, local in enumerate(strategy.experimental_local_results(by)):
            start = 8 * step + 4 * replica
            np.testing.assert_array_equal(local.numpy(), y[start : start + 4])
        for replica, local in enumerate(strategy.experimental_local_results(bx["image"])):
            start = 8 * step + 4 * replica
            np.testing.assert_array_equal(local.numpy(), x["image"][start : start + 4])


def _model():
    inputs = {
        "image": keras.Input((3,), name="image"),
        "presence": keras.Input((2,), name="presence"),
    }
    joined = keras.layers.Concatenate()([inputs["image"], inputs["presence"]])
    hidden = keras.layers.Dense(4, activation="tanh")(joined)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_mirrored_fit_on_it_matches_one_device_fit_on_the_global_batches():
    x, _ = _examples(16)
    targets = np.random.default_rng(1).standard_normal((16, 1)).astype("float32")

    def train(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = _model()
        start = model.get_weights()
        examples = tf.data.Dataset.from_tensor_slices((x, targets))
        history = model.fit(
            distribute_dataset(examples, 8, strategy), epochs=1, shuffle=False, verbose=0
        )
        return start, model.get_weights(), history.history["loss"]

    one_start, one_weights, one_loss = train(tf.distribute.get_strategy())
    two_start, two_weights, two_loss = train(two_device_strategy())
    for a, b in zip(two_start, one_start, strict=True):
        np.testing.assert_array_equal(a, b)
    assert max(np.abs(a - b).max() for a, b in zip(one_weights, one_start, strict=True)) > 1e-3
    np.testing.assert_allclose(two_loss, one_loss, rtol=1e-5)
    for a, b in zip(two_weights, one_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
