"""Concatenation fusion with optional per-modality projection and missing-modality handling."""

import keras
from keras import ops

from mmrep.utils.arguments import is_int
from mmrep.utils.modalities import (
    check_floating,
    check_modality_names,
    check_presence,
    modality_order,
    presence_column,
)

_NORMALIZATIONS = (None, "l2", "layer")


@keras.saving.register_keras_serializable(package="mmrep")
class ConcatFusion(keras.layers.Layer):
    """Concatenates per-modality features, projected and normalised, into one vector.

    The simplest fusion strategy, and the baseline every other one is measured against:
    each modality's feature is (optionally) projected to its own width, (optionally)
    normalised, and the results are concatenated in a fixed modality order. A modality
    that is missing for an example, as marked by the `presence` mask, contributes zeros,
    whatever its input holds (even NaN), and with `presence_indicators=True` the mask
    itself is appended so a downstream layer can tell "absent" from "zero".

    Inputs may be vectors `[B, D_m]` or any `[B, ..., D_m]` with the same leading
    dimensions across modalities (for example per-time-step features `[B, T, D_m]`);
    concatenation is along the last axis.

    Args:
        modalities: list of str, or `None`. The modality names, in the order their
            features are concatenated and the columns of `presence` are read. `None`
            takes the keys of the first input in mmrep's modality order
            (`mmrep.MODALITY_ORDER`). Defaults to `None`.
        projection_dim: int, dict `{modality: int}`, or `None`. Width of a learned
            linear projection applied to each modality (a dict projects only the listed
            ones). `None` concatenates the raw features. Defaults to `None`.
        projection_activation: str or `None`. Activation of the projections.
            Defaults to `None`.
        normalization: `None`, `"l2"` or `"layer"`. Normalisation applied to each
            modality after its projection: unit L2 norm (computed in float32 under
            mixed precision) or a per-modality `LayerNormalization`. Defaults to `None`.
        presence_indicators: bool. Whether to append the `M` presence flags to the
            output. Defaults to `True`.
        kernel_initializer: Initializer of the projection kernels.
            Defaults to `"glorot_uniform"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: dict `{modality: tensor}` with one floating tensor per modality. Every
            modality must be present as a key; missing examples are marked by
            `presence`, never by leaving a key out or passing `None`.
        presence: optional `[B, M]` tensor, bool or numeric (non-zero means present),
            columns in `modalities` order, or a dict `{modality: [B]}`. Its batch size
            must be the inputs'. `None` means every modality is present.

    Returns:
        `[B, ..., sum_m width_m (+ M)]`, where `width_m` is the projection width or the
        input width of modality `m`.

    Example:

    >>> fusion = ConcatFusion(modalities=["image", "text"], projection_dim=4)
    >>> out = fusion(
    ...     {"image": np.ones((2, 8), "float32"), "text": np.ones((2, 6), "float32")},
    ...     presence=np.array([[1, 1], [1, 0]], "float32"),
    ... )
    >>> tuple(out.shape)
    (2, 10)

    Reference:
        Baltrušaitis, Ahuja & Morency, "Multimodal Machine Learning: A Survey and
        Taxonomy", IEEE TPAMI 2019 (early fusion by concatenation).
    """

    def __init__(
        self,
        modalities=None,
        projection_dim=None,
        projection_activation=None,
        normalization=None,
        presence_indicators=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        modalities = check_modality_names(modalities)
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"Expected `normalization` to be one of {_NORMALIZATIONS}. "
                f"Received: normalization={normalization!r}"
            )
        self.modalities = modalities
        self.projection_dim = _check_projection_dim(projection_dim, modalities)
        self.projection_activation = projection_activation
        self.normalization = normalization
        self.presence_indicators = bool(presence_indicators)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _width(self, modality):
        if isinstance(self.projection_dim, dict):
            return self.projection_dim.get(modality)
        return self.projection_dim

    def build(self, input_shape):
        order = modality_order(self, input_shape, self.modalities)
        _check_projection_dim(self.projection_dim, order)
        ranks = {m: len(input_shape[m]) for m in order}
        if len(set(ranks.values())) != 1 or min(ranks.values()) < 2:
            raise ValueError(
                f"{self.name}: expected every modality to be `[batch, ..., features]` with "
                f"the same rank (>= 2). Received shapes: "
                f"{ {m: tuple(input_shape[m]) for m in order} }"
            )
        self._order = order
        self._projections = []
        self._norms = []
        for m in order:
            feature_dim = input_shape[m][-1]
            if feature_dim is None:
                raise ValueError(
                    f"{self.name}: the last (feature) dimension of modality {m!r} must be "
                    f"known. Received shape: {tuple(input_shape[m])}"
                )
            width = self._width(m)
            if width is not None:
                dense = keras.layers.Dense(
                    width,
                    activation=self.projection_activation,
                    kernel_initializer=self.kernel_initializer,
                    dtype=self.dtype_policy,
                    name=f"{m}_projection",
                )
                dense.build(tuple(input_shape[m]))
                self._projections.append(dense)
            else:
                self._projections.append(None)
            if self.normalization == "layer":
                norm = keras.layers.LayerNormalization(
                    dtype=self.dtype_policy, name=f"{m}_layer_norm"
                )
                norm.build(tuple(input_shape[m][:-1]) + (width or feature_dim,))
                self._norms.append(norm)

    def call(self, inputs, presence=None):
        order = modality_order(self, inputs, self._order)
        rank = len(inputs[order[0]].shape)
        if presence is not None:
            presence = check_presence(self, presence, order, inputs[order[0]])
        features = []
        for i, m in enumerate(order):
            x = inputs[m]
            check_floating(self, m, x)
            present = None if presence is None else presence_column(presence, i, rank)
            if present is not None:
                # Clear absent rows before the projection too, so that NaN or garbage in a
                # missing modality cannot reach the kernel's gradient (0 * NaN = NaN).
                x = ops.where(present, x, ops.zeros_like(x))
            if self._projections[i] is not None:
                x = self._projections[i](x)
            if self.normalization == "l2":
                x32 = ops.cast(x, "float32")
                norm = ops.sqrt(
                    ops.maximum(ops.sum(ops.square(x32), axis=-1, keepdims=True), 1e-12)
                )
                x = ops.cast(x32 / norm, self.compute_dtype)
            elif self.normalization == "layer":
                x = self._norms[i](x)
            if present is not None:
                x = ops.where(present, x, ops.zeros_like(x))
            features.append(ops.cast(x, self.compute_dtype))
        if self.presence_indicators:
            reference = features[0]
            if presence is None:
                flags = ops.ones(ops.shape(reference)[:-1] + (len(order),), self.compute_dtype)
            else:
                flags = ops.cast(presence, self.compute_dtype)
                flags = ops.reshape(flags, (-1,) + (1,) * (rank - 2) + (len(order),))
                flags = ops.broadcast_to(flags, ops.shape(reference)[:-1] + (len(order),))
            features.append(flags)
        return ops.concatenate(features, axis=-1)

    def compute_output_shape(self, inputs_shape, presence_shape=None):
        order = modality_order(self, inputs_shape, self.modalities)
        width = sum(self._width(m) or inputs_shape[m][-1] for m in order)
        if self.presence_indicators:
            width += len(order)
        return tuple(inputs_shape[order[0]][:-1]) + (width,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "modalities": self.modalities,
                "projection_dim": self.projection_dim,
                "projection_activation": self.projection_activation,
                "normalization": self.normalization,
                "presence_indicators": self.presence_indicators,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


def _check_projection_dim(projection_dim, modalities):
    """Checks `projection_dim`; returns it with its widths as Python ints."""

    def valid(width):
        return width is None or is_int(width, 1)

    def as_int(width):
        return None if width is None else int(width)

    if isinstance(projection_dim, dict):
        bad = {m: w for m, w in projection_dim.items() if not valid(w)}
        unknown = sorted(set(projection_dim) - set(modalities)) if modalities else []
        if bad or unknown:
            raise ValueError(
                "Expected `projection_dim` to map known modality names to positive ints. "
                f"Received: projection_dim={projection_dim} (modalities={modalities})"
            )
        return {m: as_int(w) for m, w in projection_dim.items()}
    if not valid(projection_dim):
        raise ValueError(
            "Expected `projection_dim` to be a positive int, a dict {modality: int}, or None. "
            f"Received: projection_dim={projection_dim!r}"
        )
    return as_int(projection_dim)
