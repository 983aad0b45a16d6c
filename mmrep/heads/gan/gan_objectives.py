"""Per-example objectives of the energy-based GAN (`mmrep.heads.EBMGAN`).

The discriminator `D(x)` is a negative energy: `p(x) ∝ exp(D(x))`. Its objective raises
`D` on data and lowers it on the generator's samples; the generator raises `D` on its
samples. Three objectives (Zhai et al., NeurIPS 2019, and their code, apple/ml-afv):

| objective         | discriminator term (per example)        | generator term         |
|-------------------|-----------------------------------------|------------------------|
| `"least_squares"` | `(D(x) - 1)**2 + D(G(z))**2`            | `(D(G(z)) - 1)**2`     |
| `"hinge"`         | `relu(1 - D(x)) + relu(1 + D(G(z)))`    | `-D(G(z))`             |
| `"energy"`        | `-D(x) + D(G(z))`                       | `-D(G(z))`             |

A zero-centred gradient penalty on data, `(ρ/2)·‖∇ₓD(x)‖²` per example
(`gradient_penalty_terms`; Mescheder, Geiger & Nowozin, "Which Training Methods for GANs
do actually Converge?", ICML 2018), may be added to any discriminator objective.

`"energy"` is the plain bound of the variational EBM (a maximum-likelihood gradient with
the generator as the sampler). Real and generated examples come in pairs of the same
batch size, so the mean of each per-example sum is the sum of the two batch means of
the authors' formulas. `BatchMean`, a Keras `Loss`, averages per-example terms over the
batch and divides by the replica count under `tf.distribute`, as every Keras loss does,
so that the replicas' summed gradients are the global-batch gradient.
`HYPERPARAMETERS` / `check_hyperparameters` state what `EBMGAN`'s plain arguments may be.
"""

import keras
import tensorflow as tf
from keras import ops

from mmrep.utils.arguments import is_int

OBJECTIVES = ("least_squares", "hinge", "energy")


def _is_weight(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


_WEIGHT = ("a float >= 0", _is_weight)
_STEPS = ("an int >= 1", lambda v: is_int(v, 1))
# The plain hyperparameters of `EBMGAN`: {name: (what it must be, predicate)}.
HYPERPARAMETERS = {
    "objective": (f"one of {OBJECTIVES}", lambda v: v in OBJECTIVES),
    "generator_regularization": _WEIGHT,
    "regularization_noise_std": _WEIGHT,
    "gradient_penalty": _WEIGHT,
    "ema_decay": ("a float in [0, 1]", lambda v: _is_weight(v) and v <= 1),
    "discriminator_steps": _STEPS,
    "generator_steps": _STEPS,
    "seed": ("an int or None", lambda v: v is None or is_int(v, -(2**63))),
}


def check_hyperparameters(arguments):
    """Checks a dict of `EBMGAN` hyperparameters (names of `HYPERPARAMETERS`).

    Returns:
        The dict, with every integer (a NumPy one included) as a plain Python int.

    Raises:
        ValueError: naming the first bad argument, what it must be and what it is.
    """
    for name, value in arguments.items():
        wanted, ok = HYPERPARAMETERS[name]
        if not ok(value):
            raise ValueError(f"Expected `{name}` to be {wanted}. Received: {name}={value!r}")
    return {name: int(value) if is_int(value) else value for name, value in arguments.items()}


def _check_objective(objective):
    if objective not in OBJECTIVES:
        raise ValueError(
            f"Expected `objective` to be one of {OBJECTIVES}. Received: objective={objective!r}"
        )


def discriminator_loss_terms(objective, d_real, d_fake):
    """The discriminator's objective per example pair (lower is better for D).

    Args:
        objective: str. One of `"least_squares"`, `"hinge"`, `"energy"`.
        d_real: tensor `[B]`. `D` on data.
        d_fake: tensor `[B]`. `D` on generated samples.

    Returns:
        Float32 tensor `[B]` (see the module docstring for the formulas).

    Raises:
        ValueError: for an unknown `objective`.
    """
    _check_objective(objective)
    d_real, d_fake = ops.cast(d_real, "float32"), ops.cast(d_fake, "float32")
    if objective == "least_squares":
        return ops.square(d_real - 1.0) + ops.square(d_fake)
    if objective == "hinge":
        return ops.relu(1.0 - d_real) + ops.relu(1.0 + d_fake)
    return d_fake - d_real


def generator_loss_terms(objective, d_fake):
    """The generator's objective per sample (lower is better for G).

    Args:
        objective: str. One of `"least_squares"`, `"hinge"`, `"energy"`.
        d_fake: tensor `[B]`. `D` on generated samples.

    Returns:
        Float32 tensor `[B]`: `(d_fake - 1)**2` for least squares, else `-d_fake`.

    Raises:
        ValueError: for an unknown `objective`.
    """
    _check_objective(objective)
    d_fake = ops.cast(d_fake, "float32")
    if objective == "least_squares":
        return ops.square(d_fake - 1.0)
    return -d_fake


def ema_regularization_terms(samples, ema_samples, noise=None):
    """The generator's "MCMC" regulariser per sample: `mean((G(z) - G_ema(z) + ε)**2)`.

    It stands in for the entropy term of the variational EBM bound: it keeps the
    generator near its moving average plus Gaussian noise `ε ~ N(0, σ²)`, one Langevin-like
    step (Zhai et al. 2019, apple/ml-afv `losses.py`). The mean runs over every non-batch
    axis, so the batch mean of these terms is the papers' mean over all elements.

    Args:
        samples: tensor `[B, ...]`. `G(z)`.
        ema_samples: tensor `[B, ...]`. `G_ema(z)` on the same `z` (no gradient flows).
        noise: tensor `[B, ...]` or `None`. `ε`; `None` for none.

    Returns:
        Float32 tensor `[B]`.
    """
    diff = ops.cast(samples, "float32") - ops.stop_gradient(ops.cast(ema_samples, "float32"))
    if noise is not None:
        diff = diff + ops.cast(noise, "float32")
    return ops.mean(ops.reshape(ops.square(diff), (ops.shape(diff)[0], -1)), axis=-1)


def gradient_penalty_terms(score_fn, x, weight):
    """Scores of `x` and the penalty `(weight/2)·‖∇ₓ score(x_i)‖²` of each example.

    One forward pass gives both (the penalty's gradient then flows to the parameters
    through a second-order tape). The gradient of the summed scores is each example's
    own gradient when the scores of different examples are independent.

    Args:
        score_fn: callable, float32 samples `[B, ...]` to float32 scores `[B]`.
        x: tensor `[B, ...]`.
        weight: float. `ρ`.

    Returns:
        A tuple `(scores [B], penalty [B])`, float32.
    """
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = score_fn(x)
        total = ops.sum(scores)
    gradients = tape.gradient(total, x)
    squared = ops.sum(ops.reshape(ops.square(gradients), (ops.shape(x)[0], -1)), axis=-1)
    return scores, 0.5 * weight * squared


class BatchMean(keras.losses.Loss):
    """A Keras `Loss` that averages given per-example terms over the (global) batch.

    `loss(terms)` is `mean(terms)` divided by the number of replicas in sync (Keras'
    `"sum_over_batch_size"` reduction), so a custom `train_step` that sums the replicas'
    gradients gets the gradient of the global-batch mean.

    Args:
        name: str. The loss name. Defaults to `"batch_mean"`.
    """

    def __init__(self, name="batch_mean"):
        super().__init__(name=name, reduction="sum_over_batch_size", dtype="float32")

    def call(self, y_true, y_pred):
        del y_true
        return y_pred

    def __call__(self, terms):
        """Returns the float32 scalar `mean(terms) / num_replicas_in_sync`."""
        return super().__call__(terms, terms)
