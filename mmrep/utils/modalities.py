"""The one modality order of mmrep: image, text, audio, video, then any other names sorted.

Every place that lays modalities side by side uses it: the columns of a presence mask
(`from_manifest`, the main job, export metadata), a fusion layer's default `modalities`,
the order of concatenated features. A manifest with columns `text,image` and a fusion
layer built from a dict `{"text": ..., "image": ...}` therefore agree on which presence
column is which, whatever order the names arrived in.

A fusion layer takes a dict with one tensor per modality and an optional presence mask,
`[B, M]` in the layer's modality order or a dict `{modality: [B]}`. A modality that is
missing for some examples is marked in the mask; it is never expressed by leaving a key
out or passing `None`, which a traced graph could not represent.
"""

import keras
import tensorflow as tf
from keras import ops

from mmrep.utils.masks import as_bool_mask

MODALITY_ORDER = ("image", "text", "audio", "video")


def ordered_modalities(names):
    """`names` in mmrep's modality order: the known modalities first, then the rest sorted.

    Args:
        names: an iterable of distinct str, such as the keys of a `{modality: tensor}` dict.

    Returns:
        list of str.

    Example:

    >>> ordered_modalities(["video", "depth", "text", "image", "accelerometer"])
    ['image', 'text', 'video', 'accelerometer', 'depth']
    """
    names = list(names)
    known = [m for m in MODALITY_ORDER if m in names]
    return known + sorted(m for m in names if m not in MODALITY_ORDER)


def check_modality_names(modalities, count=None, reserved=()):
    """Returns `modalities` as a list (or `None`), checked as a layer's constructor argument.

    Args:
        modalities: an iterable of str, or `None` (the layer takes its input keys in
            mmrep's modality order).
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

    `modalities=None` means the keys of `inputs` in mmrep's modality order
    (`ordered_modalities`). Raises a `ValueError` naming the expected and received keys
    when they differ, and when a value is `None`.
    """
    if not isinstance(inputs, dict):
        raise ValueError(
            f"{layer.name}: expected a dict {{modality: tensor}}. Received: {type(inputs).__name__}"
        )
    received = sorted(inputs)
    order = list(modalities) if modalities is not None else ordered_modalities(received)
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


def check_presence(layer, presence, modalities, reference=None):
    """Checks a presence mask and returns it as a bool tensor `[B, M]` in `modalities` order.

    Args:
        layer: the layer checking (for its name in messages).
        presence: a tensor `[B, M]` (bool, or numeric: non-zero means present) whose
            columns follow `modalities`, or a dict `{modality: [B]}` with one entry per
            modality (stacked into columns in `modalities` order).
        modalities: list or tuple of str, the modality order; or the count `M` (an int,
            or a scalar tensor when only known at run time) where the modalities have no
            names (then a dict mask is refused).
        reference: a tensor `[B, ...]` of the same examples, or `None`. When given, the
            mask's batch size must equal its batch size: statically when both are known,
            else by an in-graph assert (XLA drops asserts).

    Returns:
        A bool tensor `[B, M]`.

    Raises:
        ValueError: for a dict with other keys, a mask that is not `[batch, M]`, or a batch
            size other than `reference`'s, naming what was expected and what came.
    """
    names = list(modalities) if isinstance(modalities, (list, tuple)) else None
    count = len(names) if names is not None else modalities
    if isinstance(presence, dict):
        if names is None or sorted(presence) != sorted(names):
            expected = f"the keys {names}" if names is not None else "a tensor [batch, M]"
            raise ValueError(
                f"{layer.name}: expected `presence` as {expected}. "
                f"Received a dict with keys: {sorted(presence)}"
            )
        columns = [ops.convert_to_tensor(presence[m]) for m in names]
        bad = {m: tuple(c.shape) for m, c in zip(names, columns, strict=True) if len(c.shape) != 1}
        if bad:
            raise ValueError(
                f"{layer.name}: expected each entry of a `presence` dict to be [batch]. "
                f"Received shapes: {bad}"
            )
        presence = ops.stack([as_bool_mask(c) for c in columns], axis=1)
    presence = ops.convert_to_tensor(presence)
    shape = tuple(presence.shape)
    static_count = count if isinstance(count, int) else None
    if len(shape) != 2 or (None not in (shape[1], static_count) and shape[1] != static_count):
        columns = f"one column per modality, in the order {names}" if names else "one per modality"
        raise ValueError(
            f"{layer.name}: expected `presence` of shape [batch, {count}] ({columns}). "
            f"Received shape: {shape}"
        )
    if reference is not None:
        presence = check_presence_batch(layer, presence, reference)
    return as_bool_mask(presence)


def check_presence_batch(layer, presence, reference):
    """`presence`, after checking its batch size against `reference`'s (no broadcasting).

    A static mismatch is a `ValueError` naming `layer`; otherwise, in a TensorFlow graph,
    an in-graph assertion the returned tensor depends on.
    """
    expected, received = reference.shape[0], presence.shape[0]
    if expected is not None and received is not None:
        if expected != received:
            raise ValueError(
                f"{layer.name}: expected `presence` with one row per example ({expected} "
                f"examples). Received {received} rows: shape {tuple(presence.shape)}"
            )
        return presence
    if tf.executing_eagerly() or keras.backend.backend() != "tensorflow":
        return presence
    if isinstance(presence, keras.KerasTensor) or isinstance(reference, keras.KerasTensor):
        return presence
    check = tf.debugging.assert_equal(
        tf.shape(presence)[0],
        tf.shape(reference)[0],
        message=f"{layer.name}: `presence` must have one row per example of the inputs",
    )
    with tf.control_dependencies([check]):
        return tf.identity(presence)


def presence_column(presence, index, rank):
    """The mask of modality `index`, shaped `[B, 1, ..., 1]` to broadcast over a rank-`rank` input."""
    column = presence[:, index]
    return ops.reshape(column, (-1,) + (1,) * (rank - 1))
