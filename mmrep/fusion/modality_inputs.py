"""Checks shared by the fusion layers: the `{modality: tensor}` dict, the presence mask, names.

Every fusion layer takes a dict with one tensor per modality and an optional presence mask
`[B, M]`. A modality that is missing for some examples is marked in the mask; it is never
expressed by leaving a key out or passing `None`, which a traced graph could not represent.
"""

import keras
from keras import ops


def check_modality_names(modalities, count=None, reserved=()):
    """Returns `modalities` as a list (or `None`), checked as a layer's constructor argument.

    Args:
        modalities: an iterable of str, or `None` (the layer takes the sorted input keys).
        count: int or `None`. The exact number of modalities the layer fuses, if fixed.
        reserved: names the layer uses for its own outputs.

    Raises:
        ValueError: for an empty list, a name that is not a non-empty str, repeated or
            reserved names, or the wrong count, naming what was received.
    """
    if modalities is None:
        return None
    modalities = list(modalities)
    wanted = "a non-empty list of" if count is None else f"a list of {count}"
    if (
        not modalities
        or (count is not None and len(modalities) != count)
        or len(set(modalities)) != len(modalities)
        or not all(isinstance(m, str) and m for m in modalities)
        or any(m in reserved for m in modalities)
    ):
        other_than = f" other than {list(reserved)}" if reserved else ""
        raise ValueError(
            f"Expected `modalities` to be {wanted} distinct non-empty strings{other_than}. "
            f"Received: modalities={modalities}"
        )
    return modalities


def check_floating(layer, modality, tensor):
    """Refuses a non-floating tensor for `modality` with a `TypeError` naming its dtype."""
    if not keras.backend.is_float_dtype(tensor.dtype):
        raise TypeError(
            f"{layer.name}: expected a floating tensor for modality {modality!r}. "
            f"Received dtype: {tensor.dtype}"
        )


def modality_order(layer, inputs, modalities):
    """Returns the modality order for `inputs` (a dict of tensors or shapes), checking keys.

    `modalities=None` means the sorted keys of `inputs`. Raises a `ValueError` naming the
    expected and received keys when they differ, and when a value is `None`.
    """
    if not isinstance(inputs, dict):
        raise ValueError(
            f"{layer.name}: expected a dict {{modality: tensor}}. Received: {type(inputs).__name__}"
        )
    received = sorted(inputs)
    order = list(modalities) if modalities is not None else received
    if sorted(order) != received:
        raise ValueError(
            f"{layer.name}: expected one input per modality {order} (mark missing examples "
            f"with `presence` instead of leaving a key out). Received keys: {received}"
        )
    empty = [m for m in order if inputs[m] is None]
    if empty:
        raise ValueError(
            f"{layer.name}: received `None` for modalities {empty}; pass a tensor of the "
            "right shape (any values) and mark those examples absent in `presence`."
        )
    return order


def check_presence(layer, presence, num_modalities):
    """Checks a presence mask's static shape and returns it as a bool tensor `[B, M]`.

    Bool masks are used as they are; numeric masks mean present where non-zero.
    """
    presence = ops.convert_to_tensor(presence)
    shape = tuple(presence.shape)
    if len(shape) != 2 or (shape[1] is not None and shape[1] != num_modalities):
        raise ValueError(
            f"{layer.name}: expected `presence` of shape [batch, {num_modalities}] "
            f"(one column per modality). Received shape: {shape}"
        )
    if presence.dtype == "bool":
        return presence
    return ops.not_equal(presence, ops.zeros((), presence.dtype))


def presence_column(presence, index, rank):
    """The mask of modality `index`, shaped `[B, 1, ..., 1]` to broadcast over a rank-`rank` input."""
    column = presence[:, index]
    return ops.reshape(column, (-1,) + (1,) * (rank - 1))
