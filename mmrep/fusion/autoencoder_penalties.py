"""The loss terms of the multimodal autoencoder and its energy (score) function.

Functions of `keras.ops` tensors, checked against float64 numpy formulas, autodiff
Jacobians and finite differences in tests/fusion/test_autoencoder.py:

- `reconstruction_errors`: per-example squared errors where a modality is present;
- `l1_sparsity` and `kl_sparsity`: sparsity penalties on code activations (the KL form is
  Ng's sparse-autoencoder penalty towards a target firing rate ρ);
- `activation_derivative`, `jacobian_step`, `single_layer_jacobian_sq_norm` and
  `encoder_jacobian_sq_norm`: the contractive penalty of Rifai et al., the squared
  Frobenius norm of the Jacobian of the code w.r.t. the input, in closed form for one
  layer and by the exact chain rule through a Dense stack (no nested autodiff, so it works
  the same in every backend and under `tf.distribute`);
- `antiderivative` and `tied_energy`: the potential energy of a tied-weight autoencoder,
  `F(x) = Σ_k A(w_kᵀx + b_k) − ½‖x − c‖²` with `A' = f` (Kamyshanska & Memisevic);
- `check_penalties` and `check_energy`: clear errors for options that do not apply.

References:
    Ng, "Sparse autoencoder", CS294A lecture notes, Stanford, 2011.
    Rifai, Vincent, Muller, Glorot & Bengio, "Contractive Auto-Encoders: Explicit Invariance
    During Feature Extraction", ICML 2011.
    Kamyshanska & Memisevic, "On autoencoder scoring", ICML 2013, and "The potential energy
    of an autoencoder", IEEE TPAMI 2015.
"""

import math

from keras import ops

# Activations whose derivative `activation_derivative` knows (the contractive penalty).
DIFFERENTIABLE_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softplus")
# Activations whose antiderivative `antiderivative` knows (the energy).
ENERGY_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")


def activation_name(activation):
    """The canonical name of an activation given as a string or `None` (`None` is linear)."""
    return "linear" if activation is None else str(activation)


def activation_derivative(activation, pre_activation):
    """The derivative `f'(a)` of an elementwise activation at its pre-activation `a`.

    Args:
        activation: str or `None`. One of `DIFFERENTIABLE_ACTIVATIONS` (`None`: linear).
        pre_activation: tensor `a`.

    Returns:
        A tensor shaped like `a`: 1 (linear), `1[a > 0]` (ReLU), `σ(a)(1 − σ(a))`
        (sigmoid), `1 − tanh(a)²` (tanh), `σ(a)` (softplus).

    Raises:
        ValueError: for an activation without a known derivative.
    """
    name = activation_name(activation)
    a = pre_activation
    if name == "linear":
        return ops.ones_like(a)
    if name == "relu":
        return ops.cast(ops.greater(a, 0), a.dtype)
    if name == "sigmoid":
        s = ops.sigmoid(a)
        return s * (1 - s)
    if name == "tanh":
        return 1 - ops.square(ops.tanh(a))
    if name == "softplus":
        return ops.sigmoid(a)
    raise ValueError(
        f"Expected an activation in {DIFFERENTIABLE_ACTIVATIONS} (its derivative is needed "
        f"for the contractive penalty). Received: activation={activation!r}"
    )


def antiderivative(activation, pre_activation):
    """The antiderivative `A` of a hidden activation `f` (`A' = f`), for the energy.

    Args:
        activation: str or `None`. One of `ENERGY_ACTIVATIONS` (`None`: linear).
        pre_activation: tensor `a`.

    Returns:
        A tensor shaped like `a`: `softplus(a)` (sigmoid), `log cosh(a)` (tanh, computed
        stably as `|a| + softplus(−2|a|) − log 2`), `a²/2` (linear), `max(a, 0)²/2` (ReLU).

    Raises:
        ValueError: for an activation without a closed-form antiderivative here.
    """
    name = activation_name(activation)
    a = pre_activation
    if name == "sigmoid":
        return ops.softplus(a)
    if name == "tanh":
        magnitude = ops.abs(a)
        return magnitude + ops.softplus(-2 * magnitude) - math.log(2.0)
    if name == "linear":
        return 0.5 * ops.square(a)
    if name == "relu":
        return 0.5 * ops.square(ops.relu(a))
    raise ValueError(
        f"The energy needs the antiderivative of the code activation; it is known for "
        f"{ENERGY_ACTIVATIONS}. Received: code_activation={activation!r}"
    )


def l1_sparsity(code):
    """L1 sparsity: `Σ_k |h_k|` averaged over the batch.

    Args:
        code: `[B, K]` code activations.

    Returns:
        A scalar.
    """
    return ops.mean(ops.sum(ops.abs(code), axis=-1))


def kl_sparsity(code, target, epsilon=1e-6):
    """KL sparsity towards a target rate: `Σ_k KL(ρ ‖ ρ̂_k)` with `ρ̂_k` the batch mean.

    `KL(ρ ‖ ρ̂) = ρ log(ρ / ρ̂) + (1 − ρ) log((1 − ρ) / (1 − ρ̂))`, the divergence between
    Bernoulli variables, for codes in (0, 1) (sigmoid units) (Ng, "Sparse autoencoder").

    Args:
        code: `[B, K]` activations in (0, 1).
        target: float in (0, 1). The target mean activation ρ.
        epsilon: float. `ρ̂` is clipped to `[epsilon, 1 − epsilon]`. Defaults to `1e-6`.

    Returns:
        A scalar.
    """
    rate = ops.clip(ops.mean(code, axis=0), epsilon, 1 - epsilon)
    return ops.sum(
        target * ops.log(target / rate) + (1 - target) * ops.log((1 - target) / (1 - rate))
    )


def sparsity_penalty(code, kind, target):
    """`l1_sparsity(code)` for `kind="l1"`, `kl_sparsity(code, target)` for `"kl"`."""
    return l1_sparsity(code) if kind == "l1" else kl_sparsity(code, target)


def reconstruction_errors(reconstructions, targets, present, dtype):
    """Squared reconstruction errors averaged over features, where the modality is present.

    Args:
        reconstructions: list of `[B, D_m]`, one per modality.
        targets: list of `[B, D_m]`, with absent rows already replaced by finite values
            (the gradient of a masked-out NaN target would still be NaN).
        present: bool `[B, M]`.
        dtype: the dtype to compute in (float32 under mixed precision).

    Returns:
        A list of `[B]` tensors, `mean_d (r_bd − x_bd)²` where present and 0 elsewhere.
    """
    errors = []
    for i, (r, x) in enumerate(zip(reconstructions, targets, strict=True)):
        error = ops.mean(ops.square(ops.cast(r, dtype) - ops.cast(x, dtype)), axis=-1)
        errors.append(ops.where(present[:, i], error, ops.zeros_like(error)))
    return errors


def jacobian_step(kernel, derivative, jacobian=None):
    """One Dense layer of the chain rule: `J ← diag(f'(a)) Wᵀ J`.

    Args:
        kernel: `[D_in, D_out]` kernel `W` of `a = x W + b`.
        derivative: `[B, D_out]`, the activation derivative `f'(a)`.
        jacobian: `[B, D_in, D]`, the Jacobian of the layer's input w.r.t. the network
            input, or `None` when the layer's input is the network input (`J = I`).

    Returns:
        `[B, D_out, D]`, the Jacobian of the layer's output w.r.t. the network input.
    """
    if jacobian is None:
        product = ops.expand_dims(ops.transpose(kernel), 0)
    else:
        product = ops.einsum("io,bid->bod", kernel, jacobian)
    return ops.expand_dims(derivative, -1) * product


def single_layer_jacobian_sq_norm(kernel, derivative):
    """Closed form `‖diag(f'(a)) Wᵀ‖_F² = Σ_k f'(a_k)² Σ_i W_ik²` of one Dense layer.

    The formula of Rifai et al. for a sigmoid layer (`f' = h(1 − h)`), for any elementwise
    activation; it never forms the `[B, K, D]` Jacobian.

    Args:
        kernel: `[D, K]` kernel.
        derivative: `[B, K]`, `f'(a)`.

    Returns:
        `[B]`, the squared Frobenius norm per example.
    """
    column_norms = ops.sum(ops.square(kernel), axis=0)
    return ops.sum(ops.square(derivative) * column_norms, axis=-1)


def encoder_jacobian_sq_norm(hidden, projection, code_slope, activation):
    """`‖∂h/∂x‖_F²` per example for an encoder `x → Dense stack → linear map → f(·)`.

    Args:
        hidden: list of `(kernel, pre_activation)` of the hidden Dense layers, in order
            (empty for a single-layer encoder).
        projection: `[D_L, K]` kernel of the linear map to the code.
        code_slope: `[B, K]`, the code activation's derivative times any fusion scale.
        activation: the hidden layers' activation.

    Returns:
        `[B]`. The closed form for a single layer; the exact chain rule otherwise.
    """
    if not hidden:
        return single_layer_jacobian_sq_norm(projection, code_slope)
    jacobian = None
    for kernel, pre_activation in hidden:
        slope = activation_derivative(activation, pre_activation)
        jacobian = jacobian_step(kernel, slope, jacobian)
    jacobian = jacobian_step(projection, code_slope, jacobian)
    return ops.sum(ops.square(jacobian), axis=(1, 2))


def check_penalties(
    sparsity, sparsity_weight, sparsity_target, code_activation, contractive_weight, activations
):
    """Checks the penalty arguments, and that the penalties apply to the activations.

    Args:
        sparsity: `None`, `"l1"` or `"kl"`.
        sparsity_weight: float >= 0.
        sparsity_target: float, the KL target rate (in (0, 1) for `"kl"`).
        code_activation: the code activation (`"kl"` needs `"sigmoid"`).
        contractive_weight: float >= 0; positive turns the contractive penalty on.
        activations: the activations the contractive penalty differentiates.

    Raises:
        ValueError: naming the argument, what was expected and what was received.
    """
    if not (sparsity_weight >= 0 and contractive_weight >= 0):
        raise ValueError(
            "Expected non-negative penalty weights. Received: "
            f"sparsity_weight={sparsity_weight}, contractive_weight={contractive_weight}"
        )
    if sparsity not in (None, "l1", "kl"):
        raise ValueError(
            f"Expected `sparsity` to be None, 'l1' or 'kl'. Received: sparsity={sparsity!r}"
        )
    if sparsity == "kl" and activation_name(code_activation) != "sigmoid":
        raise ValueError(
            "The KL sparsity penalty needs codes in (0, 1): expected "
            f"code_activation='sigmoid'. Received: code_activation={code_activation!r}"
        )
    if sparsity == "kl" and not 0.0 < sparsity_target < 1.0:
        raise ValueError(
            f"Expected `sparsity_target` in (0, 1). Received: sparsity_target={sparsity_target!r}"
        )
    bad = [a for a in activations if activation_name(a) not in DIFFERENTIABLE_ACTIVATIONS]
    if contractive_weight > 0 and bad:
        raise ValueError(
            f"The contractive penalty needs encoder activations in "
            f"{DIFFERENTIABLE_ACTIVATIONS}. Received: {bad}"
        )


def check_energy(tied_weights, output_activation, code_activation):
    """Checks that an autoencoder has an energy: tied weights, linear output, known `A`.

    Raises:
        ValueError: naming what is missing.
    """
    if not tied_weights or activation_name(output_activation) != "linear":
        raise ValueError(
            "The energy exists for tied weights and linear reconstructions. Received: "
            f"tied_weights={tied_weights}, output_activation={output_activation!r}"
        )
    if activation_name(code_activation) not in ENERGY_ACTIVATIONS:
        raise ValueError(
            f"The energy needs the antiderivative of the code activation; it is known for "
            f"{ENERGY_ACTIVATIONS}. Received: code_activation={code_activation!r}"
        )


def tied_energy(pre_activation, offsets, present, activation, mean_fusion):
    """The potential energy of a tied-weight autoencoder with linear reconstructions.

    With `a = b + s Σ_present W_mᵀ x_m` (`s = 1 / n_present` for mean fusion, else 1),
    `F(x) = (1/s) Σ_k A(a_k) − ½ Σ_present ‖x_m − c_m‖²`, whose gradient w.r.t. each
    present `x_m` is `W_m f(a) + c_m − x_m = r_m(x) − x_m` (`A' = f`; `1/s` is constant
    in `x`).

    Args:
        pre_activation: `[B, K]`, the code pre-activation `a`.
        offsets: list of `[B, D_m]`, `x_m − c_m` per modality.
        present: bool `[B, M]`; absent modalities are left out.
        activation: the code activation, one of `ENERGY_ACTIVATIONS`.
        mean_fusion: bool, whether `s = 1 / n_present`.

    Returns:
        `[B]`.
    """
    dtype = pre_activation.dtype
    energy = ops.sum(antiderivative(activation, pre_activation), axis=-1)
    if mean_fusion:
        energy = energy * ops.maximum(ops.sum(ops.cast(present, dtype), axis=1), 1.0)
    for i, offset in enumerate(offsets):
        sq = ops.sum(ops.square(offset), axis=-1)
        energy = energy - 0.5 * ops.where(present[:, i], sq, ops.zeros_like(sq))
    return energy
