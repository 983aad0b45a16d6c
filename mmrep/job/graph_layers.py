"""Small glue layers of the main job's graph: presence columns and gates, constants, a
masked mean.

They keep the job's models plain functional graphs of registered layers, so that a saved
`model.keras` reloads with `keras.models.load_model` and nothing but mmrep imported.
"""

import keras
import tensorflow as tf
from keras import ops

from mmrep.utils.arguments import is_int
from mmrep.utils.masks import as_bool_mask
from mmrep.utils.modalities import check_presence_batch
from mmrep.utils.value_checks import checked_flags


def _check_rank2(layer, name, shape):
    if len(shape) != 2:
        raise ValueError(
            f"{layer.name}: expected `{name}` of shape [batch, features]. "
            f"Received: shape={tuple(shape)}"
        )


@keras.saving.register_keras_serializable(package="mmrep")
class SelectColumns(keras.layers.Layer):
    """Picks columns of a `[B, M]` tensor, e.g. a pair's presence flags out of four.

    Args:
        columns: list of ints. The columns, in output order.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        inputs: tensor `[B, M]`.

    Returns:
        `[B, len(columns)]`.

    Raises:
        ValueError: for an empty or non-int `columns`, or an input that is not `[B, M]`
            with `M` > every column.
    """

    def __init__(self, columns, **kwargs):
        super().__init__(**kwargs)
        columns = list(columns)
        if not columns or not all(is_int(c, 0) for c in columns):
            raise ValueError(
                f"Expected `columns` to be a non-empty list of ints >= 0. Received: {columns}"
            )
        self.columns = [int(c) for c in columns]

    def call(self, inputs):
        _check_rank2(self, "inputs", inputs.shape)
        width = inputs.shape[-1]
        if width is not None and max(self.columns) >= width:
            raise ValueError(
                f"{self.name}: columns {self.columns} do not exist in an input of "
                f"{width} columns. Received: shape={tuple(inputs.shape)}"
            )
        return ops.take(inputs, self.columns, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.columns))

    def get_config(self):
        return {**super().get_config(), "columns": self.columns}


@keras.saving.register_keras_serializable(package="mmrep")
class BatchConstant(keras.layers.Layer):
    """A constant vector repeated for every example of a reference batch.

    Gives a single-modality model its fixed presence mask (`[1, 0, 0, 0]`) and the zero
    vectors that stand for the absent modalities (the fusion never reads them).

    Args:
        value: list of floats. The vector `[D]`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        reference: any tensor whose first axis is the batch.

    Returns:
        `[B, D]` in the compute dtype.

    Raises:
        ValueError: for an empty `value`.
    """

    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        value = [float(v) for v in value]
        if not value:
            raise ValueError("Expected `value` to be a non-empty list of numbers. Received: []")
        self.value = value

    def call(self, reference):
        batch = ops.shape(reference)[0]
        row = ops.convert_to_tensor(self.value, dtype=self.compute_dtype)
        return ops.broadcast_to(row[None, :], (batch, len(self.value)))

    def compute_output_shape(self, reference_shape):
        return (reference_shape[0], len(self.value))

    def compute_output_spec(self, reference):
        return keras.KerasTensor((reference.shape[0], len(self.value)), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "value": self.value}


@keras.saving.register_keras_serializable(package="mmrep")
class PresentMean(keras.layers.Layer):
    """The mean of the embeddings of the modalities an example has (zeros with none).

    Fuses coordinated embeddings (one per modality, in one space) into one vector: with a
    single modality present it is that modality's embedding, so the fused space and each
    modality's space coincide. Absent embeddings are left out with `ops.where` (NaN in
    them reaches neither the output nor a gradient); the mean is computed in float32.

    Args:
        modalities: list of str. The modality names, in the column order of `presence`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: dict `{modality: [B, D]}`, one entry per name of `modalities`.
        presence: `[B, M]`, numeric or bool (non-zero: present).

    Returns:
        `[B, D]` in the compute dtype.

    Raises:
        ValueError: for an empty or repeated `modalities`, inputs that miss a modality or
            differ in shape, or a presence that is not `[B, M]`.
    """

    def __init__(self, modalities, **kwargs):
        super().__init__(**kwargs)
        modalities = [str(m) for m in modalities]
        if not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(
                f"Expected `modalities` to be distinct names. Received: modalities={modalities}"
            )
        self.modalities = modalities

    def _check(self, inputs_shape, presence_shape):
        if not isinstance(inputs_shape, dict) or sorted(inputs_shape) != sorted(self.modalities):
            got = sorted(inputs_shape) if isinstance(inputs_shape, dict) else inputs_shape
            raise ValueError(
                f"{self.name}: expected a dict with the keys {self.modalities}. Received: {got}"
            )
        shapes = {tuple(inputs_shape[m])[1:] for m in self.modalities}
        ranks = {len(inputs_shape[m]) for m in self.modalities}
        if len(shapes) != 1 or ranks != {2}:
            raise ValueError(
                f"{self.name}: expected embeddings [batch, D] of one shape. Received shapes: "
                f"{ {m: tuple(inputs_shape[m]) for m in self.modalities} }"
            )
        _check_rank2(self, "presence", presence_shape)
        if presence_shape[-1] not in (None, len(self.modalities)):
            raise ValueError(
                f"{self.name}: expected `presence` with one column per modality "
                f"({len(self.modalities)}). Received: shape={tuple(presence_shape)}"
            )

    def call(self, inputs, presence):
        self._check({m: v.shape for m, v in inputs.items()}, presence.shape)
        present = ops.not_equal(ops.cast(presence, "float32"), 0)
        stacked = ops.stack([ops.cast(inputs[m], "float32") for m in self.modalities], axis=1)
        kept = ops.where(present[..., None], stacked, ops.zeros_like(stacked))
        count = ops.sum(ops.cast(present, "float32"), axis=1, keepdims=True)
        mean = ops.sum(kept, axis=1) / ops.maximum(count, 1.0)
        return ops.cast(mean, self.compute_dtype)

    def compute_output_shape(self, inputs_shape, presence_shape=None):
        return tuple(inputs_shape[self.modalities[0]])

    def get_config(self):
        return {**super().get_config(), "modalities": self.modalities}


@keras.saving.register_keras_serializable(package="mmrep")
class LengthFloor(keras.layers.Layer):
    """`maximum(lengths, minimum)`: an absent clip's length 0 made a length the encoder takes.

    A row without audio carries a zero-length placeholder (`from_manifest`), which
    `VGGish` refuses; the fusion never reads that row's audio vector (its presence is 0),
    so any valid length will do.

    Args:
        minimum: int. The smallest length. Defaults to `1`.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        lengths: integer tensor `[B]`.

    Returns:
        The lengths, at least `minimum`, same dtype.
    """

    def __init__(self, minimum=1, **kwargs):
        super().__init__(**kwargs)
        if not is_int(minimum, 1):
            raise ValueError(f"Expected `minimum` to be an int >= 1. Received: {minimum!r}")
        self.minimum = int(minimum)

    def call(self, lengths):
        return ops.maximum(lengths, ops.cast(self.minimum, lengths.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, lengths):
        return keras.KerasTensor(lengths.shape, dtype=lengths.dtype)

    def get_config(self):
        return {**super().get_config(), "minimum": self.minimum}


@keras.saving.register_keras_serializable(package="mmrep")
class PresenceGate(keras.layers.Layer):
    """A modality's inputs with the rows of the examples that lack it replaced by zeros.

    The presence-mask contract: a missing modality's values are never read. An encoder
    reads every row it is given, and checks it (finite samples, pixels in range, ids in
    the vocabulary), so this layer stands between a model's inputs and a modality's
    encoder: where the modality's presence column is 0, each of its inputs becomes zeros
    (numbers), `False` (masks) or `""` (strings). NaN, infinities, int16-scale audio,
    lengths or ids out of range in such a row then reach neither the encoder's checks,
    nor its batch statistics, nor an output or a gradient; the encoder computes what it
    would on zeros there, and the fusion leaves those rows out anyway.

    The column itself is checked: its values must be 0 or 1 (0.5 or NaN is an error, not
    "present"), and the presence must have one row per example of the inputs (a `[1, M]`
    presence would otherwise broadcast over a batch). Eagerly a `ValueError`; in a graph
    an in-graph assertion (`InvalidArgumentError` when run; XLA compiles it away).

    Args:
        column: int. The modality's column of the presence mask.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        inputs: a tensor `[B, ...]` or a flat dict of them: what the modality's encoder
            reads (a waveform and its lengths, frames and their mask, strings or ids).
            A gate shared by several functional graphs is best called on one tensor at
            a time: Keras loses track of a layer's outputs when a later call gives it
            another structure.
        presence: `[B, M]`, float 0/1 or bool, `M > column`.

    Returns:
        `inputs`' structure, each tensor of its own shape and dtype.

    Raises:
        ValueError: for a `column` that is not an int >= 0, a presence that is not
            `[B, M]` with `M > column`, another batch size than the inputs', or (eagerly)
            values other than 0 and 1.

    Example:

    >>> gate = PresenceGate(1)
    >>> audio = np.array([[0.1, 0.2], [np.nan, 9e3]], "float32")
    >>> gated = gate(audio, presence=np.array([[1, 1], [1, 0]], "float32"))
    >>> gated.numpy()[1].tolist()
    [0.0, 0.0]
    """

    def __init__(self, column, **kwargs):
        super().__init__(**kwargs)
        if not is_int(column, 0):
            raise ValueError(f"Expected `column` to be an int >= 0. Received: column={column!r}")
        self.column = int(column)
        # Inputs keep their dtypes (uint8 pixels, strings, int lengths): no autocast.
        self.autocast = False

    def _check_presence_shape(self, shape):
        _check_rank2(self, "presence", shape)
        if shape[-1] is not None and self.column >= shape[-1]:
            raise ValueError(
                f"{self.name}: column {self.column} does not exist in a presence of "
                f"{shape[-1]} columns. Received: shape={tuple(shape)}"
            )

    def _present(self, presence):
        self._check_presence_shape(presence.shape)
        flags = presence[:, self.column]
        what = f"presence flags (column {self.column})"
        return as_bool_mask(checked_flags(flags, self.name, what))

    def call(self, inputs, presence):
        present = self._present(tf.convert_to_tensor(presence))

        def gate(x):
            x = tf.convert_to_tensor(x)
            keep = check_presence_batch(self, present, x)
            keep = tf.reshape(keep, [-1] + [1] * (len(x.shape) - 1))
            return tf.where(keep, x, tf.zeros_like(x))

        return keras.tree.map_structure(gate, inputs)

    def compute_output_spec(self, inputs, presence):
        self._check_presence_shape(presence.shape)
        return keras.tree.map_structure(lambda x: keras.KerasTensor(x.shape, dtype=x.dtype), inputs)

    def get_config(self):
        return {**super().get_config(), "column": self.column}
