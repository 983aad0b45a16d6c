"""Tensor fusion (the M-way outer product of `[1; z_m]`) and its low-rank factorisation."""

import math

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


def _vector_dims(layer, input_shape, modalities):
    """The modality order and feature sizes, checking every input is `[batch, features]`.

    `input_shape` maps modalities to shapes or to tensors (whose shapes are read).
    """
    order = modality_order(layer, input_shape, modalities)
    shapes = {m: tuple(getattr(input_shape[m], "shape", input_shape[m])) for m in order}
    if any(len(s) != 2 or s[-1] is None for s in shapes.values()):
        raise ValueError(
            f"{layer.name}: expected every modality as [batch, features] with a known "
            f"feature size. Received shapes: {shapes}"
        )
    return order, [shapes[m][-1] for m in order]


def _augmented(layer, inputs, presence, order):
    """`[1; z_m]` per modality in the compute dtype; an absent modality gives `(1, 0, …, 0)`."""
    if presence is not None:
        presence = check_presence(layer, presence, order, inputs[order[0]])
    augmented = []
    for i, m in enumerate(order):
        z = inputs[m]
        check_floating(layer, m, z)
        z = ops.cast(z, layer.compute_dtype)
        if presence is not None:
            # `where`, not a product with the mask: 0 * NaN would still be NaN.
            z = ops.where(presence_column(presence, i, 2), z, ops.zeros((), z.dtype))
        ones = ops.ones((ops.shape(z)[0], 1), z.dtype)
        augmented.append(ops.concatenate([ones, z], axis=-1))
    return augmented


@keras.saving.register_keras_serializable(package="mmrep")
class TensorFusion(keras.layers.Layer):
    """The Tensor Fusion Network's fusion: the outer product of every `[1; z_m]`, flattened.

    Each modality vector gets a constant 1 prepended (as in the authors' code; the paper
    writes it appended) and the M-way outer product of these vectors is flattened
    row-major in `modalities` order, `[B, Π_m (D_m + 1)]`. Thanks to the constant, the
    result holds every unimodal feature (`z_m` itself), every bimodal product and so on up
    to the M-modal products; its first entry is the constant 1.

    Missing modalities: a modality marked absent in `presence` becomes `(1, 0, …, 0)`, so
    the output of that example keeps exactly the terms of the other modalities (their
    unimodal and cross-modal products) and every term involving the absent one is zero.
    What the absent input holds (even NaN) never reaches the output or the gradients.

    The output grows as the product of the widths: project modalities to a few dozen
    features first (the paper uses 32, 32 and 128), or use `LowRankTensorFusion`.

    Args:
        modalities: list of str, or `None`. The order of the outer product and of the
            columns of `presence`. `None` takes the keys of the input in mmrep's modality
            order (`mmrep.MODALITY_ORDER`). Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: dict `{modality: [B, D_m] floating tensor}`.
        presence: optional `[B, M]` tensor, bool or numeric (non-zero means present),
            columns in `modalities` order, or a dict `{modality: [B]}`. Its batch size
            must be the inputs'. `None` means every modality is present.

    Returns:
        `[B, Π_m (D_m + 1)]` in the compute dtype.

    Raises:
        ValueError: for bad `modalities`, keys that do not match them, inputs that are
            not `[batch, features]`, or a badly shaped `presence`.
        TypeError: for a non-floating input.

    Example:

    >>> fusion = TensorFusion(modalities=["audio", "text"])
    >>> out = fusion({"audio": np.ones((2, 3), "float32"), "text": np.ones((2, 4), "float32")})
    >>> tuple(out.shape)
    (2, 20)

    Reference:
        Zadeh, Chen, Poria, Cambria & Morency, "Tensor Fusion Network for Multimodal
        Sentiment Analysis", EMNLP 2017.
    """

    def __init__(self, modalities=None, **kwargs):
        super().__init__(**kwargs)
        self.modalities = check_modality_names(modalities)

    def build(self, input_shape):
        self._order, self._dims = _vector_dims(self, input_shape, self.modalities)

    def call(self, inputs, presence=None):
        order, _ = _vector_dims(self, inputs, self._order)
        augmented = _augmented(self, inputs, presence, order)
        product = augmented[0]
        for z in augmented[1:]:
            outer = ops.expand_dims(product, 2) * ops.expand_dims(z, 1)
            product = ops.reshape(outer, (-1, outer.shape[1] * outer.shape[2]))
        return product

    def compute_output_shape(self, inputs_shape, presence_shape=None):
        order, dims = _vector_dims(self, inputs_shape, self.modalities)
        return (inputs_shape[order[0]][0], math.prod(d + 1 for d in dims))

    def get_config(self):
        config = super().get_config()
        config.update({"modalities": self.modalities})
        return config


@keras.saving.register_keras_serializable(package="mmrep")
class LowRankTensorFusion(keras.layers.Layer):
    """Low-rank Multimodal Fusion: a dense layer on the tensor-fusion output, in CP form.

    Computes `h = Σ_r w_r Π_m ([1; z_m] · W_m^(r)) + b` with per-modality factors
    `W_m ∈ [rank, D_m + 1, output_dim]`, fusion weights `w ∈ [rank]` and a bias
    `b ∈ [output_dim]`. It equals `TensorFusion` followed by a dense layer whose weight
    tensor is `W[i_1, …, i_M, o] = Σ_r w_r Π_m W_m[r, i_m, o]`, without forming the
    `Π_m (D_m + 1)`-wide product; the cost is linear in the number of modalities. Any
    dense layer on the fusion of two modalities is reached with
    `rank = min(D_1, D_2) + 1`.

    Missing modalities: as in `TensorFusion`, an absent modality becomes `(1, 0, …, 0)`,
    so its factor contributes its first row `W_m[r, 0, :]`, a learned constant; what the
    absent input holds (even NaN) never reaches the output or the gradients.

    Args:
        output_dim: int. The output width.
        rank: int. The number of rank-one terms `r`.
        modalities: list of str, or `None`. The order of the modalities and of the
            columns of `presence`. `None` takes the keys of the input in mmrep's modality
            order (`mmrep.MODALITY_ORDER`). Defaults to `None`.
        kernel_initializer: Initializer of the factors and the fusion weights.
            Defaults to `"glorot_normal"` (the authors' Xavier normal).
        bias_initializer: Initializer of the bias. Defaults to `"zeros"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: dict `{modality: [B, D_m] floating tensor}`, any number of modalities.
        presence: optional `[B, M]` tensor, bool or numeric (non-zero means present),
            columns in `modalities` order, or a dict `{modality: [B]}`. Its batch size
            must be the inputs'. `None` means every modality is present.

    Returns:
        `[B, output_dim]` in the compute dtype.

    Raises:
        ValueError: for a non-positive `output_dim` or `rank`, bad `modalities`, keys
            that do not match them, inputs that are not `[batch, features]`, or a badly
            shaped `presence`.
        TypeError: for a non-floating input.

    Example:

    >>> fusion = LowRankTensorFusion(output_dim=4, rank=2, modalities=["audio", "text"])
    >>> out = fusion({"audio": np.ones((2, 3), "float32"), "text": np.ones((2, 5), "float32")})
    >>> tuple(out.shape)
    (2, 4)

    Reference:
        Liu, Shen, Lakshminarasimhan, Liang, Zadeh & Morency, "Efficient Low-rank
        Multimodal Fusion with Modality-Specific Factors", ACL 2018.
    """

    def __init__(
        self,
        output_dim,
        rank,
        modalities=None,
        kernel_initializer="glorot_normal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("output_dim", output_dim), ("rank", rank)):
            if not is_int(value, 1):
                raise ValueError(f"Expected `{name}` to be a positive int. Received: {value!r}")
        self.output_dim = int(output_dim)
        self.rank = int(rank)
        self.modalities = check_modality_names(modalities)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self._order, dims = _vector_dims(self, input_shape, self.modalities)
        self.factors = [
            self.add_weight(
                shape=(self.rank, dim + 1, self.output_dim),
                initializer=self.kernel_initializer,
                name=f"{m}_factor",
            )
            for m, dim in zip(self._order, dims, strict=True)
        ]
        self.fusion_weights = self.add_weight(
            shape=(self.rank,), initializer=self.kernel_initializer, name="fusion_weights"
        )
        self.bias = self.add_weight(
            shape=(self.output_dim,), initializer=self.bias_initializer, name="bias"
        )

    def call(self, inputs, presence=None):
        order, _ = _vector_dims(self, inputs, self._order)
        product = None
        for z, factor in zip(_augmented(self, inputs, presence, order), self.factors, strict=True):
            term = ops.einsum("bi,rio->bro", z, ops.cast(factor, self.compute_dtype))
            product = term if product is None else product * term
        weights = ops.cast(self.fusion_weights, self.compute_dtype)
        return ops.einsum("bro,r->bo", product, weights) + ops.cast(self.bias, self.compute_dtype)

    def compute_output_shape(self, inputs_shape, presence_shape=None):
        order, _ = _vector_dims(self, inputs_shape, self.modalities)
        return (inputs_shape[order[0]][0], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "rank": self.rank,
                "modalities": self.modalities,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
