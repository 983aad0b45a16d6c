"""Multimodal autoencoder: a shared code from any subset of modalities, and every modality back."""

import keras
from keras import ops

from mmrep.fusion import autoencoder_corruption as corruption
from mmrep.fusion import autoencoder_penalties as penalties
from mmrep.utils.arguments import check_int
from mmrep.utils.modalities import (
    check_floating,
    check_modality_names,
    check_presence,
    modality_order,
)

FUSIONS = ("mean", "concat")


@keras.saving.register_keras_serializable(package="mmrep")
class MultimodalAutoencoder(keras.layers.Layer):
    """Per-modality encoders into one shared code, per-modality decoders back out.

    The bimodal deep autoencoder of Ngiam et al. for any number of vector modalities
    `{modality: [B, D_m]}`. Modality `m`'s encoder (Dense layers of `encoder_units`, then a
    linear map to `code_dim`) gives `z_m`; the code is `h = code_activation(a)` with
    `a = b + Σ_present z_m / n_present` (`fusion="mean"`) or `a = b + Σ_present z_m`
    (`fusion="concat"`: one Dense layer over the concatenated encoder outputs with absent
    ones zeroed, Ngiam et al.'s shared layer). Mean is the default: the code keeps its
    scale whichever modalities an example has, which modality dropout and missing data
    need. Modality `m`'s decoder (Dense layers of `decoder_units`, then a Dense to `D_m`
    with `output_activation`) reconstructs it from `h`.

    Missing modalities (`presence`) are replaced by zeros before their encoder and left
    out of the fusion with `ops.where`, so even NaN in a missing input reaches neither the
    code, the reconstructions nor a gradient. Every modality is reconstructed for every
    example, absent ones from the present ones; with none present the code is
    `code_activation(b)`.

    In training: modality dropout drops each present modality with probability
    `modality_dropout`, keeping one (chosen uniformly) when all would go, so the marginal
    rate with `n` present is `p − pⁿ/n`; the dropped ones stay in the loss, which teaches
    cross-modal reconstruction. Denoising (Vincent et al.) feeds the encoders inputs with
    Gaussian noise (std `noise_level`) or masking noise (a fraction `noise_level` zeroed)
    and compares with the clean input. Draws use a layer-held `SeedGenerator(seed)`.

    Losses, added with `add_loss` at every call (float32 under mixed precision):
    reconstruction `Σ_m w_m (1/B) Σ_b present_bm mean_d (r_bmd − x_bmd)²` over the
    modalities present in the input (divided by the batch size, so a batch split over
    replicas has the loss of the whole batch); sparsity `sparsity_weight · mean_b Σ_k |h|`
    (`"l1"`) or `sparsity_weight · Σ_k KL(ρ ‖ ρ̂_k)` of the batch-mean rate of a sigmoid
    code (`"kl"`, a per-replica statistic under `tf.distribute`); contractive
    `contractive_weight · mean_b ‖∂h/∂x‖_F²` w.r.t. the inputs the encoders saw (Rifai
    et al.'s closed form for single-layer encoders, the exact chain rule otherwise).

    Args:
        code_dim: int. Width of the shared code.
        modalities: list of str, or `None` (the input keys in mmrep's modality order).
            The order of the columns of `presence`. Defaults to `None`.
        encoder_units: tuple of ints. Hidden widths of each encoder. Defaults to `()`.
        decoder_units: tuple of ints. Hidden widths of each decoder. Defaults to `()`.
        activation: str or `None`. Hidden-layer activation. Defaults to `"relu"`.
        code_activation: str or `None`. Code activation. Defaults to `"sigmoid"`.
        output_activation: str or `None` (linear). Defaults to `None`.
        fusion: `"mean"` or `"concat"`. Defaults to `"mean"`.
        tied_weights: bool. Decoder kernel = encoder kernel transposed (own output biases);
            needs `encoder_units=()` and `decoder_units=()`. Defaults to `False`.
        modality_dropout: float in [0, 1). Defaults to `0.0`.
        noise: `None`, `"gaussian"` or `"masking"`. Defaults to `None`.
        noise_level: float. Gaussian std or masking rate. Defaults to `0.1`.
        reconstruction_weight: float, or dict `{modality: float}` (others 1).
            Defaults to `1.0`.
        sparsity: `None`, `"l1"` or `"kl"`. Defaults to `None`.
        sparsity_weight: float. Defaults to `1e-3`.
        sparsity_target: float in (0, 1), the rate ρ of `"kl"`. Defaults to `0.05`.
        contractive_weight: float; `0` is off. Defaults to `0.0`.
        return_reconstructions: bool. `False` returns the code alone (a fusion layer;
            the losses are still added). Defaults to `True`.
        reconstruction_metrics: bool. Track `"{modality}_reconstruction_error"`, a
            `keras.metrics.Mean` of the squared error where the modality was present,
            in training calls. Defaults to `False`.
        seed: int or `None`. Seed of modality dropout and noise. Defaults to `None`.
        kernel_initializer: Initializer of the kernels. Defaults to `"glorot_uniform"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: dict `{modality: [B, D_m]}` of floating tensors, every modality a key.
        presence: optional `[B, M]`, bool or numeric (non-zero: present), columns in
            `modalities` order, or a dict `{modality: [B]}`. `None`: all present.
        training: bool. Modality dropout and noise apply only when `True`.

    Returns:
        A flat dict (a valid SavedModel signature) with `"code"` `[B, code_dim]` and
        `"{modality}_reconstruction"` `[B, D_m]`; or the code alone.

    Example:

    >>> ae = MultimodalAutoencoder(4, modalities=["image", "text"], modality_dropout=0.5)
    >>> out = ae(
    ...     {"image": np.ones((2, 8), "float32"), "text": np.ones((2, 6), "float32")},
    ...     presence=np.array([[1, 1], [1, 0]], "float32"),
    ... )
    >>> sorted(out), tuple(out["text_reconstruction"].shape)
    (['code', 'image_reconstruction', 'text_reconstruction'], (2, 6))

    Reference:
        Ngiam, Khosla, Kim, Nam, Lee & Ng, "Multimodal Deep Learning", ICML 2011.
        Vincent, Larochelle, Bengio & Manzagol, "Extracting and Composing Robust Features
        with Denoising Autoencoders", ICML 2008.
    """

    def __init__(
        self,
        code_dim,
        modalities=None,
        encoder_units=(),
        decoder_units=(),
        activation="relu",
        code_activation="sigmoid",
        output_activation=None,
        fusion="mean",
        tied_weights=False,
        modality_dropout=0.0,
        noise=None,
        noise_level=0.1,
        reconstruction_weight=1.0,
        sparsity=None,
        sparsity_weight=1e-3,
        sparsity_target=0.05,
        contractive_weight=0.0,
        return_reconstructions=True,
        reconstruction_metrics=False,
        seed=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        modalities, encoder_units, decoder_units = check_structure(
            code_dim, modalities, encoder_units, decoder_units, fusion, tied_weights
        )
        check_activations(
            activation=activation,
            code_activation=code_activation,
            output_activation=output_activation,
        )
        corruption.check_corruption(modality_dropout, noise, noise_level)
        penalties.check_penalties(
            sparsity,
            sparsity_weight,
            sparsity_target,
            code_activation,
            contractive_weight,
            [code_activation] + ([activation] if encoder_units else []),
        )
        self.code_dim = int(code_dim)
        self.modalities = modalities
        self.encoder_units = encoder_units
        self.decoder_units = decoder_units
        self.activation = activation
        self.code_activation = code_activation
        self.output_activation = output_activation
        self.fusion = fusion
        self.tied_weights = bool(tied_weights)
        self.modality_dropout = float(modality_dropout)
        self.noise = noise
        self.noise_level = float(noise_level)
        self.reconstruction_weight = reconstruction_weights(
            reconstruction_weight, modalities, self.name
        )
        self.sparsity = sparsity
        self.sparsity_weight = float(sparsity_weight)
        self.sparsity_target = float(sparsity_target)
        self.contractive_weight = float(contractive_weight)
        self.return_reconstructions = bool(return_reconstructions)
        self.reconstruction_metrics = bool(reconstruction_metrics)
        self.seed = seed
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._hidden = keras.activations.get(activation)
        self._code_fn = keras.activations.get(code_activation)
        self._output_fn = keras.activations.get(output_activation)
        stochastic = self.modality_dropout > 0 or noise is not None
        self.seed_generator = keras.random.SeedGenerator(seed) if stochastic else None

    # === Weights ===

    def _dense(self, name, fan_in, units, kernel=True, bias=True):
        def weight(suffix, shape, initializer):
            return self.add_weight(name=f"{name}_{suffix}", shape=shape, initializer=initializer)

        return (
            weight("kernel", (fan_in, units), self.kernel_initializer) if kernel else None,
            weight("bias", (units,), "zeros") if bias else None,
        )

    def _stack(self, name, width, units):
        layers = [
            self._dense(f"{name}_{i}", fan_in, u)
            for i, (fan_in, u) in enumerate(zip((width, *units), units, strict=False))
        ]
        return layers, (units[-1] if units else width)

    def build(self, input_shape):
        self._order = order = modality_order(self, input_shape, self.modalities)
        reconstruction_weights(self.reconstruction_weight, order, self.name)
        self._dims, self._encoders, self._projections = {}, {}, {}
        self._decoders, self._outputs = {}, {}
        for m in order:
            shape = tuple(input_shape[m])
            if len(shape) != 2 or shape[-1] is None:
                raise ValueError(
                    f"{self.name}: expected modality {m!r} to be `[batch, features]` with a "
                    f"known feature dimension. Received shape: {shape}"
                )
            self._dims[m] = dim = int(shape[-1])
            self._encoders[m], width = self._stack(f"{m}_encoder", dim, self.encoder_units)
            self._projections[m] = self._dense(f"{m}_to_code", width, self.code_dim, bias=False)[0]
            self._decoders[m], width = self._stack(
                f"{m}_decoder", self.code_dim, self.decoder_units
            )
            self._outputs[m] = self._dense(f"{m}_output", width, dim, kernel=not self.tied_weights)
        self.code_bias = self.add_weight(
            name="code_bias", shape=(self.code_dim,), initializer="zeros"
        )
        if self.reconstruction_metrics:
            self._metrics_by_modality = {
                m: keras.metrics.Mean(name=f"{m}_reconstruction_error") for m in order
            }

    # === Forward pass ===

    def _inputs(self, inputs):
        order = modality_order(self, inputs, self._order)
        return check_inputs(self, order, self._dims, inputs)

    def _presence(self, presence, xs):
        if presence is None:
            return ops.ones((ops.shape(xs[0])[0], len(xs)), "bool")
        return check_presence(self, presence, self._order, xs[0])

    def _encode(self, xs, kept, dtype, jacobian):
        """The code and its pre-activation; with `jacobian`, also `‖∂h/∂x‖_F²` per example."""
        total, chains = 0.0, []
        for i, m in enumerate(self._order):
            h, chain = ops.where(kept[:, i : i + 1], xs[i], ops.zeros_like(xs[i])), []
            for kernel, bias in self._encoders[m]:
                a = _affine(h, kernel, bias, dtype)
                chain.append((kernel, a))
                h = ops.cast(self._hidden(a), dtype)
            z = ops.matmul(h, ops.cast(self._projections[m], dtype))
            total = total + ops.where(kept[:, i : i + 1], z, ops.zeros_like(z))
            chains.append(chain)
        count = ops.sum(ops.cast(kept, dtype), axis=1, keepdims=True)
        scale = 1.0 / ops.maximum(count, 1.0) if self.fusion == "mean" else ops.ones_like(count)
        pre = total * scale + ops.cast(self.code_bias, dtype)
        code = ops.cast(self._code_fn(pre), dtype)
        if not jacobian:
            return code, pre, None
        wide = _loss_dtype(dtype)
        slope = penalties.activation_derivative(self.code_activation, ops.cast(pre, wide))
        slope = slope * ops.cast(scale, wide)
        norm = 0.0
        for i, m in enumerate(self._order):
            hidden = [(ops.cast(k, wide), ops.cast(a, wide)) for k, a in chains[i]]
            projection = ops.cast(self._projections[m], wide)
            sq = penalties.encoder_jacobian_sq_norm(hidden, projection, slope, self.activation)
            norm = norm + ops.where(kept[:, i], sq, ops.zeros_like(sq))
        return code, pre, norm

    def _decode(self, code, modality, dtype):
        h = code
        for kernel, bias in self._decoders[modality]:
            h = ops.cast(self._hidden(_affine(h, kernel, bias, dtype)), dtype)
        kernel, bias = self._outputs[modality]
        if kernel is None:
            kernel = ops.transpose(self._projections[modality])
        return ops.cast(self._output_fn(_affine(h, kernel, bias, dtype)), dtype)

    def call(self, inputs, presence=None, training=None):
        xs = self._inputs(inputs)
        dtype = self.compute_dtype
        present = self._presence(presence, xs)
        clean = [ops.where(present[:, i : i + 1], x, ops.zeros_like(x)) for i, x in enumerate(xs)]
        kept, seen = present, clean
        if training and self.modality_dropout > 0:
            kept = corruption.drop_modalities(present, self.modality_dropout, self.seed_generator)
        if training and self.noise is not None:
            seen = [
                corruption.corrupt(x, self.noise, self.noise_level, self.seed_generator)
                for x in clean
            ]
        code, _, jac_norm = self._encode(seen, kept, dtype, self.contractive_weight > 0)
        reconstructions = {m: self._decode(code, m, dtype) for m in self._order}

        wide = _loss_dtype(dtype)
        errors = penalties.reconstruction_errors(
            [reconstructions[m] for m in self._order], clean, present, wide
        )
        loss = 0.0
        for i, m in enumerate(self._order):
            weight = self.reconstruction_weight
            weight = weight.get(m, 1.0) if isinstance(weight, dict) else weight
            loss = loss + weight * ops.mean(errors[i])
            if self.reconstruction_metrics and training:
                weights = ops.cast(present[:, i], wide)
                self._metrics_by_modality[m].update_state(errors[i], sample_weight=weights)
        self.add_loss(loss)
        if self.sparsity is not None:
            term = penalties.sparsity_penalty(
                ops.cast(code, wide), self.sparsity, self.sparsity_target
            )
            self.add_loss(self.sparsity_weight * term)
        if jac_norm is not None:
            self.add_loss(self.contractive_weight * ops.mean(jac_norm))
        if not self.return_reconstructions:
            return code
        return {"code": code, **{f"{m}_reconstruction": r for m, r in reconstructions.items()}}

    # === Energy ===

    def energy(self, inputs, presence=None):
        """The potential energy (score) of a tied-weight autoencoder, per example.

        With tied weights and linear reconstructions, `r(x) − x` is the gradient of
        `F(x) = (1/s) Σ_k A(a_k) − ½ Σ_present ‖x_m − c_m‖²` (`A' = code_activation`,
        `s = 1/n_present` for mean fusion, else 1; see
        `autoencoder_penalties.tied_energy`). High energy: the input looks like the
        training data. Float32 (float64 for a float64 layer).

        Args:
            inputs: dict `{modality: [B, D_m]}`, as for the call.
            presence: optional `[B, M]` mask; absent modalities are left out.

        Returns:
            `[B]`, the energy of each example.

        Raises:
            ValueError: without tied weights, with an output activation, or with a code
                activation other than sigmoid, tanh, linear and ReLU.

        Reference:
            Kamyshanska & Memisevic, "On autoencoder scoring", ICML 2013.
        """
        penalties.check_energy(self.tied_weights, self.output_activation, self.code_activation)
        if not self.built:
            self(inputs, presence=presence)
        dtype = _loss_dtype(self.compute_dtype)
        xs = [ops.cast(x, dtype) for x in self._inputs(inputs)]
        present = self._presence(presence, xs)
        _, pre, _ = self._encode(xs, present, dtype, jacobian=False)
        offsets = [
            x - ops.cast(self._outputs[m][1], dtype) for x, m in zip(xs, self._order, strict=True)
        ]
        return penalties.tied_energy(
            pre, offsets, present, self.code_activation, mean_fusion=self.fusion == "mean"
        )

    # === Shapes and config ===

    def compute_output_shape(self, inputs_shape, presence_shape=None):
        order = modality_order(self, inputs_shape, self.modalities)
        batch = tuple(inputs_shape[order[0]])[:1]
        if not self.return_reconstructions:
            return (*batch, self.code_dim)
        shapes = {"code": (*batch, self.code_dim)}
        shapes.update({f"{m}_reconstruction": tuple(inputs_shape[m]) for m in order})
        return shapes

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in _CONFIG_KEYS})
        config["encoder_units"] = list(self.encoder_units)
        config["decoder_units"] = list(self.decoder_units)
        config["kernel_initializer"] = keras.initializers.serialize(self.kernel_initializer)
        return config


_CONFIG_KEYS = """code_dim modalities activation code_activation output_activation fusion
tied_weights modality_dropout noise noise_level reconstruction_weight sparsity sparsity_weight
sparsity_target contractive_weight return_reconstructions reconstruction_metrics seed""".split()


def _affine(x, kernel, bias, dtype):
    return ops.matmul(x, ops.cast(kernel, dtype)) + ops.cast(bias, dtype)


def _loss_dtype(compute_dtype):
    """float32 for losses under mixed precision; float64 stays float64."""
    return "float64" if compute_dtype == "float64" else "float32"


# === Argument and input checks ===


def check_structure(code_dim, modalities, encoder_units, decoder_units, fusion, tied_weights):
    """Checks the structural arguments; returns `(modalities, encoder_units, decoder_units)`.

    Raises:
        ValueError: naming the argument, what was expected and what was received.
    """
    check_int("code_dim", code_dim, minimum=1)
    modalities = check_modality_names(modalities)
    encoder_units = tuple(
        check_int(f"encoder_units[{i}]", u, minimum=1) for i, u in enumerate(encoder_units)
    )
    decoder_units = tuple(
        check_int(f"decoder_units[{i}]", u, minimum=1) for i, u in enumerate(decoder_units)
    )
    if fusion not in FUSIONS:
        raise ValueError(f"Expected `fusion` in {FUSIONS}. Received: fusion={fusion!r}")
    if tied_weights and (encoder_units or decoder_units):
        raise ValueError(
            "Tied weights need single-layer encoders and decoders. Received: "
            f"encoder_units={encoder_units}, decoder_units={decoder_units}"
        )
    return modalities, encoder_units, decoder_units


def check_activations(**activations):
    """Checks that each activation is `None` or the name of a Keras activation.

    Raises:
        ValueError: naming the argument and the value received.
    """
    for name, value in activations.items():
        if value is not None and not isinstance(value, str):
            raise ValueError(f"Expected `{name}` to be a str or None. Received: {value!r}")
        try:
            keras.activations.get(value)
        except ValueError as error:
            raise ValueError(
                f"Expected `{name}` to name a Keras activation. Received: {value!r}"
            ) from error


def reconstruction_weights(weights, modalities, where):
    """Checks `reconstruction_weight` (a float or a dict over known modalities).

    Args:
        weights: float or dict `{modality: float}`.
        modalities: the known modality names, or `None` when not yet known.
        where: str, a prefix for the error message (the layer's name).

    Returns:
        A float or a dict of floats.

    Raises:
        ValueError: when the dict names modalities that are not in `modalities`.
    """
    if not isinstance(weights, dict):
        return float(weights)
    unknown = sorted(set(weights) - set(modalities or weights))
    if unknown:
        raise ValueError(
            f"{where}: `reconstruction_weight` names unknown modalities {unknown}; expected "
            f"a subset of {list(modalities)}"
        )
    return {m: float(w) for m, w in weights.items()}


def check_inputs(layer, order, dims, inputs):
    """Checks a call's `{modality: [B, D_m]}` tensors; returns them in `order`.

    Raises:
        TypeError: for a non-floating modality.
        ValueError: for a modality whose shape is not `[batch, D_m]`.
    """
    for m in order:
        x = inputs[m]
        check_floating(layer, m, x)
        if len(x.shape) != 2 or x.shape[-1] != dims[m]:
            raise ValueError(
                f"{layer.name}: expected modality {m!r} of shape [batch, {dims[m]}]. "
                f"Received shape: {tuple(x.shape)}"
            )
    return [inputs[m] for m in order]
