"""Gathering a batch across the replicas of a `tf.distribute` strategy (global negatives).

Contrastive losses and within-batch retrieval metrics compare every example with every
other one. Under data parallelism (`MirroredStrategy`, `MultiWorkerMirroredStrategy`)
each replica sees only its shard of the global batch; gathering the other replicas'
embeddings makes the negatives (or the retrieval gallery) the whole global batch, as in
CLIP (Radford et al. 2021) and SimCLR (Chen et al. 2020), whose batches span many devices.

Gradients. `tf.distribute.ReplicaContext.all_gather` has a custom gradient: the upstream
gradients of the gathered tensor are summed over replicas (an all-reduce) and each
replica keeps the rows of its own shard. So the gradient that reaches a replica's
embeddings through the gathered copy is the sum, over all replicas' losses, of the
gradients those losses send to these rows. Keras then sums the replicas' weight
gradients; together this is exactly the gradient of the sum of the replicas' losses, i.e.
the single-device gradient of the global-batch loss when each replica returns its share
of it (see `mmrep.losses.contrastive`).

Outside a strategy, in a cross-replica context, with one replica, or on a backend other
than TensorFlow, gathering is a no-op.
"""

import keras


def _replica_context():
    """The current replica context when it spans more than one replica, else `None`."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    # `None` means a cross-replica context (e.g. eager code under `strategy.scope()`),
    # where tensors already hold the whole batch.
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def num_replicas_in_sync():
    """The number of replicas whose gradients are summed in the current step.

    Returns:
        int. `num_replicas_in_sync` of the current replica context, or 1 outside one.
    """
    context = _replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def strategy_replicas():
    """The replica count that Keras divides a `Loss`'s mean by (1 outside a strategy).

    Unlike `num_replicas_in_sync`, this is the current strategy's count even in a
    cross-replica context, as in `keras.losses.Loss`'s reduction.

    Returns:
        int.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def gather_batch(values, differentiable=True):
    """Concatenates a batch from every replica along axis 0, in replica order.

    Args:
        values: a tensor or a list of tensors `[B_local, ...]` with the same batch size.
        differentiable: bool. Whether gradients flow back through the gathered copy (to
            the replica that owns each row; see the module docstring). Masks and other
            values without a gradient should pass `False`. Defaults to `True`.

    Returns:
        A tuple `(gathered, offset)`: `gathered` has the structure of `values` with
        tensors `[B_global, ...]`, and `offset` is the row of `gathered` where this
        replica's shard starts (an int32 scalar tensor, or the int `0` when gathering
        is a no-op, in which case `gathered` is `values` itself).
    """
    context = _replica_context()
    if context is None:
        return values, 0
    import tensorflow as tf

    flat = values if isinstance(values, (list, tuple)) else [values]
    if not differentiable:
        flat = [tf.stop_gradient(v) for v in flat]
    gathered = context.all_gather(list(flat), axis=0)
    if not differentiable:
        gathered = [tf.stop_gradient(v) for v in gathered]
    # Shards may differ in size (the last batch of an epoch), so the offset is the sum of
    # the sizes of the replicas before this one rather than `id * B_local`.
    sizes = context.all_gather(tf.shape(flat[0])[:1], axis=0)
    before = tf.range(context.num_replicas_in_sync) < context.replica_id_in_sync_group
    offset = tf.reduce_sum(tf.where(before, sizes, tf.zeros_like(sizes)))
    if isinstance(values, (list, tuple)):
        return type(values)(gathered), offset
    return gathered[0], offset
