"""Bilinear fusion of two modalities: full, compact (Tensor Sketch) and low-rank (MLB/MFB)."""

import keras
from keras import ops

from mmrep.fusion.count_sketch import count_sketch, count_sketch_hashes, tensor_sketch
from mmrep.utils import power_normalization
from mmrep.utils.arguments import check_int, is_int
from mmrep.utils.modalities import (
    check_floating,
    check_modality_names,
    check_presence,
    modality_order,
    presence_column,
)

_MODES = ("full", "compact", "low_rank")
_VARIANTS = ("mfb", "mlb")
_MISSING = ("zeros", "learned")
_MFB_DEFAULT_K = 5


@keras.saving.register_keras_serializable(package="mmrep")
class BilinearFusion(keras.layers.Layer):
    """Bilinear pooling of two modalities: full, compact by Tensor Sketch, or low-rank.

    Every mode computes (an approximation or factorisation of) the outer product `x ⊗ y`
    of the two modalities' features, the second-order interactions that concatenation
    leaves to later layers:

    - `"full"`: `x ⊗ y` flattened row-major (`out[i * D2 + j] = x_i y_j`), `[B, D1 * D2]`.
      For sets or spatial maps `[B, N, D]` (the same `N` for both), the outer products
      are sum-pooled over `N`: `Σ_n x_n ⊗ y_n` (Lin et al., B-CNN). Computed in float32.
    - `"compact"`: the Tensor Sketch of `x ⊗ y` (or of its sum over `N`), of length
      `output_dim`: two count sketches with fixed hashes `h_m ∈ [0, d)` and signs
      `s_m ∈ {±1}` derived from `seed`, multiplied in the frequency domain
      (`rfft`/`irfft`, float32 even under mixed precision). It equals the count sketch of
      the full bilinear feature with hash `(h1(i) + h2(j)) mod d` and sign `s1(i) s2(j)`,
      so inner products of outputs estimate `⟨x, x'⟩⟨y, y'⟩` without bias. The hashes are
      a fixed function of `seed` (see `mmrep.fusion.count_sketch`), not weights, so a layer
      rebuilt from its config or a `.keras` file sketches identically.
    - `"low_rank"` with `variant="mfb"` (default): `SumPool_k((U x + a) ∘ (V y + b))` with
      `U`, `V` of width `k * output_dim`, summing consecutive windows of `k` (Yu et al.).
      With `variant="mlb"`: `P (tanh(U x + a) ∘ tanh(V y + b)) + c` with `U`, `V` of width
      `hidden_dim` (Kim et al.). Sets are sum-pooled over `N` after the Hadamard product.
      Projections run in the compute dtype.

    Then, optionally, the signed square root `sign(z) sqrt(|z| + 1e-12)` and L2
    normalisation (both computed in float32), on by default except for MLB, whose paper
    uses neither.

    Missing modalities: with `missing="zeros"` (default) a modality marked absent in
    `presence` is replaced by zeros, so the full and compact features of that example are
    zero (no joint evidence) and the low-rank ones depend on the other modality only
    through the bias of the absent side. With `missing="learned"` it is replaced by a
    trainable vector per modality (initialised to ones), so the output keeps the present
    modality's information (`p ⊗ y` in full mode). Either way, what the absent input holds
    (even NaN) never reaches the output or the gradients.

    Args:
        mode: `"full"`, `"compact"` or `"low_rank"`. Defaults to `"full"`.
        output_dim: int or `None`. The output width for `"compact"` (the sketch length `d`)
            and `"low_rank"`; must be `None` for `"full"`, whose width is `D1 * D2`.
        modalities: list of two str, or `None`. The modality order (`x` first), also the
            column order of `presence`. `None` takes the keys of the input in mmrep's
            modality order (`mmrep.MODALITY_ORDER`). Defaults to `None`.
        signed_sqrt: bool or `None`. Whether to apply the signed square root. `None`
            means `True`, except `False` for MLB. Defaults to `None`.
        l2_normalize: bool or `None`. Whether to L2-normalise the output. `None` means
            `True`, except `False` for MLB. Defaults to `None`.
        seed: int >= 0. The seed of the compact mode's hashes. Defaults to `0`.
        variant: `"mfb"` or `"mlb"`, for `"low_rank"`. Defaults to `"mfb"`.
        factor_k: int or `None`. MFB's factor `k` (the rank of each output's bilinear
            form). `None` means 5, the paper's choice. Only for MFB.
        hidden_dim: int or `None`. MLB's joint dimension (the rank of its bilinear
            forms). Required for MLB, refused otherwise.
        missing: `"zeros"` or `"learned"`: what replaces an absent modality.
            Defaults to `"zeros"`.
        kernel_initializer: Initializer of the low-rank projections.
            Defaults to `"glorot_uniform"`.
        bias_initializer: Initializer of their biases. Defaults to `"zeros"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: dict `{modality: tensor}` with exactly two floating tensors, both
            `[B, D_m]` or both `[B, N, D_m]` with the same `N`.
        presence: optional `[B, 2]` tensor, bool or numeric (non-zero means present),
            columns in `modalities` order, or a dict `{modality: [B]}`. Its batch size
            must be the inputs'. `None` means both are present.

    Returns:
        `[B, D1 * D2]` for `"full"`, `[B, output_dim]` otherwise, in the compute dtype.

    Raises:
        ValueError: for an unknown mode, variant or `missing`, an `output_dim`,
            `factor_k` or `hidden_dim` that does not fit the mode, inputs that are not two
            modalities of rank 2 or 3 with matching set sizes, or a badly shaped
            `presence`.
        TypeError: for a non-floating input.

    Example:

    >>> fusion = BilinearFusion(mode="compact", output_dim=64, modalities=["image", "text"])
    >>> out = fusion({"image": np.ones((2, 8), "float32"), "text": np.ones((2, 6), "float32")})
    >>> tuple(out.shape)
    (2, 64)

    Reference:
        Lin, RoyChowdhury & Maji, "Bilinear CNN Models for Fine-grained Visual
        Recognition", ICCV 2015. Pham & Pagh, "Fast and Scalable Polynomial Kernels via
        Explicit Feature Maps", KDD 2013. Gao, Beijbom, Zhang & Darrell, "Compact Bilinear
        Pooling", CVPR 2016. Fukui et al., "Multimodal Compact Bilinear Pooling for Visual
        Question Answering and Visual Grounding", EMNLP 2016. Kim et al., "Hadamard
        Product for Low-rank Bilinear Pooling", ICLR 2017. Yu, Yu, Fan & Tao, "Multi-modal
        Factorized Bilinear Pooling with Co-Attention Learning for Visual Question
        Answering", ICCV 2017.
    """

    def __init__(
        self,
        mode="full",
        output_dim=None,
        modalities=None,
        signed_sqrt=None,
        l2_normalize=None,
        seed=0,
        variant="mfb",
        factor_k=None,
        hidden_dim=None,
        missing="zeros",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value, allowed in (
            ("mode", mode, _MODES),
            ("variant", variant, _VARIANTS),
            ("missing", missing, _MISSING),
        ):
            if value not in allowed:
                raise ValueError(f"Expected `{name}` to be one of {allowed}. Received: {value!r}")
        modalities = check_modality_names(modalities, count=2)
        if mode == "full" and output_dim is not None:
            raise ValueError(
                "Expected `output_dim=None` in mode 'full' (its width is D1 * D2). "
                f"Received: output_dim={output_dim!r}"
            )
        if mode != "full" and not is_int(output_dim, 1):
            raise ValueError(
                f"Expected `output_dim` to be a positive int in mode {mode!r}. "
                f"Received: output_dim={output_dim!r}"
            )
        seed = check_int("seed", seed, minimum=0, maximum=2**62 - 1)
        mfb = mode == "low_rank" and variant == "mfb"
        mlb = mode == "low_rank" and variant == "mlb"
        if factor_k is not None and not (mfb and is_int(factor_k, 1)):
            raise ValueError(
                "Expected `factor_k` to be a positive int with mode='low_rank', "
                f"variant='mfb', or None. Received: factor_k={factor_k!r} (mode={mode!r}, "
                f"variant={variant!r})"
            )
        if (hidden_dim is not None or mlb) and not (mlb and is_int(hidden_dim, 1)):
            raise ValueError(
                "Expected `hidden_dim` to be a positive int with mode='low_rank', "
                f"variant='mlb', and None otherwise. Received: hidden_dim={hidden_dim!r} "
                f"(mode={mode!r}, variant={variant!r})"
            )
        for name, value in (("signed_sqrt", signed_sqrt), ("l2_normalize", l2_normalize)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"Expected `{name}` to be a bool or None. Received: {value!r}")
        self.mode = mode
        self.output_dim = None if output_dim is None else int(output_dim)
        self.modalities = modalities
        self.signed_sqrt = signed_sqrt
        self.l2_normalize = l2_normalize
        self.seed = seed
        self.variant = variant
        self.factor_k = None if factor_k is None else int(factor_k)
        self.hidden_dim = None if hidden_dim is None else int(hidden_dim)
        self.missing = missing
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self._mlb = mlb
        self._k = (self.factor_k or _MFB_DEFAULT_K) if mfb else None
        self._apply_sqrt = not mlb if signed_sqrt is None else signed_sqrt
        self._apply_l2 = not mlb if l2_normalize is None else l2_normalize

    def _check_shapes(self, input_shape):
        order = modality_order(self, input_shape, self.modalities)
        if len(order) != 2:
            raise ValueError(
                f"{self.name}: expected exactly two modalities. Received keys: {order}"
            )
        shapes = [tuple(input_shape[m]) for m in order]
        ranks = {len(s) for s in shapes}
        sets = [s[1] for s in shapes if len(s) == 3]
        if (
            len(ranks) != 1
            or ranks - {2, 3}
            or (len(sets) == 2 and None not in sets and sets[0] != sets[1])
            or any(s[-1] is None for s in shapes)
        ):
            raise ValueError(
                f"{self.name}: expected both modalities as [batch, features] or both as "
                "[batch, set, features] with the same set size and known feature sizes. "
                f"Received shapes: {dict(zip(order, shapes, strict=True))}"
            )
        return order, [s[-1] for s in shapes]

    def build(self, input_shape):
        order, dims = self._check_shapes(input_shape)
        self._order = order
        self._dims = dims
        self._placeholders = []
        if self.missing == "learned":
            for m, dim in zip(order, dims, strict=True):
                self._placeholders.append(
                    self.add_weight(shape=(dim,), initializer="ones", name=f"{m}_placeholder")
                )
        self._hashes = []
        if self.mode == "compact":
            for stream, dim in enumerate(dims):
                self._hashes.append(count_sketch_hashes(self.seed, stream, dim, self.output_dim))
        self._kernels, self._biases = [], []
        if self.mode == "low_rank":
            width = self.hidden_dim if self._mlb else self._k * self.output_dim
            for m, dim in zip(order, dims, strict=True):
                self._kernels.append(
                    self.add_weight(
                        shape=(dim, width), initializer=self.kernel_initializer, name=f"{m}_kernel"
                    )
                )
                self._biases.append(
                    self.add_weight(
                        shape=(width,), initializer=self.bias_initializer, name=f"{m}_bias"
                    )
                )
            if self._mlb:
                self.output_kernel = self.add_weight(
                    shape=(width, self.output_dim),
                    initializer=self.kernel_initializer,
                    name="output_kernel",
                )
                self.output_bias = self.add_weight(
                    shape=(self.output_dim,), initializer=self.bias_initializer, name="output_bias"
                )

    @property
    def sketch_hashes(self):
        """The compact mode's count-sketch `(indices, signs)` per modality, after `build`.

        Returns:
            dict `{modality: (int32 [D_m], float32 [D_m])}`.

        Raises:
            ValueError: if the layer is not in compact mode or not built.
        """
        if self.mode != "compact" or not self.built:
            raise ValueError(
                f"{self.name}: sketch hashes exist once a layer in mode 'compact' is built. "
                f"Received: mode={self.mode!r}, built={self.built}"
            )
        return dict(zip(self._order, self._hashes, strict=True))

    def call(self, inputs, presence=None):
        order = modality_order(self, inputs, self._order)
        features = [inputs[m] for m in order]
        for m, x in zip(order, features, strict=True):
            check_floating(self, m, x)
        self._check_shapes({m: x.shape for m, x in zip(order, features, strict=True)})
        rank = len(features[0].shape)
        if presence is not None:
            presence = check_presence(self, presence, order, features[0])
            for i, x in enumerate(features):
                fill = (
                    ops.cast(self._placeholders[i], x.dtype)
                    if self._placeholders
                    else ops.zeros((), x.dtype)
                )
                # `where`, not a product with the mask: 0 * NaN would still be NaN.
                features[i] = ops.where(presence_column(presence, i, rank), x, fill)
        x, y = features
        if self.mode == "full":
            z = self._full(x, y, rank)
        elif self.mode == "compact":
            z = self._compact(x, y, rank)
        else:
            z = self._low_rank(x, y, rank)
        z = ops.cast(z, "float32")
        if self._apply_sqrt:
            z = power_normalization.signed_sqrt(z)
        if self._apply_l2:
            z = power_normalization.l2_normalize(z)
        return ops.cast(z, self.compute_dtype)

    def _full(self, x, y, rank):
        x, y = ops.cast(x, "float32"), ops.cast(y, "float32")
        if rank == 3:
            z = ops.einsum("bni,bnj->bij", x, y)
        else:
            z = ops.expand_dims(x, 2) * ops.expand_dims(y, 1)
        return ops.reshape(z, (-1, self._dims[0] * self._dims[1]))

    def _compact(self, x, y, rank):
        sketches = [
            count_sketch(ops.cast(v, "float32"), indices, signs, self.output_dim)
            for v, (indices, signs) in zip((x, y), self._hashes, strict=True)
        ]
        return tensor_sketch(*sketches, set_axis=1 if rank == 3 else None)

    def _low_rank(self, x, y, rank):
        projected = []
        for v, kernel, bias in zip((x, y), self._kernels, self._biases, strict=True):
            v = ops.cast(v, self.compute_dtype)
            u = ops.matmul(v, ops.cast(kernel, self.compute_dtype)) + ops.cast(
                bias, self.compute_dtype
            )
            projected.append(ops.tanh(u) if self._mlb else u)
        h = projected[0] * projected[1]
        if rank == 3:
            h = ops.sum(h, axis=1)
        if self._mlb:
            kernel = ops.cast(self.output_kernel, self.compute_dtype)
            return ops.matmul(h, kernel) + ops.cast(self.output_bias, self.compute_dtype)
        # MFB: consecutive windows of k factors sum to one output.
        return ops.sum(ops.reshape(h, (-1, self.output_dim, self._k)), axis=-1)

    def compute_output_shape(self, inputs_shape, presence_shape=None):
        order, dims = self._check_shapes(inputs_shape)
        width = dims[0] * dims[1] if self.mode == "full" else self.output_dim
        return (inputs_shape[order[0]][0], width)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mode": self.mode,
                "output_dim": self.output_dim,
                "modalities": self.modalities,
                "signed_sqrt": self.signed_sqrt,
                "l2_normalize": self.l2_normalize,
                "seed": self.seed,
                "variant": self.variant,
                "factor_k": self.factor_k,
                "hidden_dim": self.hidden_dim,
                "missing": self.missing,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
