"""Context Gating: a learned sigmoid gate that re-weights each feature by the whole vector.

Miech, Laptev & Sivic, "Learnable pooling with Context Gating for video classification",
2017, eq. 2: `y = sigmoid(W x + b) ⊙ x`. The gate lets the features of a pooled
representation suppress or emphasise each other (capturing their dependencies) at the cost
of one `D x D` matrix; the LOUPE classifier applies it after the pooled projection.
"""

import keras
from keras import ops

from mmrep.utils.arguments import check_int


@keras.saving.register_keras_serializable(package="mmrep")
class ContextGating(keras.layers.Layer):
    """Context Gating, `y = sigmoid(W x + b) ⊙ x`, over the last axis.

    With `units=None` the gate's matrix `W` is a full `D x D` kernel (the paper's form).
    With `units=r` it is the rank-`r` product `W = V U` of a `D -> r` and an `r -> D`
    kernel with no non-linearity between them, for large `D` (such as an unprojected
    NetVLAD vector of `K * D` features) where a full matrix would be too big. Computed in
    the compute dtype.

    Args:
        units: int or `None`. The rank of the gate's matrix; `None` for a full matrix.
            Defaults to `None`.
        kernel_initializer: Initializer of the kernel(s). Defaults to `"glorot_uniform"`.
        bias_initializer: Initializer of the bias `b`. Defaults to `"zeros"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: float tensor `[..., D]` (e.g. `[B, D]` or a set `[B, N, D]`; every row
            is gated on its own).

    Returns:
        A tensor of the input's shape, in the compute dtype.

    Raises:
        ValueError: for a non-positive `units`, or an input of rank < 2 or with an unknown
            or changed last dimension.
        TypeError: for a non-floating input.

    Example:

    >>> gate = ContextGating()
    >>> tuple(gate(np.ones((2, 8), "float32")).shape)
    (2, 8)

    Reference:
        Miech, Laptev & Sivic, "Learnable pooling with Context Gating for video
        classification", arXiv:1706.06905, 2017.
    """

    def __init__(
        self,
        units=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = None if units is None else check_int("units", units, minimum=1)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self._dim = None

    def _check_shape(self, shape):
        shape = tuple(shape)
        if len(shape) < 2 or shape[-1] is None:
            raise ValueError(
                f"{self.name}: expected `inputs` of shape [batch, ..., features] with a known "
                f"feature size. Received shape: {shape}"
            )
        if self._dim is not None and shape[-1] != self._dim:
            raise ValueError(
                f"{self.name}: expected {self._dim} features (the size the layer was built "
                f"for). Received shape: {shape}"
            )
        return shape[-1]

    def build(self, input_shape):
        dim = self._check_shape(input_shape)
        self._dim = dim
        if self.units is None:
            self.kernel = self.add_weight(
                name="kernel", shape=(dim, dim), initializer=self.kernel_initializer
            )
        else:
            self.down_kernel = self.add_weight(
                name="down_kernel", shape=(dim, self.units), initializer=self.kernel_initializer
            )
            self.up_kernel = self.add_weight(
                name="up_kernel", shape=(self.units, dim), initializer=self.kernel_initializer
            )
        self.bias = self.add_weight(name="bias", shape=(dim,), initializer=self.bias_initializer)

    def call(self, inputs):
        if not keras.backend.is_float_dtype(inputs.dtype):
            raise TypeError(
                f"{self.name}: expected floating `inputs`. Received dtype: {inputs.dtype}"
            )
        self._check_shape(inputs.shape)
        x = ops.cast(inputs, self.compute_dtype)
        if self.units is None:
            logits = ops.matmul(x, self.kernel)
        else:
            logits = ops.matmul(ops.matmul(x, self.down_kernel), self.up_kernel)
        return ops.sigmoid(logits + self.bias) * x

    def compute_output_shape(self, input_shape):
        self._check_shape(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
