"""Reconstruction negative log-likelihoods of VAE decoders, summed over features.

Each function returns `-log p(x | decoder output)` per example, summed over the last axis
(not averaged), so that it sits on the ELBO's scale against the KL term that
`mmrep.heads.VAEHead` adds (Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR
2014, appendix C: Gaussian and Bernoulli MLP decoders). All are computed in float32
whatever the input dtype. The Keras `Loss` classes wrap them for `compile`; their
default `"sum_over_batch_size"` reduction averages over the batch (and divides by the
replica count under `tf.distribute`, as every Keras loss does).
"""

import keras
from keras import ops

from mmrep.losses.divergences import LOG_2PI

VARIANCES = ("fixed", "learned")


def gaussian_nll(x, mean, log_var=0.0):
    """`-log N(x | mean, diag(exp(log_var)))` per example, summed over the last axis.

    Args:
        x: tensor `[..., D]`. The data.
        mean: tensor `[..., D]`. The decoder's mean.
        log_var: tensor broadcastable to `x`, or a float. The observation log-variance
            (fixed or learned). Defaults to `0.0` (unit variance).

    Returns:
        A float32 tensor `[...]`: `0.5 * sum(log(2 pi) + log_var + (x - mean)**2 /
        exp(log_var))`.
    """
    x, mean = ops.cast(x, "float32"), ops.cast(mean, "float32")
    log_var = ops.cast(log_var, "float32")
    per_dim = LOG_2PI + log_var + ops.square(x - mean) * ops.exp(-log_var)
    return 0.5 * ops.sum(per_dim + ops.zeros_like(x), axis=-1)


def bernoulli_nll(x, logits):
    """`-log Bernoulli(x | sigmoid(logits))` per example, summed over the last axis.

    Computed from the logits as `max(l, 0) - l x + log(1 + exp(-|l|))`, which neither
    overflows nor loses the tails; `x` may be any value in [0, 1] (e.g. pixels / 255, the
    usual continuous relaxation of binarised images).

    Args:
        x: tensor `[..., D]` with values in [0, 1].
        logits: tensor `[..., D]`. The decoder's logits.

    Returns:
        A float32 tensor `[...]`.
    """
    x, logits = ops.cast(x, "float32"), ops.cast(logits, "float32")
    per_dim = ops.relu(logits) - logits * x + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.sum(per_dim, axis=-1)


def categorical_nll(x, logits):
    """`-sum(x * log_softmax(logits))` per example over the last axis, in float32.

    The negative log-likelihood of a one-hot (or soft) label `x` under the categorical
    distribution `softmax(logits)`, e.g. a label treated as a modality (Wu & Goodman 2018).

    Args:
        x: tensor `[..., C]`, one-hot or a distribution over `C` classes.
        logits: tensor `[..., C]`. The decoder's logits.

    Returns:
        A float32 tensor `[...]`.
    """
    x, logits = ops.cast(x, "float32"), ops.cast(logits, "float32")
    return -ops.sum(x * ops.log_softmax(logits, axis=-1), axis=-1)


def split_gaussian(parameters):
    """Splits a learned-variance decoder output `[..., 2D]` into `(mean, log_var)`.

    Args:
        parameters: tensor `[..., 2D]`, the output of
            `VectorDecoder(distribution="gaussian", variance="learned")`.

    Returns:
        `(mean, log_var)`, each `[..., D]`.

    Raises:
        ValueError: if the last axis is not even.
    """
    width = parameters.shape[-1]
    if width is None or width % 2:
        raise ValueError(
            "Expected decoder parameters [..., 2 * D] (means then log-variances). "
            f"Received shape: {tuple(parameters.shape)}"
        )
    return parameters[..., : width // 2], parameters[..., width // 2 :]


@keras.saving.register_keras_serializable(package="mmrep")
class GaussianNLL(keras.losses.Loss):
    """Gaussian reconstruction loss (`gaussian_nll`) for `compile`.

    Args:
        variance: float > 0, or `"learned"`. A float is the fixed observation variance
            and `y_pred` is the mean `[B, D]`; `"learned"` reads `y_pred` as
            `[B, 2D]` (means then log-variances, `VectorDecoder(variance="learned")`).
            Defaults to `1.0`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: str. Defaults to `"gaussian_nll"`.
        **kwargs: other `keras.losses.Loss` arguments.

    Raises:
        ValueError: for a non-positive variance or an unknown string.
    """

    def __init__(
        self, variance=1.0, reduction="sum_over_batch_size", name="gaussian_nll", **kwargs
    ):
        super().__init__(reduction=reduction, name=name, **kwargs)
        if variance != "learned" and (isinstance(variance, str) or not variance > 0):
            raise ValueError(
                f"Expected `variance` to be a positive float or 'learned'. Received: {variance!r}"
            )
        self.variance = variance

    def call(self, y_true, y_pred):
        if self.variance == "learned":
            mean, log_var = split_gaussian(y_pred)
        else:
            mean, log_var = y_pred, ops.log(ops.cast(self.variance, "float32"))
        if tuple(y_true.shape)[-1:] != tuple(mean.shape)[-1:]:
            raise ValueError(
                f"{self.name}: expected targets with {mean.shape[-1]} features (the decoder "
                f"mean). Received: y_true {tuple(y_true.shape)}, y_pred {tuple(y_pred.shape)}"
            )
        return gaussian_nll(y_true, mean, log_var)

    def get_config(self):
        return {**super().get_config(), "variance": self.variance}


@keras.saving.register_keras_serializable(package="mmrep")
class BernoulliNLL(keras.losses.Loss):
    """Bernoulli reconstruction loss from logits (`bernoulli_nll`) for `compile`.

    Targets `[B, ...]` in [0, 1] and logits of the same shape; the features (every axis
    after the batch) are summed.

    Args:
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: str. Defaults to `"bernoulli_nll"`.
        **kwargs: other `keras.losses.Loss` arguments.
    """

    def __init__(self, reduction="sum_over_batch_size", name="bernoulli_nll", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)

    def call(self, y_true, y_pred):
        if tuple(y_true.shape)[1:] != tuple(y_pred.shape)[1:]:
            raise ValueError(
                f"{self.name}: expected targets shaped like the logits. Received: y_true "
                f"{tuple(y_true.shape)}, y_pred {tuple(y_pred.shape)}"
            )
        batch = ops.shape(y_pred)[0]
        return bernoulli_nll(ops.reshape(y_true, (batch, -1)), ops.reshape(y_pred, (batch, -1)))
