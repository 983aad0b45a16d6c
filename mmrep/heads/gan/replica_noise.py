"""Gaussian noise for a global batch, drawn once and split among `tf.distribute` replicas.

A `SeedGenerator` held by a model is mirrored: under `MirroredStrategy` every replica
has the same seed state, so `keras.random.normal(..., seed=generator)` would give every
replica the same noise (the same latent vectors on every device). Drawing the noise for
the global batch and letting each replica take its own rows gives replicas different
noise, and the same noise as one device on the same global batch, whatever the number of
replicas (so training with a strategy matches training without one). The extra cost is
`num_replicas` times the random numbers, small beside the networks.
"""

import keras
from keras import ops

from mmrep.losses.cross_replica import gather_batch


def global_batch_rows(x):
    """Where this replica's shard lies in the global batch.

    Args:
        x: tensor `[B_local, ...]`, this replica's shard.

    Returns:
        A tuple `(offset, global_size, local_size)` (ints or int scalar tensors): the
        global batch has `global_size` rows and this shard is rows
        `offset : offset + local_size`. Outside a strategy, `(0, B, B)`.
    """
    local = ops.shape(x)[0]
    gathered, offset = gather_batch(ops.zeros((local, 1)), differentiable=False)
    return offset, ops.shape(gathered)[0], local


def replica_normal(rows, shape, seed_generator):
    """Standard normal noise `[local_size, *shape]`: this replica's rows of a global draw.

    Args:
        rows: the tuple of `global_batch_rows`.
        shape: tuple. The shape of one example's noise.
        seed_generator: `keras.random.SeedGenerator`.

    Returns:
        Float32 tensor `[local_size, *shape]`.
    """
    offset, total, local = rows
    noise = keras.random.normal((total, *shape), seed=seed_generator)
    return noise[offset : offset + local]
