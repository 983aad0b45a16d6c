"""Multimodal VAE (MVAE): a product-of-experts posterior and the sub-sampled ELBO.

Every modality has an inference network and a Gaussian expert; the posterior for any
subset of modalities is the product of the subset's experts and the prior N(0, I)
(`ProductOfExperts`), so one model encodes any subset and generates the missing
modalities from it. Training sums the ELBO of the joint posterior, of each single
modality, and of `num_subsets` random subsets (Wu & Goodman 2018, section 3.2).
"""

import keras
from keras import ops

from mmrep.heads.vae.kl_annealing import add_kl_weight
from mmrep.heads.vae.product_of_experts import ProductOfExperts
from mmrep.losses.cross_replica import strategy_replicas
from mmrep.losses.divergences import kl_standard_normal
from mmrep.losses.reconstruction import bernoulli_nll, categorical_nll, gaussian_nll
from mmrep.utils.arguments import check_int
from mmrep.utils.modalities import check_modality_names, check_presence, ordered_modalities

LIKELIHOODS = ("bernoulli", "gaussian", "categorical")
PRESENCE = "presence"


_NLL = {
    "bernoulli": bernoulli_nll,
    "gaussian": lambda x, mean: gaussian_nll(x, mean),
    "categorical": categorical_nll,
}
_MEAN = {"bernoulli": ops.sigmoid, "gaussian": lambda y: y, "categorical": ops.softmax}


@keras.saving.register_keras_serializable(package="mmrep")
class MultimodalVAE(keras.Model):
    """A VAE over several modalities whose posterior is a product of Gaussian experts.

    Each modality `m` goes through its inference network `encoders[m]` (a Keras layer, input
    to features `[B, F_m]`), then a float32 `Dense(2 * latent_dim)` made here gives its
    expert's mean and log-variance; `ProductOfExperts` multiplies the present experts with
    the prior N(0, I). `decoders[m]` maps `z [B, latent_dim]` to the parameters of `p(x_m |
    z)`, shaped like the input: logits for `"bernoulli"` (pixels in [0, 1]) and
    `"categorical"` (one-hot labels), the mean for `"gaussian"` (unit variance).

    The training loss (`compute_loss`, used by `fit`) is the negative sub-sampled ELBO
    averaged over the batch: for the joint subset (every present modality), each single
    modality (when there are two or more) and `num_subsets` subsets drawn per example and
    step (each modality kept with probability 1/2), `sum_{m in s} w_m NLL_m + kl_weight *
    KL(q(z | x_s) || N(0, I))`, with `z` drawn by reparameterisation from a layer-held
    `SeedGenerator(seed)`. A modality absent from an example (`presence`) is out of every
    posterior and every reconstruction term of that example; its input, even NaN, reaches
    neither the loss nor the gradients. `kl_weight` is a non-trainable weight initialised
    to `beta`, so `mmrep.heads.KLAnnealing` schedules it. Losses added by sublayers (e.g.
    regularisers) are added; a `loss` given to `compile` is not used.

    Args:
        encoders: dict `{modality: keras.layers.Layer}`. Inference networks.
        decoders: dict `{modality: keras.layers.Layer}`. Generative networks, `z` to the
            likelihood parameters of each modality.
        reconstruction_losses: dict `{modality: str}`, each one of `"bernoulli"`,
            `"gaussian"` or `"categorical"`: the likelihood `p(x_m | z)`.
        latent_dim: int. Size of `z`.
        beta: float >= 0. The KL weight (β-VAE); initial value of `kl_weight`.
            Defaults to `1.0`.
        num_subsets: int >= 0. Random subsets per example and step. Defaults to `0`.
        reconstruction_weights: dict `{modality: float}` or `None`. The λ_m of the MVAE
            paper, to balance modalities of very different sizes. Defaults to all `1.0`.
        seed: int or `None`. Seed of the sampling noise and subset draws.
        **kwargs: `keras.Model` keyword arguments, such as `name`.

    Call arguments:
        inputs: dict `{modality: tensor [B, ...]}`, every modality, and optionally
            `"presence"` `[B, M]` (bool or numeric, non-zero = present; columns in
            `model.modalities` order, or a dict `{modality: [B]}`) marking the missing examples.
        training: bool. Passed to the encoders and decoders.

    Returns:
        A dict: `"z_mean"`, `"z_log_var"` `[B, latent_dim]` (the joint posterior of the
        present modalities), float32 `"expert_means"`, `"expert_log_vars"` `[B, M,
        latent_dim]`, and `"<modality>_reconstruction"`: the likelihood mean decoded from
        `z_mean` (for an absent modality, its generation from the others).

    Raises:
        ValueError: for bad constructor arguments or input keys.

    Reference:
        Wu & Goodman, "Multimodal Generative Models for Scalable Weakly-Supervised
        Learning", NeurIPS 2018.
    """

    def __init__(
        self,
        encoders,
        decoders,
        reconstruction_losses,
        latent_dim,
        beta=1.0,
        num_subsets=0,
        reconstruction_weights=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(encoders, dict) or not encoders:
            raise ValueError(
                "Expected `encoders` to be a non-empty dict {modality: layer}. "
                f"Received: {type(encoders).__name__}"
            )
        modalities = check_modality_names(ordered_modalities(encoders), reserved=(PRESENCE,))
        for name, value in (
            ("decoders", decoders),
            ("reconstruction_losses", reconstruction_losses),
        ):
            if not isinstance(value, dict) or sorted(value) != sorted(modalities):
                keys = sorted(value) if isinstance(value, dict) else type(value).__name__
                raise ValueError(
                    f"Expected `{name}` to have one entry per modality {modalities}. "
                    f"Received: {keys}"
                )
        layers = {**encoders, **{f"{m} (decoder)": v for m, v in decoders.items()}}
        bad = sorted(m for m, v in layers.items() if not isinstance(v, keras.layers.Layer))
        bad_losses = {m: v for m, v in reconstruction_losses.items() if v not in LIKELIHOODS}
        if bad or bad_losses:
            raise ValueError(
                f"Expected Keras layers as networks and `reconstruction_losses` in {LIKELIHOODS}."
                f" Received non-layers for {bad}, losses {bad_losses}"
            )
        weights = {**dict.fromkeys(modalities, 1.0), **(reconstruction_weights or {})}
        if sorted(weights) != sorted(modalities) or not all(
            isinstance(w, (int, float)) and w >= 0 for w in weights.values()
        ):
            raise ValueError(
                f"Expected `reconstruction_weights` to map modalities {modalities} to floats "
                f">= 0. Received: {reconstruction_weights}"
            )
        latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        if not (isinstance(beta, (int, float)) and beta >= 0):
            raise ValueError(f"Expected `beta` to be a float >= 0. Received: beta={beta!r}")
        num_subsets = check_int("num_subsets", num_subsets, minimum=0)

        self.modalities = modalities
        self.encoders = {m: encoders[m] for m in modalities}
        self.decoders = {m: decoders[m] for m in modalities}
        self.reconstruction_losses = {m: reconstruction_losses[m] for m in modalities}
        self.reconstruction_weights = {m: float(weights[m]) for m in modalities}
        self.latent_dim = latent_dim
        self.beta = float(beta)
        self.num_subsets = num_subsets
        self.seed = seed
        # Expert statistics (log-variances) in float32 whatever the policy.
        self.experts = {
            m: keras.layers.Dense(2 * latent_dim, dtype="float32", name=f"{m}_expert")
            for m in modalities
        }
        self.product_of_experts = ProductOfExperts(dtype="float32", name="product_of_experts")
        self.seed_generator = keras.random.SeedGenerator(seed)
        add_kl_weight(self, self.beta)

    # === Inference ===

    def _presence(self, inputs):
        """Checks the input keys; returns the presence mask `[B, M]` as bool."""
        if not isinstance(inputs, dict):
            raise ValueError(
                f"{self.name}: expected a dict {{modality: tensor}} (+ optional "
                f"'{PRESENCE}'). Received: {type(inputs).__name__}"
            )
        received = sorted(k for k in inputs if k != PRESENCE)
        if received != sorted(self.modalities):
            raise ValueError(
                f"{self.name}: expected one input per modality {self.modalities} (mark "
                f"missing examples in '{PRESENCE}'). Received keys: {sorted(inputs)}"
            )
        if inputs.get(PRESENCE) is None:
            return ops.ones((ops.shape(inputs[received[0]])[0], len(received)), "bool")
        return check_presence(self, inputs[PRESENCE], self.modalities, inputs[received[0]])

    def _clean(self, x, present):
        """`x` with absent examples set to zero (before any arithmetic, so NaN cannot leak)."""
        present = ops.reshape(present, (-1,) + (1,) * (len(x.shape) - 1))
        return ops.where(present, x, ops.zeros_like(x))

    def _expert(self, modality, x, present, training=None):
        """The expert's `[B, 2L]` (means, then log-variances) in float32."""
        features = self.encoders[modality](self._clean(x, present), training=training)
        return self.experts[modality](ops.cast(features, "float32"))

    def call(self, inputs, training=None):
        presence = self._presence(inputs)
        stats = [
            self._expert(m, inputs[m], presence[:, i], training)
            for i, m in enumerate(self.modalities)
        ]
        stats = ops.stack(stats, axis=1)
        means, log_vars = stats[..., : self.latent_dim], stats[..., self.latent_dim :]
        posterior = self.product_of_experts(
            {"means": means, "log_vars": log_vars}, presence=presence
        )
        outputs = {**posterior, "expert_means": means, "expert_log_vars": log_vars}
        for m in self.modalities:
            outputs[f"{m}_reconstruction"] = self._likelihood_mean(
                m, self.decoders[m](posterior["z_mean"], training=training)
            )
        return outputs

    def _likelihood_mean(self, modality, parameters):
        return _MEAN[self.reconstruction_losses[modality]](ops.cast(parameters, "float32"))

    def sample_latent(self, z_mean, z_log_var, training=False):
        """Float32 `z_mean + exp(z_log_var / 2) * eps`, `eps ~ N(0, I)`, if training; else `z_mean`."""
        z_mean, z_log_var = ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")
        if not training:
            return z_mean
        noise = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * noise

    # === The sub-sampled ELBO ===

    def subset_masks(self, presence):
        """Bool `[S, B, M]`: the ELBO's subsets intersected with `presence` (bool `[B, M]`).

        The joint subset, each single modality (if `M > 1`), then `num_subsets` random
        subsets drawn per example from the seed generator.
        """
        num = len(self.modalities)
        masks = [presence]
        if num > 1:
            eye = ops.eye(num, dtype="bool")
            masks.extend(ops.logical_and(presence, eye[i][None, :]) for i in range(num))
        for _ in range(self.num_subsets):
            keep = keras.random.uniform(ops.shape(presence), seed=self.seed_generator) < 0.5
            masks.append(ops.logical_and(presence, keep))
        return ops.stack(masks, axis=0)

    def elbo_terms(self, inputs, outputs=None, training=False):
        """The per-subset, per-example terms of the negative sub-sampled ELBO.

        Args:
            inputs: as for `call`.
            outputs: the model's outputs on `inputs` (to reuse its experts), or `None`.
            training: bool. Whether `z` is sampled (`True`) or the posterior mean.

        Returns:
            A dict of float32 tensors: `"subsets"` bool `[S, B, M]` (see `subset_masks`),
            `"reconstruction"` `[S, B]` (weighted NLL summed over the subset's modalities),
            `"kl"` `[S, B]`, and `"loss"` `[B]`: `sum_s reconstruction + kl_weight * kl`.
        """
        presence = self._presence(inputs)
        if outputs is None:
            outputs = self(inputs, training=training)
        means, log_vars = outputs["expert_means"], outputs["expert_log_vars"]
        subsets = self.subset_masks(presence)
        count, batch = ops.shape(subsets)[0], ops.shape(means)[0]
        flat = ops.reshape(subsets, (-1, len(self.modalities)))
        tiled = {
            "means": ops.tile(means, (count, 1, 1)),
            "log_vars": ops.tile(log_vars, (count, 1, 1)),
        }
        posterior = self.product_of_experts(tiled, presence=flat)
        z = self.sample_latent(posterior["z_mean"], posterior["z_log_var"], training=training)
        kl = kl_standard_normal(posterior["z_mean"], posterior["z_log_var"])
        reconstruction = ops.zeros_like(kl)
        for i, m in enumerate(self.modalities):
            parameters = self.decoders[m](z, training=training)
            x = self._clean(inputs[m], presence[:, i])
            x = ops.tile(x, (count,) + (1,) * (len(x.shape) - 1))
            if tuple(parameters.shape)[1:] != tuple(x.shape)[1:]:
                raise ValueError(
                    f"{self.name}: decoder {m!r} must output the shape of its input "
                    f"{tuple(x.shape)[1:]} (per example). Received: {tuple(parameters.shape)[1:]}"
                )
            rows = ops.shape(x)[0]
            nll = _NLL[self.reconstruction_losses[m]](
                ops.reshape(x, (rows, -1)), ops.reshape(parameters, (rows, -1))
            )
            nll = ops.where(flat[:, i], nll, ops.zeros_like(nll))
            reconstruction = reconstruction + self.reconstruction_weights[m] * nll
        reconstruction = ops.reshape(reconstruction, (count, batch))
        kl = ops.reshape(kl, (count, batch))
        loss = ops.sum(reconstruction + self.kl_weight * kl, axis=0)
        return {"subsets": subsets, "reconstruction": reconstruction, "kl": kl, "loss": loss}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The negative sub-sampled ELBO, averaged over the batch (see the class docstring).

        Divided by the replica count under `tf.distribute`, as Keras divides its own
        losses, so that the summed replica gradients are the global-batch gradient."""
        del y
        per_example = self.elbo_terms(x, y_pred, training=training)["loss"]
        if sample_weight is None:
            loss = ops.mean(per_example)
        else:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            loss = ops.sum(per_example * weights) / ops.cast(ops.shape(weights)[0], "float32")
        for extra in self.losses:
            loss = loss + ops.sum(ops.cast(extra, "float32"))
        return loss / strategy_replicas()

    # === Generation ===

    def encode(self, inputs, presence=None):
        """The posterior of any subset of modalities.

        Args:
            inputs: dict `{modality: array}` of some of the modalities; those left out are
                absent for every example.
            presence: optional `[B, M_given]` mask over the given modalities (in mmrep's
                modality order, `mmrep.MODALITY_ORDER`), or a dict `{modality: [B]}`.

        Returns:
            A dict with `"z_mean"` and `"z_log_var"`, `[B, latent_dim]`.

        Raises:
            ValueError: for unknown modality names.
        """
        if not inputs or set(inputs) - set(self.modalities):
            raise ValueError(
                f"{self.name}: expected some of the modalities {self.modalities}. "
                f"Received keys: {sorted(inputs)}"
            )
        given = ordered_modalities(inputs)
        batch = ops.shape(inputs[given[0]])[0]
        if presence is None:
            presence = ops.ones((batch, len(given)), "bool")
        presence = check_presence(self, presence, given, inputs[given[0]])
        stats, columns = [], []
        for m in self.modalities:
            if m in inputs:
                present = presence[:, given.index(m)]
                stats.append(self._expert(m, ops.convert_to_tensor(inputs[m]), present))
            else:  # left out: an absent expert, whose values never matter
                present = ops.zeros((batch,), "bool")
                stats.append(ops.zeros((batch, 2 * self.latent_dim), "float32"))
            columns.append(present)
        stats = ops.stack(stats, axis=1)
        return self.product_of_experts(
            {"means": stats[..., : self.latent_dim], "log_vars": stats[..., self.latent_dim :]},
            presence=ops.stack(columns, axis=1),
        )

    def generate(self, inputs, presence=None, modalities=None):
        """Decodes every (or the named) modality from the posterior of the given ones.

        Cross-modal generation: for instance `generate({"label": one_hot}, modalities=
        ["image"])` draws images of the labelled digits from the posterior mean.

        Args:
            inputs, presence: as for `encode`.
            modalities: list of modality names to decode, or `None` for all.

        Returns:
            A dict `{modality: likelihood mean}` (probabilities or Gaussian means).
        """
        wanted = self.modalities if modalities is None else list(modalities)
        if set(wanted) - set(self.modalities):
            raise ValueError(
                f"{self.name}: expected `modalities` among {self.modalities}. Received: {wanted}"
            )
        z = self.encode(inputs, presence)["z_mean"]
        return {m: self._likelihood_mean(m, self.decoders[m](z)) for m in wanted}

    # === Config ===

    def get_config(self):
        nested = {
            key: {m: keras.saving.serialize_keras_object(v) for m, v in layers.items()}
            for key, layers in (("encoders", self.encoders), ("decoders", self.decoders))
        }
        return {
            **super().get_config(),
            **nested,
            "reconstruction_losses": dict(self.reconstruction_losses),
            "latent_dim": self.latent_dim,
            "beta": self.beta,
            "num_subsets": self.num_subsets,
            "reconstruction_weights": dict(self.reconstruction_weights),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        load = keras.saving.deserialize_keras_object
        nested = {
            key: {m: load(v) for m, v in config[key].items()} for key in ("encoders", "decoders")
        }
        return cls(**{**config, **nested})
