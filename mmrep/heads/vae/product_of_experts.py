"""Product of Gaussian experts with a standard-normal prior expert (the MVAE posterior).

Each observed modality `m` contributes a diagonal Gaussian expert `N(mu_m, sigma_m^2)`; the
prior `N(0, I)` is always one more expert. Their product, normalised, is Gaussian with
precision `T = 1 + sum_present 1 / sigma_m^2` and mean `(sum_present mu_m / sigma_m^2) / T`
(Wu & Goodman 2018, eq. 4 and their appendix on the product of Gaussians).
"""

import keras
from keras import ops

from mmrep.utils.modalities import check_presence

_KEYS = ("means", "log_vars")


@keras.saving.register_keras_serializable(package="mmrep")
class ProductOfExperts(keras.layers.Layer):
    """Combines per-modality Gaussian experts and the prior N(0, I) into one posterior.

    With log-precisions `-log_var_m`, the posterior log-precision is the log-sum-exp of
    `0` (the prior) and the present experts' log-precisions, and the posterior mean is the
    precision-weighted average of the present experts' means (the prior's mean is 0). The
    weights `exp(-log_var_m) / T` lie in `[0, 1]`, so nothing overflows even for very small
    variances. Everything is computed in float32, whatever the dtype policy, and the
    outputs are cast to the compute dtype.

    A modality marked absent in `presence` drops out exactly: its mean and log-variance
    are replaced by zeros (`ops.where`) before any arithmetic, so NaN or garbage there
    reaches neither the outputs nor the gradients. When no modality is present the result
    is the prior, `z_mean = 0` and `z_log_var = 0`.

    Args:
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: dict with `"means"` and `"log_vars"`, floating tensors `[B, M, L]`: the
            experts' means and log-variances, one row per modality.
        presence: optional `[B, M]` tensor, bool or numeric (non-zero means present).
            `None` means every expert is present.

    Returns:
        A dict with `"z_mean"` and `"z_log_var"`, each `[B, L]` in the compute dtype.

    Raises:
        ValueError: if `inputs` is not such a dict, the shapes are not `[B, M, L]` and
            equal, or `presence` is not `[B, M]`.
        TypeError: if a tensor is not floating.

    Example:

    >>> poe = ProductOfExperts()
    >>> out = poe(
    ...     {"means": np.zeros((2, 3, 4), "float32"), "log_vars": np.zeros((2, 3, 4), "float32")},
    ...     presence=np.array([[1, 1, 0], [0, 0, 0]], "float32"),
    ... )
    >>> np.exp(out["z_log_var"].numpy())[:, 0]  # 1 / (1 + 2), and the prior's 1
    array([0.33333334, 1.        ], dtype=float32)

    Reference:
        Wu & Goodman, "Multimodal Generative Models for Scalable Weakly-Supervised
        Learning", NeurIPS 2018.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = False

    def _shapes(self, inputs):
        if not isinstance(inputs, dict) or sorted(inputs) != sorted(_KEYS):
            received = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(
                f"{self.name}: expected a dict with keys {list(_KEYS)} (tensors [B, M, L]). "
                f"Received: {received}"
            )
        # Tensors in `call`, shapes in `build`.
        shapes = {k: tuple(getattr(inputs[k], "shape", inputs[k])) for k in _KEYS}
        means, log_vars = shapes["means"], shapes["log_vars"]
        if len(means) != 3 or len(log_vars) != 3 or means[1:] != log_vars[1:]:
            raise ValueError(
                f"{self.name}: expected `means` and `log_vars` of the same shape "
                f"[batch, modalities, latent_dim]. Received shapes: {shapes}"
            )
        return means

    def build(self, input_shape):
        self._shapes(input_shape)

    def call(self, inputs, presence=None):
        shape = self._shapes(inputs)
        for key in _KEYS:
            if not keras.backend.is_float_dtype(inputs[key].dtype):
                raise TypeError(
                    f"{self.name}: expected floating `{key}`. Received dtype: {inputs[key].dtype}"
                )
        means = ops.cast(inputs["means"], "float32")
        log_vars = ops.cast(inputs["log_vars"], "float32")
        if presence is None:
            present = ops.ones_like(means[..., :1], dtype="bool")
        else:
            num_modalities = shape[1] if shape[1] is not None else ops.shape(means)[1]
            present = check_presence(self, presence, num_modalities, means)[..., None]
            zeros = ops.zeros_like(means)
            means = ops.where(present, means, zeros)
            log_vars = ops.where(present, log_vars, zeros)
        log_precisions = -log_vars
        # Shift by the largest log-precision (at least the prior's 0) before exponentiating.
        shift = ops.maximum(
            ops.max(ops.where(present, log_precisions, ops.zeros_like(means)), axis=1),
            0.0,
        )
        scaled = ops.where(
            present, ops.exp(log_precisions - shift[:, None, :]), ops.zeros_like(means)
        )
        total = ops.exp(-shift) + ops.sum(scaled, axis=1)  # T * exp(-shift)
        z_mean = ops.sum(scaled * means, axis=1) / total
        z_log_var = -(shift + ops.log(total))
        return {
            "z_mean": ops.cast(z_mean, self.compute_dtype),
            "z_log_var": ops.cast(z_log_var, self.compute_dtype),
        }

    def compute_output_shape(self, inputs_shape, presence_shape=None):
        means = tuple(inputs_shape["means"])
        out = (means[0], means[2])
        return {"z_mean": out, "z_log_var": out}
