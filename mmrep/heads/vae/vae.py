"""The Gaussian VAE head: posterior, reparameterised sample and KL term over any feature vector."""

import keras
from keras import ops

from mmrep.heads.vae.kl_annealing import add_kl_weight
from mmrep.losses.divergences import kl_standard_normal
from mmrep.utils.arguments import check_int, is_int

_OUTPUT_KEYS = ("z", "z_mean", "z_log_var")


@keras.saving.register_keras_serializable(package="mmrep")
class VAEHead(keras.layers.Layer):
    """Gaussian posterior `q(z | x) = N(z_mean, diag(exp(z_log_var)))` with its KL term.

    Dense layers of `hidden_units` (with `activation`) over the input, concatenated with
    the `condition` when one is given (the conditional VAE of Sohn et al.), then two
    linear maps give `z_mean` and `z_log_var` `[B, latent_dim]`. These two maps are
    float32 layers and every output is float32, also under mixed precision (the hidden
    layers follow the layer's policy): a float16 log-variance is too coarse for the KL
    and for `exp`. In training (`training=True`) the latent is the reparameterised draw
    `z = z_mean + exp(z_log_var / 2) * eps`, `eps ~ N(0, I)` from a layer-held
    `keras.random.SeedGenerator(seed)`; otherwise `z = z_mean`.

    The KL term. Without a `prior`, `kl = KL(q(z | x) || N(0, I))` per example in closed
    form. With one, `prior` is a layer called as
    `prior(z, z_mean, z_log_var, training=training)` returning a dict with `"kl"` `[B]`
    (float32, the per-example prior term of the negative ELBO,
    `E_q[log q(z|x)] - E_q[log p(z)]`, including any discrete cluster terms) and extra
    outputs (for VaDE `"responsibilities"` and `"cluster"`), which are merged into this
    layer's output (floating ones cast to float32).

    At every call the layer adds `kl_weight * mean_b(kl)` with `add_loss`, where
    `kl_weight` is a non-trainable float32 weight initialised to `beta` (the β-VAE of
    Higgins et al.; `mmrep.heads.KLAnnealing` schedules it). Under `tf.distribute` the
    mean is over the replica's shard: Keras' TensorFlow trainer divides layer losses by
    the replica count as it does compiled losses and sums the replicas' gradients, so a
    `MirroredStrategy` step equals the single-device step on the global batch (tested).
    The unweighted batch KL is tracked by a `keras.metrics.Mean` named
    `kl_metric_name`, which `fit` and `evaluate` report (`"kl"`, `"val_kl"`) and reset
    every epoch.

    Args:
        latent_dim: int. The size `L` of the latent.
        beta: float >= 0. Initial value of `kl_weight`. Defaults to `1.0`.
        prior: `None` (standard normal), or a Keras layer (or its serialised config) as
            described above. Defaults to `None`.
        hidden_units: int or sequence of ints. Widths of the hidden Dense layers.
            Defaults to `()` (linear maps from the input).
        activation: str. Hidden-layer activation. Defaults to `"relu"`.
        seed: int or `None`. Seed of the sampling noise. Defaults to `None`.
        kl_metric_name: str. Name of the KL metric. Defaults to `"kl"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: floating tensor `[B, D]`.
        condition: optional floating tensor `[B, C]` (a one-hot label or any condition).
            A layer built with a condition needs one at every call, and one built
            without accepts none.
        training: bool. Sample `z` when `True`; `z = z_mean` otherwise.

    Returns:
        A dict with `"z"`, `"z_mean"`, `"z_log_var"` (float32 `[B, L]`), plus the prior's
        extra outputs.

    Raises:
        ValueError: for a non-positive `latent_dim`, a negative `beta`, bad hidden
            units, inputs or conditions of the wrong rank or size, or a prior whose
            output has no `"kl"`.

    Example:

    >>> head = VAEHead(2, beta=4.0, hidden_units=(8,), seed=0)
    >>> out = head(np.ones((3, 5), "float32"), training=True)
    >>> sorted(out), tuple(out["z"].shape)
    (['z', 'z_log_var', 'z_mean'], (3, 2))

    Reference:
        Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
        Higgins et al., "beta-VAE: Learning Basic Visual Concepts with a Constrained
        Variational Framework", ICLR 2017.
        Sohn, Lee & Yan, "Learning Structured Output Representation using Deep
        Conditional Generative Models", NeurIPS 2015.
    """

    def __init__(
        self,
        latent_dim,
        beta=1.0,
        prior=None,
        hidden_units=(),
        activation="relu",
        seed=None,
        kl_metric_name="kl",
        **kwargs,
    ):
        super().__init__(**kwargs)
        latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        if not beta >= 0:
            raise ValueError(f"Expected `beta` to be a float >= 0. Received: beta={beta}")
        units = (hidden_units,) if isinstance(hidden_units, int) else tuple(hidden_units)
        if not all(is_int(u, 1) for u in units):
            raise ValueError(
                "Expected `hidden_units` to be positive ints. "
                f"Received: hidden_units={hidden_units}"
            )
        if isinstance(prior, dict):
            prior = keras.saving.deserialize_keras_object(prior)
        if prior is not None and not isinstance(prior, keras.layers.Layer):
            raise ValueError(
                "Expected `prior` to be None or a Keras layer. "
                f"Received: prior of type {type(prior).__name__}"
            )
        self.latent_dim = latent_dim
        self.beta = float(beta)
        self.prior = prior
        self.hidden_units = tuple(int(u) for u in units)
        self.activation = activation
        self.seed = seed
        self.kl_metric_name = kl_metric_name
        self.hidden_layers = [
            keras.layers.Dense(
                u, activation=activation, dtype=self.dtype_policy, name=f"hidden_{i}"
            )
            for i, u in enumerate(self.hidden_units)
        ]
        # float32 whatever the policy: the posterior statistics are computed in float32.
        self.mean_layer = keras.layers.Dense(self.latent_dim, dtype="float32", name="z_mean")
        self.log_var_layer = keras.layers.Dense(self.latent_dim, dtype="float32", name="z_log_var")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kl_metric = keras.metrics.Mean(name=kl_metric_name)

    def build(self, inputs_shape, condition_shape=None):
        inputs_shape = tuple(inputs_shape)
        if len(inputs_shape) != 2 or inputs_shape[-1] is None:
            raise ValueError(
                f"{self.name}: expected `inputs` of shape [batch, features] with known "
                f"features. Received shape: {inputs_shape}"
            )
        self._input_dim = int(inputs_shape[-1])
        self._condition_dim = None
        width = self._input_dim
        if condition_shape is not None:
            condition_shape = tuple(condition_shape)
            if len(condition_shape) != 2 or condition_shape[-1] is None:
                raise ValueError(
                    f"{self.name}: expected `condition` of shape [batch, condition_dim] "
                    f"with known condition_dim. Received shape: {condition_shape}"
                )
            self._condition_dim = int(condition_shape[-1])
            width += self._condition_dim
        for layer in self.hidden_layers:
            layer.build((None, width))
            width = layer.units
        self.mean_layer.build((None, width))
        self.log_var_layer.build((None, width))
        add_kl_weight(self, self.beta)

    def _check_inputs(self, inputs, condition):
        shape = tuple(inputs.shape)
        if len(shape) != 2 or shape[-1] != self._input_dim:
            raise ValueError(
                f"{self.name}: expected `inputs` of shape [batch, {self._input_dim}]. "
                f"Received shape: {shape}"
            )
        if (condition is None) != (self._condition_dim is None):
            expected = "no `condition`" if self._condition_dim is None else "a `condition`"
            raise ValueError(
                f"{self.name}: the layer was built with {expected}; call it the same way. "
                f"Received: condition={'None' if condition is None else tuple(condition.shape)}"
            )
        if condition is not None:
            cshape = tuple(condition.shape)
            if len(cshape) != 2 or cshape[-1] != self._condition_dim:
                raise ValueError(
                    f"{self.name}: expected `condition` of shape [batch, "
                    f"{self._condition_dim}]. Received shape: {cshape}"
                )

    def call(self, inputs, condition=None, training=None):
        self._check_inputs(inputs, condition)
        h = inputs
        if condition is not None:
            h = ops.concatenate([h, ops.cast(condition, h.dtype)], axis=-1)
        for layer in self.hidden_layers:
            h = layer(h)
        z_mean = ops.cast(self.mean_layer(h), "float32")
        z_log_var = ops.cast(self.log_var_layer(h), "float32")
        if training:
            eps = keras.random.normal(ops.shape(z_mean), dtype="float32", seed=self.seed_generator)
            z = z_mean + ops.exp(0.5 * z_log_var) * eps
        else:
            z = z_mean
        outputs = {"z": z, "z_mean": z_mean, "z_log_var": z_log_var}
        if self.prior is None:
            kl = kl_standard_normal(z_mean, z_log_var)
        else:
            kl, extras = self._prior_terms(z, z_mean, z_log_var, training)
            outputs.update(extras)
        batch_kl = ops.mean(kl)
        self.add_loss(ops.cast(self.kl_weight, "float32") * batch_kl)
        self.kl_metric.update_state(batch_kl)
        return outputs

    def _prior_terms(self, z, z_mean, z_log_var, training):
        result = self.prior(z, z_mean, z_log_var, training=training)
        if not isinstance(result, dict) or "kl" not in result:
            got = sorted(result) if isinstance(result, dict) else type(result).__name__
            raise ValueError(
                f"{self.name}: expected the prior {self.prior.name!r} to return a dict with "
                f"a 'kl' entry [batch]. Received: {got}"
            )
        extras = {}
        for key, value in result.items():
            if key == "kl":
                continue
            if key in _OUTPUT_KEYS:
                raise ValueError(
                    f"{self.name}: the prior's extra output {key!r} clashes with the "
                    f"head's own outputs {list(_OUTPUT_KEYS)}"
                )
            if keras.backend.is_float_dtype(keras.backend.standardize_dtype(value.dtype)):
                value = ops.cast(value, "float32")
            extras[key] = value
        return ops.cast(result["kl"], "float32"), extras

    def compute_output_shape(self, inputs_shape, condition_shape=None):
        shape = (*tuple(inputs_shape)[:-1], self.latent_dim)
        shapes = dict.fromkeys(_OUTPUT_KEYS, shape)
        if self.prior is not None:
            # The prior's extra outputs: traced symbolically (the prior contract has no
            # shape method).
            spec = keras.KerasTensor(shape, dtype="float32")
            extra = self.prior.compute_output_spec(spec, spec, spec)
            for key, value in extra.items():
                if key != "kl":
                    shapes[key] = tuple(value.shape)
        return shapes

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "latent_dim": self.latent_dim,
                "beta": self.beta,
                "prior": None
                if self.prior is None
                else keras.saving.serialize_keras_object(self.prior),
                "hidden_units": list(self.hidden_units),
                "activation": self.activation,
                "seed": self.seed,
                "kl_metric_name": self.kl_metric_name,
            }
        )
        return config
