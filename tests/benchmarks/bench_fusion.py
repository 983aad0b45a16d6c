"""Fusion benchmarks."""

import keras
import numpy as np
import tensorflow as tf

from mmrep.fusion import ConcatFusion
from tests.benchmarks.runner import Comparison, benchmark


@benchmark("concat_fusion")
def concat_fusion(size="full"):
    """ConcatFusion (projection, layer norm, presence mask) vs the same graph in plain Keras."""
    batch, dims, width = (256, {"image": 2048, "text": 768, "audio": 128}, 256)
    if size == "smoke":
        batch, dims, width = 4, {"image": 8, "text": 6, "audio": 4}, 3
    rng = np.random.default_rng(0)
    inputs = {m: tf.constant(rng.standard_normal((batch, d)), "float32") for m, d in dims.items()}
    presence = tf.constant(rng.random((batch, len(dims))) > 0.2, "float32")
    order = list(dims)

    fusion = ConcatFusion(modalities=order, projection_dim=width, normalization="layer")
    ours = tf.function(lambda: fusion(inputs, presence=presence))

    # The reference: Dense + LayerNormalization per modality, masked by multiplication.
    dense = [keras.layers.Dense(width) for _ in order]
    norms = [keras.layers.LayerNormalization() for _ in order]

    def plain():
        parts = [
            norms[i](dense[i](inputs[m])) * presence[:, i : i + 1] for i, m in enumerate(order)
        ]
        return keras.layers.concatenate([*parts, presence])

    reference = tf.function(plain)
    return Comparison(
        mmrep=ours,
        reference=reference,
        reference_name="Keras Dense+LayerNorm, mask by multiply (tf.function)",
        work=f"batch {batch}, dims {list(dims.values())} -> 3x{width} + mask",
    )
