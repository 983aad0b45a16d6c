"""Training-time corruption for fusion layers: modality dropout and denoising input noise.

- `drop_modalities`: drops whole modalities of an example at random, never all of them,
  so that a fusion model learns to work from (and, for an autoencoder, to reconstruct from)
  any subset of its modalities (Ngiam et al. train on examples with a modality zeroed);
- `corrupt`: Gaussian or masking noise on a feature vector (Vincent et al.).

Random draws take a `keras.random.SeedGenerator` (or a seed) so that the owner decides how
they are seeded.

References:
    Ngiam, Khosla, Kim, Nam, Lee & Ng, "Multimodal Deep Learning", ICML 2011.
    Vincent, Larochelle, Bengio & Manzagol, "Extracting and Composing Robust Features with
    Denoising Autoencoders", ICML 2008.
"""

import keras
from keras import ops

NOISES = (None, "gaussian", "masking")


def check_corruption(modality_dropout, noise, noise_level):
    """Checks the corruption arguments of a layer.

    Args:
        modality_dropout: float in [0, 1).
        noise: `None`, `"gaussian"` or `"masking"`.
        noise_level: float. A standard deviation >= 0 (Gaussian) or a rate in [0, 1)
            (masking).

    Raises:
        ValueError: naming the argument, what was expected and what was received.
    """
    if not 0.0 <= modality_dropout < 1.0:
        raise ValueError(
            f"Expected `modality_dropout` in [0, 1). Received: modality_dropout={modality_dropout!r}"
        )
    if noise not in NOISES:
        raise ValueError(f"Expected `noise` to be one of {NOISES}. Received: noise={noise!r}")
    if noise == "masking" and not 0.0 <= noise_level < 1.0:
        raise ValueError(
            "Expected `noise_level` (the fraction of features zeroed by masking noise) in "
            f"[0, 1). Received: noise_level={noise_level!r}"
        )
    if not noise_level >= 0.0:
        raise ValueError(f"Expected `noise_level` >= 0. Received: noise_level={noise_level!r}")


def drop_modalities(present, rate, seed):
    """Drops each present modality with probability `rate`, keeping at least one.

    When every present modality of an example would be dropped, one of them, chosen
    uniformly, is kept; the marginal drop rate of a modality with `n` present is therefore
    `rate − rateⁿ / n`. Examples with no modality present stay empty.

    Args:
        present: bool `[B, M]`, the modalities present in the input.
        rate: float in [0, 1).
        seed: a `keras.random.SeedGenerator` or an int.

    Returns:
        bool `[B, M]`, the modalities kept (a subset of `present`).
    """
    shape = ops.shape(present)
    kept = ops.logical_and(present, ops.greater_equal(keras.random.uniform(shape, seed=seed), rate))
    lost_all = ops.logical_and(ops.logical_not(ops.any(kept, axis=1)), ops.any(present, axis=1))
    score = ops.where(present, keras.random.uniform(shape, seed=seed), -1.0)
    rescued = ops.cast(ops.one_hot(ops.argmax(score, axis=1), shape[1]), "bool")
    return ops.logical_or(kept, ops.logical_and(rescued, ops.expand_dims(lost_all, 1)))


def corrupt(x, noise, level, seed):
    """Denoising-autoencoder corruption of a feature tensor.

    Args:
        x: floating tensor.
        noise: `"gaussian"` (adds `N(0, level²)`) or `"masking"` (zeroes each feature
            independently with probability `level`).
        level: float. The standard deviation or the masking rate.
        seed: a `keras.random.SeedGenerator` or an int.

    Returns:
        A tensor shaped and typed like `x`.
    """
    if noise == "gaussian":
        drawn = keras.random.normal(ops.shape(x), stddev=level, seed=seed)
        return x + ops.cast(drawn, x.dtype)
    keep = ops.greater_equal(keras.random.uniform(ops.shape(x), seed=seed), level)
    return ops.where(keep, x, ops.zeros_like(x))
