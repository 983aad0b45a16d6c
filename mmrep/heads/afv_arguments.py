"""Checks of `AdversarialFisherVector`'s arguments, discriminator, statistics and inputs.

Kept apart from the layer so that the layer file holds the method: constructor argument
validation, the choice of differentiated weights (`parameters`), the discriminator's
output shape, the `statistics=` dict, the comparison of input shapes with the
discriminator's (for any structure of inputs), and the refusal of NaN/Inf inputs.
"""

import keras
import numpy as np
from keras import tree

from mmrep.arguments import is_positive_int

STATISTICS_KEYS = ("mean_score", "fisher_information")


def check_arguments(
    discriminator,
    parameters,
    subset_size,
    projection_dim,
    seed,
    batch_size,
    power_normalize,
    l2_normalize,
    epsilon,
):
    """Raises ValueError naming the first bad constructor argument of the AFV layer."""
    if not isinstance(discriminator, keras.Model):
        raise ValueError(
            "Expected `discriminator` to be a keras.Model. "
            f"Received: {type(discriminator).__name__}"
        )
    if parameters != "all" and (
        isinstance(parameters, str)
        or not isinstance(parameters, (list, tuple))
        or not parameters
        or not all(isinstance(p, str) for p in parameters)
        or len(set(parameters)) != len(parameters)
    ):
        raise ValueError(
            "Expected `parameters` to be 'all' or a non-empty list of distinct layer "
            f"names. Received: {parameters!r}"
        )
    for name, value in (("subset_size", subset_size), ("projection_dim", projection_dim)):
        if value is not None and not is_positive_int(value):
            raise ValueError(f"Expected `{name}` to be a positive int or None. Received: {value!r}")
    if subset_size is not None and projection_dim is not None:
        raise ValueError(
            "Expected at most one of `subset_size` and `projection_dim`. Received: "
            f"subset_size={subset_size}, projection_dim={projection_dim}"
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"Expected `seed` to be an int. Received: {seed!r}")
    if not is_positive_int(batch_size):
        raise ValueError(f"Expected `batch_size` to be a positive int. Received: {batch_size!r}")
    for name, value in (("power_normalize", power_normalize), ("l2_normalize", l2_normalize)):
        if not isinstance(value, bool):
            raise ValueError(f"Expected `{name}` to be a bool. Received: {value!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ValueError(f"Expected `epsilon` to be a positive float. Received: {epsilon!r}")


def resolve_parameters(discriminator, parameters, name):
    """Indices into `discriminator.weights` of the weights to differentiate, in order.

    `"all"`: its trainable weights; a list of layer names: their trainable weights, in the
    order of the names.

    Raises:
        ValueError: no trainable weight; unknown layer names (listing the known ones); a
            named layer without trainable weights.
    """
    if parameters == "all":
        chosen = discriminator.trainable_weights
        if not chosen:
            raise ValueError(
                f"{name}: the discriminator {discriminator.name!r} has no trainable weights "
                "to differentiate (is it frozen, `trainable=False`?)"
            )
    else:
        known = [layer.name for layer in discriminator.layers]
        unknown = [p for p in parameters if p not in known]
        if unknown:
            raise ValueError(
                f"{name}: `parameters` names layers {unknown} that the discriminator "
                f"{discriminator.name!r} does not have. Its layers are: {known}"
            )
        chosen = []
        for layer_name in parameters:
            weights = discriminator.get_layer(layer_name).trainable_weights
            if not weights:
                raise ValueError(
                    f"{name}: layer {layer_name!r} of `parameters` has no trainable weights"
                )
            chosen += weights
    position = {id(w): i for i, w in enumerate(discriminator.weights)}
    return tuple(position[id(w)] for w in chosen)


def check_discriminator_output(discriminator, inputs_shape, name):
    """Raises ValueError unless the discriminator maps `inputs_shape` to `[B]` or `[B, 1]`."""
    spec = discriminator.compute_output_spec(
        tree.map_shape_structure(keras.KerasTensor, inputs_shape)
    )
    shape = tuple(spec.shape) if isinstance(spec, keras.KerasTensor) else None
    if shape is None or not (len(shape) == 1 or shape[1:] == (1,)):
        got = tree.map_structure(lambda s: tuple(s.shape), spec)
        raise ValueError(
            f"{name}: expected the discriminator to output one score per example, shape "
            f"[B] or [B, 1]. Received output shape(s): {got}"
        )


def check_statistics(statistics, arrays=False):
    """Validated statistics: float64 arrays (`arrays=True`) or a config dict of lists.

    Raises:
        ValueError: not a dict with the keys `mean_score` and `fisher_information`;
            not 1-D of one length; NaN/Inf; a negative Fisher information.
    """
    if not isinstance(statistics, dict) or sorted(statistics) != sorted(STATISTICS_KEYS):
        got = sorted(statistics) if isinstance(statistics, dict) else type(statistics).__name__
        raise ValueError(
            f"Expected `statistics` to be a dict with keys {list(STATISTICS_KEYS)}. Received: {got}"
        )
    mean, fisher = (np.asarray(statistics[k], dtype="float64") for k in STATISTICS_KEYS)
    if mean.ndim != 1 or mean.shape != fisher.shape:
        raise ValueError(
            "Expected `mean_score` and `fisher_information` to be 1-D of the same length. "
            f"Received shapes {mean.shape} and {fisher.shape}"
        )
    if not (np.isfinite(mean).all() and np.isfinite(fisher).all()) or (fisher < 0).any():
        raise ValueError(
            "Expected finite statistics and a non-negative Fisher information. Received "
            "NaN, Inf or negative values"
        )
    if arrays:
        return mean, fisher
    return {"mean_score": mean.tolist(), "fisher_information": fisher.tolist()}


# === Input shapes: a shape is a tuple of ints/None; inputs may be a dict/list of them ===


def _is_shape(x):
    return isinstance(x, (tuple, list)) and all(isinstance(d, (int, type(None))) for d in x)


def _map_shapes(fn, structure):
    if _is_shape(structure) or hasattr(structure, "as_list"):
        return fn(tuple(structure))
    if isinstance(structure, dict):
        return {k: _map_shapes(fn, v) for k, v in structure.items()}
    return [_map_shapes(fn, v) for v in structure]


def shapes_without_batch(shapes):
    """The same structure of shapes with the batch axis `None`."""
    return _map_shapes(lambda s: (None, *s[1:]) if s else s, shapes)


def shapes_of(inputs):
    """The shapes (batch axis `None`) of a tensor or structure of tensors."""
    return shapes_without_batch(tree.map_structure(lambda t: tuple(t.shape), inputs))


def declared_input_shapes(model):
    """The input shapes a functional model declares (batch `None`), or `None`."""
    try:
        inputs = model.input
    except (AttributeError, ValueError):
        return None
    return shapes_of(inputs)


def shapes_match(expected, got):
    """Same structure and rank, and equal sizes wherever both are known."""
    if _is_shape(expected) or _is_shape(got):
        return (
            _is_shape(expected)
            and _is_shape(got)
            and len(expected) == len(got)
            and all(e is None or g is None or e == g for e, g in zip(expected, got, strict=True))
        )
    if isinstance(expected, dict) or isinstance(got, dict):
        return (
            isinstance(expected, dict)
            and isinstance(got, dict)
            and sorted(expected) == sorted(got)
            and all(shapes_match(expected[k], got[k]) for k in expected)
        )
    return len(expected) == len(got) and all(
        shapes_match(e, g) for e, g in zip(expected, got, strict=True)
    )


def readable_shapes(shapes):
    """Shapes as plain tuples, for error messages."""
    return _map_shapes(tuple, shapes)
