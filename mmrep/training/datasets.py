"""Input for data-parallel training: global batches, per-replica batches, input sharding.

With a `tf.distribute` strategy every step consumes one *global* batch, which is split
into `num_replicas_in_sync` per-replica batches (one per GPU, TPU core or worker
device); each replica computes the gradient of its share and the gradients are summed,
so a step equals one step on the global batch on one device. Keep the global batch when
the replica count changes and the training dynamics stay the same (scale it, and the
learning rate, to use more replicas for more throughput).

`distribute_dataset` batches single examples to the global batch and sets the dataset's
auto-shard policy, which decides how a multi-worker job splits the input between workers
(`tf.data.experimental.AutoShardPolicy`):

- `"auto"` (TensorFlow's AUTO): `"file"` when the dataset reads files
  (`TFRecordDataset`, `TextLineDataset`... from a list of files), else `"data"`.
- `"file"`: worker `i` reads only the files `i, i + W, i + 2W, ...` of `W` workers. Each
  worker reads a fraction of the data, but the workers' batches are no longer one global
  batch of the single-process order. Give at least as many files as workers: with
  fewer, `"auto"` and `"file"` both fail at the first batch ("Could not apply FILE
  based sharding"); use `"data"` then.
- `"data"`: every worker reads everything and keeps its slice of each global batch:
  exactly the single-process global batches, at the cost of every worker reading all
  input. Needs the same example order on every worker (shuffle with a fixed seed).
- `"off"`: no sharding; every worker sees every example (duplicates across workers).

On one worker (one process, any number of GPUs) the policy has no effect.

In a custom training loop, distribute the batched dataset yourself and run the step on
every replica; each replica receives `per_replica_batch_size(...)` examples:

```python
dataset = distribute_dataset(examples, global_batch_size=64, strategy=strategy)
for batch in strategy.experimental_distribute_dataset(dataset):
    strategy.run(train_step, args=(batch,))  # inside a tf.function
```
"""

import tensorflow as tf

from mmrep.utils.arguments import is_int

_POLICIES = {
    "auto": tf.data.experimental.AutoShardPolicy.AUTO,
    "file": tf.data.experimental.AutoShardPolicy.FILE,
    "data": tf.data.experimental.AutoShardPolicy.DATA,
    "off": tf.data.experimental.AutoShardPolicy.OFF,
}


def per_replica_batch_size(global_batch_size, strategy=None):
    """The number of examples each replica processes per step.

    Args:
        global_batch_size: int. The examples per step over all replicas.
        strategy: `tf.distribute.Strategy` or `None` (the current strategy:
            `tf.distribute.get_strategy()`). Defaults to `None`.

    Returns:
        int. `global_batch_size // strategy.num_replicas_in_sync`.

    Raises:
        ValueError: when `global_batch_size` is not a positive int, or is not divisible
            by the strategy's `num_replicas_in_sync` (both are named).

    Example:

    >>> per_replica_batch_size(64)  # one device
    64
    """
    if not is_int(global_batch_size, 1):
        raise ValueError(
            "Expected `global_batch_size` to be a positive int. "
            f"Received: global_batch_size={global_batch_size!r}"
        )
    global_batch_size = int(global_batch_size)
    strategy = tf.distribute.get_strategy() if strategy is None else strategy
    replicas = int(strategy.num_replicas_in_sync)
    if global_batch_size % replicas:
        lower = global_batch_size // replicas * replicas
        suggestion = f"{lower} or {lower + replicas}" if lower else str(replicas)
        raise ValueError(
            f"Expected `global_batch_size` to be divisible by the number of replicas, "
            f"num_replicas_in_sync={replicas} ({type(strategy).__name__}), so that every "
            f"replica gets the same batch. Received: global_batch_size={global_batch_size} "
            f"(use e.g. {suggestion})"
        )
    return global_batch_size // replicas


def distribute_dataset(
    dataset, global_batch_size, strategy=None, shard_policy="auto", drop_remainder=None
):
    """Batches a dataset of single examples to the global batch, with a sharding policy.

    Keras `fit` under `strategy.scope()` splits each global batch into per-replica
    batches itself; a custom loop passes the result to
    `strategy.experimental_distribute_dataset` (see the module docstring).

    `dataset` must yield single examples: this function does the batching. An already
    batched dataset is not detected (an unbatched dataset of sequences has the same
    element structure, a leading unknown dimension, so no check can tell them apart);
    batching it again gives the model inputs of one more dimension, which it rejects.
    Shuffle (with a fixed seed under `"data"` sharding) and augment before calling this.

    Args:
        dataset: `tf.data.Dataset` of single examples, e.g. `(features, label)` pairs.
        global_batch_size: int. Examples per step over all replicas; divisible by
            `strategy.num_replicas_in_sync`.
        strategy: `tf.distribute.Strategy` or `None` (the current strategy).
            Defaults to `None`.
        shard_policy: `"auto"`, `"file"`, `"data"` or `"off"`: how a multi-worker job
            splits the input between workers (see the module docstring). Defaults to
            `"auto"`.
        drop_remainder: bool or `None`. Drop the last, smaller batch. `None` means
            `True` under `TPUStrategy` (XLA on TPU needs static shapes) and `False`
            otherwise. Defaults to `None`.

    Returns:
        A `tf.data.Dataset` of global batches, prefetched, with
        `options().experimental_distribute.auto_shard_policy` set.

    Raises:
        TypeError: when `dataset` is not a `tf.data.Dataset`.
        ValueError: for a bad `global_batch_size` (see `per_replica_batch_size`),
            `shard_policy` or `drop_remainder`.

    Example:

    >>> examples = tf.data.Dataset.from_tensor_slices(({"x": np.ones((10, 3))}, np.zeros(10)))
    >>> batches = distribute_dataset(examples, global_batch_size=4)
    >>> [int(x["x"].shape[0]) for x, _ in batches]
    [4, 4, 2]
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "Expected `dataset` to be a tf.data.Dataset of single examples. "
            f"Received: dataset of type {type(dataset).__name__}"
        )
    strategy = tf.distribute.get_strategy() if strategy is None else strategy
    per_replica_batch_size(global_batch_size, strategy)
    if shard_policy not in _POLICIES:
        raise ValueError(
            f"Expected `shard_policy` to be one of {sorted(_POLICIES)}. "
            f"Received: shard_policy={shard_policy!r}"
        )
    if drop_remainder is None:
        drop_remainder = isinstance(strategy, tf.distribute.TPUStrategy)
    if not isinstance(drop_remainder, bool):
        raise ValueError(
            "Expected `drop_remainder` to be a bool or None. "
            f"Received: drop_remainder={drop_remainder!r}"
        )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = _POLICIES[shard_policy]
    batched = dataset.batch(global_batch_size, drop_remainder=drop_remainder)
    return batched.with_options(options).prefetch(tf.data.AUTOTUNE)
