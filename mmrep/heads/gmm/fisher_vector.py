"""The Fisher vector of a set of local descriptors under a diagonal GMM, batched and masked.

The Fisher vector (Perronnin & Dance, CVPR 2007) encodes a set `X = {x_1..x_N}` by the
gradient of the mixture's average log-likelihood with respect to its parameters, whitened
by the diagonal approximation of the Fisher information. With soft assignments
`γ_nk = w_k N(x_n|μ_k,σ_k²) / Σ_j w_j N(x_n|μ_j,σ_j²)` and `u_nk = (x_n - μ_k) / σ_k`
(Sánchez, Perronnin, Mensink & Verbeek, IJCV 2013, eq. 16-18; VLFeat's `vl_fisher`):

    G_α_k = 1/(N sqrt(w_k))   Σ_n (γ_nk - w_k)
    G_μ_k = 1/(N sqrt(w_k))   Σ_n γ_nk u_nk
    G_σ_k = 1/(N sqrt(2 w_k)) Σ_n γ_nk (u_nk² - 1)

All come from the statistics `S0 = Σ γ`, `S1 = γᵀX`, `S2 = γᵀX²` (batched matrix products,
no `[N, K, D]` tensor). Descriptors and means are shifted by the mixture's mean first (the
result is invariant to it), so the expanded squares keep their precision in float32.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mmrep.heads.gmm import gmm_em
from mmrep.heads.gmm.mixture import (
    add_mixture_weights,
    check_gmm,
    log_density_coefficients,
    mixture_tensors,
    set_mixture,
)
from mmrep.utils.arguments import is_int
from mmrep.utils.finite_inputs import checked_finite
from mmrep.utils.masks import as_bool_mask
from mmrep.utils.power_normalization import l2_normalize, signed_sqrt

_MIXTURE_KEYS = ("weights", "means", "variances")


@keras.saving.register_keras_serializable(package="mmrep")
class FisherVector(keras.layers.Layer):
    """Fisher-vector encoding of descriptor sets `[B, N, D]` under a diagonal GMM.

    The output is `[B, 2KD]`: the mean block `G_μ` (K×D, component-major) then the
    variance block `G_σ`, with the signs and normalisation of Sánchez et al. (2013) and
    VLFeat (see the module docstring); `include_weights=True` prepends the K weight terms
    `G_α` (`[B, K + 2KD]`). `improved=True` applies the signed square root
    `sign(z) sqrt(|z| + 1e-12)` then L2 normalisation over the whole vector (Perronnin,
    Sánchez & Mensink, ECCV 2010). N is the number of real descriptors of each set.

    Soft assignments, statistics and normalisation are float32 under any dtype policy; the
    output is cast to the compute dtype. Masked-out descriptors (even NaN) reach neither
    the output nor the gradients; a set without a real descriptor encodes to zeros.

    Where the mixture comes from:

    - `set_gmm(weights, means, variances)` (e.g. a sklearn diagonal `GaussianMixture`'s
      `weights_`, `means_`, `covariances_`), the `gmm=` constructor argument (the same as
      a dict, kept in the config), or `adapt(data)` (EM by `fit_diagonal_gmm`). It is held
      in the weights `mixture_logits` (softmax), `means`, `log_variances`, so `.keras` files
      and SavedModels keep it. With `trainable_gmm=False` (default), calling the layer
      before the mixture is given is an error (not a silent random mixture); the weight
      `gmm_assigned` records it, so this survives saving, loading and `set_weights`.
    - `trainable_gmm=True`: the same weights are trainable, so the mixture is learned
      end-to-end; it starts from `gmm` if given, else from equal weights, unit variances
      and random normal means.
    - `external_mixture=True`: the layer holds no mixture; each call takes
      `mixture={"weights" [K], "means" [K, D], "variances" [K, D]}` tensors (e.g.
      `GaussianMixturePrior.mixture()`), and gradients flow into them.

    Args:
        num_components: int. K, the number of mixture components.
        improved: bool. Signed square root then L2 normalisation. Defaults to `True`.
        include_weights: bool. Prepend the K mixture-weight terms. Defaults to `False`.
        trainable_gmm: bool. Whether the mixture weights are trainable. Defaults to `False`.
        external_mixture: bool. Whether the mixture is passed at call time.
            Defaults to `False`.
        gmm: dict `{"weights" [K], "means" [K, D], "variances" [K, D]}` of array-likes, or
            `None`. A mixture assigned when the layer is built. Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: floating tensor `[B, N, D]`, the descriptors.
        mask: optional `[B, N]` tensor, bool or numeric (non-zero marks a real descriptor).
        mixture: dict of tensors as above; required with `external_mixture=True`, refused
            otherwise.

    Returns:
        `[B, 2KD]` (or `[B, K + 2KD]`) in the compute dtype.

    Raises:
        ValueError: for bad constructor arguments; descriptors not `[B, N, D]` or of
            another D than the mixture; a mask not `[B, N]`; an unset mixture (above); a
            missing, extra or misshapen `mixture`; NaN/Inf real descriptors in eager calls.
            In graph mode (`tf.function`, `fit`, SavedModel) the last is checked by
            `tf.debugging.assert_all_finite` (`InvalidArgumentError` at run time); XLA
            drops that op, so under `jit_compile` it makes that example's output NaN.
        TypeError: for non-floating descriptors.

    Example:

    >>> layer = FisherVector(2, gmm={"weights": [0.5, 0.5], "means": [[0.0], [1.0]],
    ...                              "variances": [[1.0], [1.0]]})
    >>> tuple(layer(np.zeros((3, 5, 1), "float32")).shape)
    (3, 4)

    Reference:
        Perronnin & Dance, "Fisher Kernels on Visual Vocabularies for Image
        Categorization", CVPR 2007. Perronnin, Sánchez & Mensink, "Improving the Fisher
        Kernel for Large-Scale Image Classification", ECCV 2010. Sánchez, Perronnin,
        Mensink & Verbeek, "Image Classification with the Fisher Vector: Theory and
        Practice", IJCV 2013. Vedaldi & Fulkerson, VLFeat, "Fisher Vector fundamentals".
    """

    def __init__(
        self,
        num_components,
        improved=True,
        include_weights=False,
        trainable_gmm=False,
        external_mixture=False,
        gmm=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not is_int(num_components, 1):
            raise ValueError(
                f"Expected `num_components` to be a positive int. Received: {num_components!r}"
            )
        num_components = int(num_components)
        flags = dict(improved=improved, include_weights=include_weights)
        flags.update(trainable_gmm=trainable_gmm, external_mixture=external_mixture)
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise ValueError(f"Expected `{name}` to be a bool. Received: {value!r}")
        if external_mixture and (trainable_gmm or gmm is not None):
            raise ValueError(
                "With `external_mixture=True` the mixture comes from the `mixture=` call "
                f"argument: expected trainable_gmm=False and gmm=None. Received: "
                f"trainable_gmm={trainable_gmm}, gmm={'given' if gmm is not None else None}"
            )
        self._gmm = None
        if gmm is not None:
            if not isinstance(gmm, dict) or sorted(gmm) != sorted(_MIXTURE_KEYS):
                got = sorted(gmm) if isinstance(gmm, dict) else type(gmm).__name__
                raise ValueError(
                    f"Expected `gmm` to be a dict with keys {list(_MIXTURE_KEYS)}. Received: {got}"
                )
            self._gmm = check_gmm(*(gmm[k] for k in _MIXTURE_KEYS), num_components=num_components)
        self.num_components = num_components
        self.improved = improved
        self.include_weights = include_weights
        self.trainable_gmm = trainable_gmm
        self.external_mixture = external_mixture
        self.gmm = None if gmm is None else _as_config(self._gmm)
        self.descriptor_dim = None
        self._gmm_known = False
        # A Keras mask on the descriptors is read as `mask`, not propagated.
        self.supports_masking = True

    def build(self, inputs_shape, mixture_shape=None):
        dim = self._check_descriptor_shape(inputs_shape)
        if dim is None:
            raise ValueError(
                f"{self.name}: the descriptor size D (last axis) must be known to build. "
                f"Received shape: {tuple(inputs_shape)}"
            )
        if self._gmm is not None and self._gmm[1].shape[1] != dim:
            raise ValueError(
                f"{self.name}: the `gmm` given is over D={self._gmm[1].shape[1]} features, "
                f"the descriptors have D={dim} (shape {tuple(inputs_shape)})"
            )
        self.descriptor_dim = dim
        if not self.external_mixture:
            add_mixture_weights(self, self.num_components, dim, trainable=self.trainable_gmm)
            self.gmm_assigned = self.add_weight(
                name="gmm_assigned", shape=(), initializer="zeros", trainable=False, autocast=False
            )
            if self._gmm is not None:
                self._assign(*self._gmm)
        self.built = True

    def set_gmm(self, weights, means, variances):
        """Assigns a diagonal GMM (e.g. a fitted sklearn `GaussianMixture`).

        Builds the layer for `D = means.shape[1]` if it is not built yet.

        Args:
            weights: array-like `[K]`, positive, summing to 1.
            means: array-like `[K, D]`.
            variances: array-like `[K, D]`, positive (sklearn's `covariances_` for
                `covariance_type="diag"`).

        Raises:
            ValueError: with `external_mixture=True`; for a mixture of another K, or
                another D than the descriptors the layer was built for (naming both), or
                an invalid one (non-finite, non-positive variances, weights not summing
                to 1; see `mmrep.heads.gmm.mixture.check_gmm`).
        """
        if self.external_mixture:
            raise ValueError(
                f"{self.name}: `set_gmm` has no effect with `external_mixture=True`; pass "
                "the mixture as `mixture=` when calling the layer."
            )
        checked = check_gmm(
            weights, means, variances, num_components=self.num_components, dim=self.descriptor_dim
        )
        if not self.built:
            self.build((None, None, checked[1].shape[1]))
        self._assign(*checked)

    def adapt(self, data, **kwargs):
        """Fits the mixture by EM on `data` and assigns it (`set_gmm`).

        Args:
            data: the descriptors: an array `[..., D]`, or a `tf.data.Dataset` of such
                tensors or of `(descriptors, mask)` pairs.
            **kwargs: passed to `mmrep.heads.fit_diagonal_gmm` (such as `seed`).

        Returns:
            The `GMMFit` (float64 `weights`, `means`, `variances`) that was assigned.

        Raises:
            ValueError: as `set_gmm`.
        """
        if self.external_mixture:
            raise ValueError(f"{self.name}: `adapt` has no effect with `external_mixture=True`")
        fit = gmm_em.fit_diagonal_gmm(data, self.num_components, **kwargs)
        self.set_gmm(fit.weights, fit.means, fit.variances)
        return fit

    def _assign(self, weights, means, variances):
        set_mixture(self, weights, means, variances)
        self.gmm_assigned.assign(1.0)
        self._gmm_known = True

    def _check_gmm_given(self):
        if self.trainable_gmm or self._gmm_known:
            return
        # The flag weight is the truth (it is saved, loaded and copied with the weights);
        # read its current value eagerly even while a graph is being traced.
        with tf.init_scope():
            self._gmm_known = bool(np.asarray(self.gmm_assigned.value) > 0.5)
        if not self._gmm_known:
            raise ValueError(
                f"{self.name}: the mixture is not set. Call `set_gmm(weights, means, "
                "variances)` or `adapt(data)`, pass `gmm=` to the constructor, or use "
                "`trainable_gmm=True` to learn it from its random start."
            )

    def _call_mixture(self, mixture, dim):
        if not self.external_mixture:
            if mixture is not None:
                raise ValueError(
                    f"{self.name}: `mixture=` is only taken with `external_mixture=True`; "
                    "this layer holds its own mixture (see `set_gmm`)."
                )
            self._check_gmm_given()
            return mixture_tensors(self)
        if not isinstance(mixture, dict) or sorted(mixture) != sorted(_MIXTURE_KEYS):
            got = sorted(mixture) if isinstance(mixture, dict) else type(mixture).__name__
            raise ValueError(
                f"{self.name}: with `external_mixture=True` expected `mixture` to be a dict "
                f"with keys {list(_MIXTURE_KEYS)}. Received: {got}"
            )
        k = self.num_components
        expected = {"weights": (k,), "means": (k, dim), "variances": (k, dim)}
        for key, shape in expected.items():
            got = tuple(mixture[key].shape)
            if not _shape_matches(got, shape):
                raise ValueError(
                    f"{self.name}: expected mixture[{key!r}] of shape {shape} (K={k}, "
                    f"descriptor D={dim}). Received: {got}"
                )
        return {key: ops.cast(mixture[key], "float32") for key in _MIXTURE_KEYS}

    def _check_descriptor_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 3:
            raise ValueError(
                f"{self.name}: expected descriptors of shape [batch, num_descriptors, D]. "
                f"Received: shape={shape}"
            )
        dim = shape[-1]
        if dim is not None and self.descriptor_dim is not None and dim != self.descriptor_dim:
            raise ValueError(
                f"{self.name}: the mixture is over D={self.descriptor_dim} features, "
                f"the descriptors have D={dim} (shape {shape})"
            )
        return dim

    def _valid(self, inputs, mask):
        """The mask as bool `[B, N]`, or `None` when every descriptor is real."""
        if mask is None:
            return None
        expected, got = tuple(inputs.shape[:2]), tuple(mask.shape)
        if not _shape_matches(got, expected):
            raise ValueError(
                f"{self.name}: expected `mask` of shape [batch, num_descriptors] {expected}. "
                f"Received: shape={got}"
            )
        return as_bool_mask(mask)

    def call(self, inputs, mask=None, mixture=None):
        if not keras.backend.is_float_dtype(inputs.dtype):
            raise TypeError(
                f"{self.name}: expected floating descriptors. Received dtype: {inputs.dtype}"
            )
        dim = self._check_descriptor_shape(inputs.shape)
        params = self._call_mixture(mixture, dim if dim is not None else self.descriptor_dim)
        valid = self._valid(inputs, mask)
        x = ops.cast(inputs, "float32")
        if valid is not None:
            # Padded rows become zeros before any arithmetic, so that NaN there cannot reach
            # the gradients through the untaken branch of a later `where`.
            x = ops.where(valid[..., None], x, ops.zeros_like(x))
        x = checked_finite(x, self.name, "real (unmasked) descriptors")
        weights, means, variances = (params[k] for k in _MIXTURE_KEYS)
        centre = ops.stop_gradient(ops.sum(weights[:, None] * means, axis=0))
        x = x - centre
        means = means - centre

        # [x, x²] serves twice: the log joint densities are one matrix product with it, and
        # the statistics γᵀx, γᵀx² another. Soft assignments are their softmax over
        # components (one pass of exponentials, after subtracting the maximum).
        moments = ops.concatenate([x, ops.square(x)], axis=-1)  # [B, N, 2D]
        kernel, bias = log_density_coefficients(weights, means, variances)
        gamma = ops.softmax(ops.matmul(moments, kernel) + bias, axis=-1)  # [B, N, K]
        if valid is not None:
            gamma = ops.where(valid[..., None], gamma, ops.zeros_like(gamma))
            count = ops.sum(ops.cast(valid, "float32"), axis=1)  # [B]
        else:
            count = ops.full((ops.shape(x)[0],), ops.cast(ops.shape(x)[1], "float32"))
        s0 = ops.sum(gamma, axis=1)[..., None]  # [B, K, 1]
        s12 = ops.einsum("bnk,bnd->bkd", gamma, moments)
        s1, s2 = ops.split(s12, 2, axis=-1)

        inv_n = (1.0 / ops.maximum(count, 1.0))[:, None, None]
        sqrt_w = ops.sqrt(weights)[:, None]
        g_mu = (s1 - s0 * means) * inv_n / (ops.sqrt(variances) * sqrt_w)
        g_sigma = (
            (s2 - 2.0 * means * s1 + (ops.square(means) - variances) * s0)
            * inv_n
            / (variances * np.sqrt(2.0) * sqrt_w)
        )
        batch = ops.shape(x)[0]
        blocks = [ops.reshape(g_mu, (batch, -1)), ops.reshape(g_sigma, (batch, -1))]
        if self.include_weights:
            g_alpha = (s0[..., 0] * inv_n[:, :, 0] - weights) / ops.sqrt(weights)
            blocks.insert(0, g_alpha)
        fv = ops.concatenate(blocks, axis=-1)
        fv = ops.where((count > 0)[:, None], fv, ops.zeros_like(fv))
        if self.improved:
            fv = l2_normalize(signed_sqrt(fv))
        return ops.cast(fv, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, inputs_shape, mask_shape=None, mixture_shape=None):
        dim = self._check_descriptor_shape(inputs_shape)
        dim = dim if dim is not None else self.descriptor_dim
        k = self.num_components
        width = None if dim is None else 2 * k * dim + (k if self.include_weights else 0)
        return (inputs_shape[0], width)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_components": self.num_components,
                "improved": self.improved,
                "include_weights": self.include_weights,
                "trainable_gmm": self.trainable_gmm,
                "external_mixture": self.external_mixture,
                "gmm": self.gmm,
            }
        )
        return config


def _shape_matches(got, expected):
    """Same rank, and equal wherever both sizes are known."""
    pairs = zip(got, expected, strict=False)
    return len(got) == len(expected) and all(g is None or e is None or g == e for g, e in pairs)


def _as_config(arrays):
    return {key: a.tolist() for key, a in zip(_MIXTURE_KEYS, arrays, strict=True)}
