"""The Gaussian-mixture prior of Variational Deep Embedding (VaDE), a clustering VAE prior.

VaDE replaces the VAE's N(0, I) prior by a mixture `p(z) = sum_c pi_c N(z | mu_c, diag(s2_c))`
and approximates `q(c | x)` by the mixture posterior `gamma = p(c | z)` of the sampled latent.
With a Gaussian posterior `q(z | x) = N(m, diag(v))`, the prior terms of the ELBO (Jiang et al.,
eq. 12, without the reconstruction term) are analytic given gamma; as a loss to minimise

    E_q[log q(z|x)] + E_q[log q(c|x)] - E_q[log p(z|c)] - E_q[log p(c)]
        = sum_c gamma_c KL(N(m, v) || N(mu_c, s2_c)) + KL(gamma || pi),

the form computed here (the log 2 pi terms cancel). With one component it is the KL to that
Gaussian. The mixture is held as in `mmrep.heads.gmm.mixture`: softmax logits (weights on the
simplex), means and log-variances (variances positive), so `mixture()` can feed a Fisher-vector
layer the mixture the prior learned.

Reference:
    Jiang, Zheng, Tan, Tang & Zhou, "Variational Deep Embedding: An Unsupervised and Generative
    Approach to Clustering", IJCAI 2017.
"""

import keras
from keras import ops

from mmrep.heads.gmm import gmm_em
from mmrep.heads.gmm.mixture import (
    add_mixture_weights,
    check_gmm,
    component_log_densities,
    mixture_tensors,
    set_mixture,
)
from mmrep.losses.divergences import kl_diagonal_gaussians
from mmrep.utils.arguments import check_int, is_int


@keras.saving.register_keras_serializable(package="mmrep")
class GaussianMixturePrior(keras.layers.Layer):
    """A learnable diagonal Gaussian-mixture prior over VAE latents, with cluster assignments.

    Plugs into `mmrep.heads.VAEHead(latent_dim, prior=GaussianMixturePrior(K))`: the head
    samples `z`, calls the prior and adds the mean of its `"kl"` as the KL part of its loss.
    Initialise the mixture from a GMM fitted on pretrained latents with `set_gmm` (or
    `adapt`), as VaDE does, then train everything jointly.

    All outputs are float32 whatever the dtype policy: the KL and responsibilities are mixture
    statistics (log-sum-exp over components, sums over latent dimensions) computed in float32.

    Args:
        num_components: int. The number of mixture components (clusters) K.
        seed: int or `None`. Seeds the random initial means (random normal, so that
            components differ before a GMM is assigned). Defaults to `None`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        z: tensor `[B, L]` (or `[..., L]`). The sampled latent; at inference `VAEHead` passes
            the posterior mean. The responsibilities are computed from it.
        z_mean: tensor of `z`'s shape. The posterior means.
        z_log_var: tensor of `z`'s shape. The posterior log-variances.
        training: bool or `None`. Accepted for the head's contract; the prior computes the
            same terms in training and inference.

    Returns:
        A dict: `"kl"` `[B]` float32, the VaDE prior terms per example (a loss);
        `"responsibilities"` `[B, K]` float32, `gamma = p(c | z)`; `"cluster"` `[B]` int32,
        `argmax gamma`.

    Raises:
        ValueError: for a non-positive `num_components`, mismatched shapes of `z`, `z_mean`,
            `z_log_var`, or a latent size that differs from the built one.

    Example:

    >>> prior = GaussianMixturePrior(3, seed=0)
    >>> z = keras.random.normal((4, 2), seed=1)
    >>> out = prior(z, z_mean=z, z_log_var=keras.ops.zeros((4, 2)))
    >>> tuple(out["kl"].shape), tuple(out["responsibilities"].shape), str(out["cluster"].dtype)
    ((4,), (4, 3), "<dtype: 'int32'>")

    Reference:
        Jiang et al., "Variational Deep Embedding", IJCAI 2017, eq. 12 and 16.
    """

    def __init__(self, num_components, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not is_int(num_components):
            raise ValueError(
                f"Expected `num_components` to be a positive int. "
                f"Received: num_components={num_components!r}"
            )
        if num_components < 1:
            raise ValueError(
                f"Expected `num_components` >= 1. Received: num_components={num_components}"
            )
        self.num_components = int(num_components)
        self.seed = None if seed is None else check_int("seed", seed)
        self.latent_dim = None

    def build(self, z_shape, z_mean_shape=None, z_log_var_shape=None):
        z_shape = tuple(z_shape)
        if len(z_shape) < 2 or z_shape[-1] is None:
            raise ValueError(
                "Expected `z` of shape [batch, latent_dim] with a known latent_dim. "
                f"Received: shape={z_shape}"
            )
        self.latent_dim = int(z_shape[-1])
        add_mixture_weights(
            self,
            self.num_components,
            self.latent_dim,
            trainable=True,
            means_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed),
        )
        self.built = True

    def _check_inputs(self, z, z_mean, z_log_var):
        shapes = {name: tuple(t.shape) for name, t in (("z", z), ("z_mean", z_mean))}
        shapes["z_log_var"] = tuple(z_log_var.shape)
        ranks = {len(s) for s in shapes.values()}
        lasts = {s[-1] for s in shapes.values() if s}
        if len(ranks) != 1 or len(lasts) != 1:
            raise ValueError(
                "Expected `z`, `z_mean` and `z_log_var` of the same shape [batch, latent_dim]. "
                f"Received shapes: {shapes}"
            )
        if self.latent_dim is not None and lasts != {self.latent_dim}:
            raise ValueError(
                f"Expected latents of size {self.latent_dim} (the size the prior was built "
                f"for). Received shapes: {shapes}"
            )
        for name, t in (("z", z), ("z_mean", z_mean), ("z_log_var", z_log_var)):
            if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(t.dtype)):
                raise ValueError(f"Expected a floating `{name}`. Received dtype: {t.dtype}")

    def call(self, z, z_mean, z_log_var, training=None):
        self._check_inputs(z, z_mean, z_log_var)
        z, z_mean, z_log_var = (ops.cast(t, "float32") for t in (z, z_mean, z_log_var))
        params = mixture_tensors(self)
        log_joint = component_log_densities(
            z, params["weights"], params["means"], params["variances"]
        )
        log_gamma = log_joint - ops.logsumexp(log_joint, axis=-1, keepdims=True)
        gamma = ops.exp(log_gamma)
        # KL(q(z|x) || p(z|c)) for every component: [..., 1, L] against [K, L] -> [..., K].
        component_kl = kl_diagonal_gaussians(
            ops.expand_dims(z_mean, -2),
            ops.expand_dims(z_log_var, -2),
            params["means"],
            self.log_variances,
        )
        log_weights = ops.log_softmax(self.mixture_logits)
        kl = ops.sum(gamma * (component_kl + log_gamma - log_weights), axis=-1)
        return {
            "kl": kl,
            "responsibilities": gamma,
            "cluster": ops.cast(ops.argmax(log_joint, axis=-1), "int32"),
        }

    def mixture(self):
        """The learned mixture, as the Fisher-vector layer's `mixture=` argument takes it.

        Returns:
            `{"weights" [K], "means" [K, L], "variances" [K, L]}` float32 tensors (through
            which gradients reach the prior's weights).

        Raises:
            ValueError: if the prior is not built yet (no call, `build` or `set_gmm`).
        """
        self._require_built("mixture()")
        return mixture_tensors(self)

    def set_gmm(self, weights, means, variances):
        """Assigns a diagonal GMM, e.g. fitted on pretrained latents (VaDE's initialisation).

        Args:
            weights: array-like `[K]`, positive, summing to 1.
            means: array-like `[K, L]`.
            variances: array-like `[K, L]`, positive (such as sklearn's
                `GaussianMixture(covariance_type="diag").covariances_`).

        Raises:
            ValueError: for a mixture of the wrong K or L, or an invalid one (see
                `mmrep.heads.gmm.mixture.check_gmm`).
        """
        weights, means, variances = check_gmm(
            weights, means, variances, num_components=self.num_components, dim=self.latent_dim
        )
        if not self.built:
            self.build((None, means.shape[1]))
        set_mixture(self, weights, means, variances)

    def adapt(self, latents, **kwargs):
        """Fits a diagonal GMM to `latents` by EM and assigns it (`set_gmm`).

        Args:
            latents: array-like `[N, L]`, e.g. the posterior means of a pretrained encoder.
            **kwargs: passed to `mmrep.heads.fit_diagonal_gmm` (such as `seed`).

        Returns:
            The `GMMFit` that was assigned.
        """
        fit = gmm_em.fit_diagonal_gmm(latents, self.num_components, **kwargs)
        self.set_gmm(fit.weights, fit.means, fit.variances)
        return fit

    def _require_built(self, what):
        if not self.built:
            raise ValueError(
                f"{what} needs the prior's mixture: call the layer, `build((None, latent_dim))` "
                "or `set_gmm(...)` first."
            )

    def compute_output_shape(self, z_shape, z_mean_shape=None, z_log_var_shape=None):
        leading = tuple(z_shape)[:-1]
        return {
            "kl": leading,
            "responsibilities": (*leading, self.num_components),
            "cluster": leading,
        }

    def get_config(self):
        config = super().get_config()
        config.update({"num_components": self.num_components, "seed": self.seed})
        return config
