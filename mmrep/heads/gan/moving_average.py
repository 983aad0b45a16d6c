"""An exponential moving average of a model's weights, held in a copy of the model.

GAN samples are better from a moving average of the generator's weights than from the
generator itself (Yazıcı et al., "The Unusual Effectiveness of Averaging in GAN
Training", ICLR 2019); the Adversarial Fisher Vector code averages its generator so
(`p_ema ← 0.9·p_ema + 0.1·p` after each update) and also uses the average in the
generator's regulariser.
"""

import keras
from keras import ops


def moving_average_copy(model, name=None):
    """A non-trainable copy of `model` (same architecture, same weights) to average into.

    Args:
        model: keras.Model that serialises (functional, Sequential, or a registered class).
        name: str or `None`. The copy's name. Defaults to `f"{model.name}_ema"`.

    Returns:
        A new `keras.Model` with `trainable=False` and `model`'s weights.

    Raises:
        ValueError: if the copy rebuilt from `model`'s config has other weights.
    """
    serialized = keras.saving.serialize_keras_object(model)
    if isinstance(serialized.get("config"), dict) and "name" in serialized["config"]:
        serialized["config"]["name"] = name or f"{model.name}_ema"
    copy = keras.saving.deserialize_keras_object(serialized)
    shapes = [tuple(v.shape) for v in copy.weights]
    expected = [tuple(v.shape) for v in model.weights]
    if shapes != expected:
        raise ValueError(
            f"Could not copy {model.name!r} from its config for a moving average: the copy "
            f"has weights {shapes}, the model {expected}"
        )
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return copy


def update_moving_average(average, model, decay):
    """`p_avg ← decay·p_avg + (1 − decay)·p` for every float weight of `model`.

    Every float weight is averaged, trainable or not (so batch-normalisation statistics
    follow too); integer state such as seed-generator counters is left alone.

    Args:
        average: keras.Model. The copy from `moving_average_copy(model)`.
        model: keras.Model. The model being trained.
        decay: float in [0, 1].
    """
    for averaged, weight in zip(average.weights, model.weights, strict=True):
        if keras.backend.is_float_dtype(weight.dtype):
            new = decay * averaged + (1.0 - decay) * ops.cast(weight, averaged.dtype)
            averaged.assign(new)
