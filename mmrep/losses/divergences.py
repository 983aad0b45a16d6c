"""KL divergences and log densities of diagonal Gaussians, the terms of every VAE's ELBO.

Written with `keras.ops` and computed in float32 whatever the input dtype, since the sums
over latent dimensions lose precision in float16 (Kingma & Welling, "Auto-Encoding
Variational Bayes", ICLR 2014, appendix B, gives the closed form used here).
"""

import math

from keras import ops

LOG_2PI = math.log(2.0 * math.pi)


def kl_standard_normal(mean, log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)) per example, summed over the last axis.

    Args:
        mean: tensor `[..., D]`. The posterior means.
        log_var: tensor `[..., D]`. The posterior log-variances.

    Returns:
        A float32 tensor `[...]`: `0.5 * sum(exp(log_var) + mean**2 - 1 - log_var)`.

    Reference:
        Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014, appendix B.
    """
    mean = ops.cast(mean, "float32")
    log_var = ops.cast(log_var, "float32")
    return 0.5 * ops.sum(ops.exp(log_var) + ops.square(mean) - 1.0 - log_var, axis=-1)


def kl_diagonal_gaussians(mean_q, log_var_q, mean_p, log_var_p):
    """KL(N(mean_q, exp(log_var_q)) || N(mean_p, exp(log_var_p))), summed over the last axis.

    Args:
        mean_q, log_var_q: tensors `[..., D]`. The first distribution (the posterior).
        mean_p, log_var_p: tensors broadcastable to `[..., D]`. The second (the prior).

    Returns:
        A float32 tensor `[...]`.
    """
    mean_q, log_var_q, mean_p, log_var_p = (
        ops.cast(t, "float32") for t in (mean_q, log_var_q, mean_p, log_var_p)
    )
    ratio = ops.exp(log_var_q - log_var_p)
    mahalanobis = ops.square(mean_q - mean_p) * ops.exp(-log_var_p)
    return 0.5 * ops.sum(ratio + mahalanobis - 1.0 - (log_var_q - log_var_p), axis=-1)


def gaussian_log_density(x, mean, log_var):
    """log N(x | mean, diag(exp(log_var))), summed over the last axis, in float32.

    Args:
        x: tensor `[..., D]`.
        mean, log_var: tensors broadcastable to `x`.

    Returns:
        A float32 tensor `[...]`.
    """
    x, mean, log_var = (ops.cast(t, "float32") for t in (x, mean, log_var))
    per_dim = LOG_2PI + log_var + ops.square(x - mean) * ops.exp(-log_var)
    return -0.5 * ops.sum(per_dim, axis=-1)
