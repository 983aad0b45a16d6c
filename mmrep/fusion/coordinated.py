"""Coordinated embeddings: per-modality projection heads into one shared, normalised space."""

import math

import keras
from keras import ops

from mmrep.losses.contrastive_keras import LOGIT_SCALE_KEY
from mmrep.utils.arguments import check_int, is_int
from mmrep.utils.modalities import (
    check_floating,
    check_modality_names,
    check_presence,
    modality_order,
    presence_column,
)

_CLIP_INIT = math.log(1.0 / 0.07)


class _AtMost(keras.constraints.Constraint):
    """Clips a weight to `<= max_value` after each optimizer step (not serialised: the
    layer recreates it in `build` from its own config)."""

    def __init__(self, max_value):
        self.max_value = max_value

    def __call__(self, w):
        return ops.minimum(w, ops.cast(self.max_value, w.dtype))


@keras.saving.register_keras_serializable(package="mmrep")
class CoordinatedEmbedding(keras.layers.Layer):
    """Projects each modality into one L2-normalised space, with a learned temperature.

    The coordinated representation of Baltrušaitis et al.: every modality keeps its own
    projection head (an optional MLP, then a linear map to `embedding_dim`) and the
    heads are trained so that paired examples land close together, as in CLIP's image
    and text projections. Outputs are unit-norm (normalised in float32 under mixed
    precision), so dot products are cosine similarities.

    The layer owns CLIP's learnable temperature as the weight `log_logit_scale`
    (the log of the inverse temperature), initialised to `log(1 / 0.07)`. The scale
    `exp(log_logit_scale)` is capped at `max_logit_scale` (100, as in CLIP) twice: a
    weight constraint clips the weight after every optimizer step, as CLIP and OpenCLIP
    clamp the parameter in place, so it can always move back down; and the forward
    pass takes `min(log_logit_scale, log(max_logit_scale))`, so weights set or loaded
    above the cap still give a scale <= the cap.

    Missing modalities. An example whose modality is absent in `presence` gets an
    all-zero embedding (the input, even NaN, reaches neither the output nor the
    gradients). The contrastive losses of `mmrep.losses` read an all-zero embedding as
    missing and leave that pair out as an anchor and as a negative.

    Training. The layer's output dict is what the `mmrep.losses` loss classes read
    (`ClipLoss()(None, outputs)`); `mmrep.fusion.ContrastiveModel` wraps a model that
    ends in this layer and trains it with one (`fit` without targets), with negatives
    gathered across `tf.distribute` replicas. A model of one's own overrides
    `keras.Model.compute_loss` instead (see `mmrep.losses.contrastive_keras`).

    Args:
        embedding_dim: int. Width of the shared space.
        modalities: list of str, or `None`. The modality names, in the order the
            columns of `presence` are read. `None` takes the keys of the first input in
            mmrep's modality order (`mmrep.MODALITY_ORDER`). `"logit_scale"` is reserved.
            Defaults to `None`.
        hidden_dims: tuple of ints. Widths of the hidden layers of each head's MLP
            (empty: a linear projection, as in CLIP). Defaults to `()`.
        hidden_activation: str. Activation of the hidden layers. Defaults to `"relu"`.
        use_bias: bool. Whether the head layers have biases. Defaults to `True`.
        logit_scale_init: float. Initial `log_logit_scale`. Defaults to `log(1 / 0.07)`.
        max_logit_scale: float. Cap of the scale. Defaults to `100.0`.
        learn_logit_scale: bool. Whether the temperature is trained. Defaults to `True`.
        kernel_initializer: Initializer of the head kernels.
            Defaults to `"glorot_uniform"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: dict `{modality: [B, D_m]}` of floating tensors, one per modality.
        presence: optional `[B, M]` mask, bool or numeric (non-zero means present),
            columns in `modalities` order, or a dict `{modality: [B]}`. Its batch size
            must be the inputs'. `None` means all present.

    Returns:
        dict `{modality: [B, embedding_dim], "logit_scale": [B, 1]}`, the scale
        repeated per example (so that the output splits along the batch like the
        embeddings), in the compute dtype.

    Example:

    >>> layer = CoordinatedEmbedding(4, modalities=["image", "text"])
    >>> out = layer({"image": np.ones((2, 8), "float32"), "text": np.ones((2, 6), "float32")})
    >>> tuple(out["image"].shape), tuple(out["logit_scale"].shape)
    ((2, 4), (2, 1))

    Reference:
        Baltrušaitis, Ahuja & Morency, "Multimodal Machine Learning: A Survey and
        Taxonomy", IEEE TPAMI 2019 (coordinated representations); Radford et al.,
        "Learning Transferable Visual Models From Natural Language Supervision", ICML
        2021 (projection heads, learned temperature capped at 100).
    """

    def __init__(
        self,
        embedding_dim,
        modalities=None,
        hidden_dims=(),
        hidden_activation="relu",
        use_bias=True,
        logit_scale_init=_CLIP_INIT,
        max_logit_scale=100.0,
        learn_logit_scale=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        hidden_dims = tuple(hidden_dims or ())
        if not all(is_int(h, 1) for h in hidden_dims):
            raise ValueError(
                f"Expected `hidden_dims` to be a tuple of positive ints. Received: {hidden_dims}"
            )
        hidden_dims = tuple(int(h) for h in hidden_dims)
        modalities = check_modality_names(modalities, reserved=(LOGIT_SCALE_KEY,))
        if not max_logit_scale > 0 or not math.isfinite(logit_scale_init):
            raise ValueError(
                "Expected `max_logit_scale` > 0 and a finite `logit_scale_init`. Received: "
                f"max_logit_scale={max_logit_scale}, logit_scale_init={logit_scale_init}"
            )
        self.embedding_dim = embedding_dim
        self.modalities = modalities
        self.hidden_dims = hidden_dims
        self.hidden_activation = hidden_activation
        self.use_bias = bool(use_bias)
        self.logit_scale_init = float(logit_scale_init)
        self.max_logit_scale = float(max_logit_scale)
        self.learn_logit_scale = bool(learn_logit_scale)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        order = modality_order(self, input_shape, self.modalities)
        if LOGIT_SCALE_KEY in order:
            raise ValueError(f"{self.name}: {LOGIT_SCALE_KEY!r} is a reserved output name.")
        self._order = order
        self._heads = []
        for m in order:
            shape = tuple(input_shape[m])
            if len(shape) != 2 or shape[-1] is None:
                raise ValueError(
                    f"{self.name}: expected modality {m!r} to be `[batch, features]` with "
                    f"known features. Received shape: {shape}"
                )
            widths = (*self.hidden_dims, self.embedding_dim)
            names = [f"{m}_hidden_{i}" for i in range(len(self.hidden_dims))]
            head = []
            for i, (width, name) in enumerate(
                zip(widths, [*names, f"{m}_projection"], strict=True)
            ):
                dense = keras.layers.Dense(
                    width,
                    activation=self.hidden_activation if i < len(self.hidden_dims) else None,
                    use_bias=self.use_bias,
                    kernel_initializer=self.kernel_initializer,
                    dtype=self.dtype_policy,
                    name=name,
                )
                dense.build(shape)
                shape = (shape[0], width)
                head.append(dense)
            self._heads.append(head)
        self.log_logit_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.logit_scale_init),
            trainable=self.learn_logit_scale,
            constraint=_AtMost(math.log(self.max_logit_scale)),
            dtype="float32",
            autocast=False,
            name="log_logit_scale",
        )

    def logit_scale(self):
        """The current inverse temperature, `exp(min(log_logit_scale, log(max)))`, float32.

        Returns:
            A float32 scalar tensor.
        """
        capped = ops.minimum(self.log_logit_scale, math.log(self.max_logit_scale))
        return ops.exp(capped)

    def call(self, inputs, presence=None):
        order = modality_order(self, inputs, self._order)
        if presence is not None:
            presence = check_presence(self, presence, order, inputs[order[0]])
        embeddings = {}
        for i, m in enumerate(order):
            x = inputs[m]
            check_floating(self, m, x)
            present = None if presence is None else presence_column(presence, i, 2)
            if present is not None:
                # Clear absent rows first: 0 * NaN in the kernel's gradient would be NaN.
                x = ops.where(present, x, ops.zeros_like(x))
            for dense in self._heads[i]:
                x = dense(x)
            x = ops.cast(x, "float32")
            x = x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))
            if present is not None:
                x = ops.where(present, x, ops.zeros_like(x))
            embeddings[m] = x
        scale = ops.broadcast_to(
            ops.reshape(self.logit_scale(), (1, 1)), (ops.shape(embeddings[order[0]])[0], 1)
        )
        outputs = {m: ops.cast(e, self.compute_dtype) for m, e in embeddings.items()}
        outputs[LOGIT_SCALE_KEY] = ops.cast(scale, self.compute_dtype)
        return outputs

    def compute_output_shape(self, inputs_shape, presence_shape=None):
        order = modality_order(self, inputs_shape, self.modalities)
        batch = next(iter(inputs_shape[order[0]]))
        shapes = {m: (batch, self.embedding_dim) for m in order}
        shapes[LOGIT_SCALE_KEY] = (batch, 1)
        return shapes

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embedding_dim": self.embedding_dim,
                "modalities": self.modalities,
                "hidden_dims": list(self.hidden_dims),
                "hidden_activation": self.hidden_activation,
                "use_bias": self.use_bias,
                "logit_scale_init": self.logit_scale_init,
                "max_logit_scale": self.max_logit_scale,
                "learn_logit_scale": self.learn_logit_scale,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
