"""Diagonal Gaussian-mixture parameters shared by the Fisher-vector head and the VaDE prior.

A layer that carries a mixture holds three float32 weights, each positive or normalised by
its parameterisation so that gradient steps cannot leave the valid set:

- `mixture_logits` `[K]`: the weights are `softmax(mixture_logits)` (on the simplex);
- `means` `[K, D]`;
- `log_variances` `[K, D]`: the variances are `exp(log_variances)` (positive).

`set_mixture` assigns a fitted mixture (weights, means, variances, e.g. from sklearn's
`GaussianMixture(covariance_type="diag")`) after `check_gmm` has validated it, and
`mixture_tensors` reads it back, so a Fisher-vector layer can take the mixture a VaDE prior
learned (Jiang et al., "Variational Deep Embedding", IJCAI 2017).
"""

import keras
import numpy as np
from keras import ops

from mmrep.losses.divergences import LOG_2PI

# Weights of a fitted mixture must sum to one within this tolerance (float32 round-off).
WEIGHT_SUM_TOLERANCE = 1e-4


def check_gmm(weights, means, variances, *, num_components=None, dim=None):
    """Validates a diagonal mixture and returns it as float64 numpy arrays.

    Args:
        weights: array-like `[K]`, positive, summing to 1.
        means: array-like `[K, D]`.
        variances: array-like `[K, D]`, positive (diagonal covariances).
        num_components: int or `None`. The K the caller expects.
        dim: int or `None`. The D the caller expects.

    Returns:
        `(weights, means, variances)` as float64 arrays.

    Raises:
        ValueError: for wrong ranks or shapes, non-finite values, non-positive variances or
            weights, or weights that do not sum to 1, naming what was expected and received.
    """
    weights, means, variances = (
        np.asarray(a, dtype=np.float64) for a in (weights, means, variances)
    )
    if weights.ndim != 1 or means.ndim != 2 or variances.shape != means.shape:
        raise ValueError(
            "Expected mixture weights [K], means [K, D] and diagonal variances [K, D]. "
            f"Received shapes: weights={weights.shape}, means={means.shape}, "
            f"variances={variances.shape}"
        )
    k, d = means.shape
    if weights.shape[0] != k:
        raise ValueError(
            f"Expected {k} mixture weights, one per row of `means`. Received: {weights.shape[0]}"
        )
    if num_components is not None and k != num_components:
        raise ValueError(f"Expected a mixture of {num_components} components. Received: K={k}")
    if dim is not None and d != dim:
        raise ValueError(
            f"Expected a mixture over D={dim} features (the descriptor size). "
            f"Received means of dimension D={d}"
        )
    for name, array in (("weights", weights), ("means", means), ("variances", variances)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"Expected finite mixture {name}. Received non-finite values")
    if np.any(variances <= 0):
        raise ValueError(
            f"Expected positive variances. Received a minimum of {variances.min():.3g}"
        )
    if np.any(weights <= 0) or abs(weights.sum() - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ValueError(
            "Expected positive mixture weights summing to 1. "
            f"Received: minimum {weights.min():.3g}, sum {weights.sum():.6g}"
        )
    return weights, means, variances


def add_mixture_weights(layer, num_components, dim, *, trainable, means_initializer=None):
    """Creates `mixture_logits`, `means` and `log_variances` on `layer` (call in `build`).

    The initial mixture has equal weights, unit variances and means from
    `means_initializer` (random normal by default, so components differ before training).
    The weights are float32 with `autocast=False`: mixture statistics are computed in
    float32 under mixed precision.
    """
    layer.mixture_logits = layer.add_weight(
        name="mixture_logits",
        shape=(num_components,),
        initializer="zeros",
        trainable=trainable,
        dtype="float32",
        autocast=False,
    )
    layer.means = layer.add_weight(
        name="means",
        shape=(num_components, dim),
        initializer=means_initializer or keras.initializers.RandomNormal(stddev=1.0),
        trainable=trainable,
        dtype="float32",
        autocast=False,
    )
    layer.log_variances = layer.add_weight(
        name="log_variances",
        shape=(num_components, dim),
        initializer="zeros",
        trainable=trainable,
        dtype="float32",
        autocast=False,
    )


def set_mixture(layer, weights, means, variances):
    """Assigns a mixture (already checked by `check_gmm`) to `layer`'s mixture weights."""
    layer.mixture_logits.assign(np.log(weights).astype(np.float32))
    layer.means.assign(np.asarray(means, np.float32))
    layer.log_variances.assign(np.log(variances).astype(np.float32))


def mixture_tensors(layer):
    """Returns `{"weights" [K], "means" [K, D], "variances" [K, D]}` as float32 tensors."""
    return {
        # exp(logits - logsumexp) rather than ops.softmax, which warns on a size-1 axis (K=1).
        "weights": ops.exp(layer.mixture_logits - ops.logsumexp(layer.mixture_logits)),
        "means": ops.convert_to_tensor(layer.means),
        "variances": ops.exp(layer.log_variances),
    }


def log_density_coefficients(weights, means, variances):
    """The affine map from `[x, x**2]` to the log joint densities of a diagonal mixture.

    `log(w_k N(x | mu_k, diag(var_k))) = [x, x**2] @ kernel + bias`, with
    `kernel = [mu / var ; -1 / (2 var)]^T` and
    `bias_k = log w_k - (sum(mu_k**2 / var_k) + sum(log var_k) + D log 2 pi) / 2`: the
    quadratic form expanded so that the E-step of EM and the soft assignment of the Fisher
    vector are one matrix product over `2D` rather than a `[..., K, D]` broadcast (and the
    Fisher vector reuses `[x, x**2]` for its statistics).

    Args:
        weights: `[K]`; means, variances: `[K, D]` (tensors of one floating dtype).

    Returns:
        `(kernel [2D, K], bias [K])`, in the dtype of `means`.
    """
    precisions = 1.0 / variances
    kernel = ops.transpose(ops.concatenate([means * precisions, -0.5 * precisions], axis=-1))
    dim = ops.cast(ops.shape(means)[-1], means.dtype)
    constant = (
        ops.sum(ops.square(means) * precisions, axis=-1)
        + ops.sum(ops.log(variances), axis=-1)
        + dim * LOG_2PI
    )
    return kernel, ops.log(weights) - 0.5 * constant


def component_log_densities(x, weights, means, variances, dtype="float32"):
    """log(w_k N(x | mu_k, diag(var_k))) for every component, in float32 (or `dtype`).

    One matrix product of `[x, x**2]` with `log_density_coefficients`; this is the E-step
    of EM and the soft assignment of the Fisher vector.

    Args:
        x: tensor `[..., D]`.
        weights: `[K]`; means, variances: `[K, D]`, in `dtype`.
        dtype: the dtype computed in. Defaults to `"float32"`; EM uses `"float64"` where
            float32 loses the log-density of rows whose variance is at the floor.

    Returns:
        A tensor `[..., K]` of `dtype`.
    """
    x = ops.cast(x, dtype)
    kernel, bias = log_density_coefficients(weights, means, variances)
    return ops.matmul(ops.concatenate([x, ops.square(x)], axis=-1), kernel) + bias
