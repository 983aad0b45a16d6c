"""VAE decoders: the parameters of `p(x | z)` for vector modalities."""

import keras
from keras import ops

from mmrep.utils.arguments import check_int, is_int

DISTRIBUTIONS = ("gaussian", "bernoulli")
VARIANCES = ("fixed", "learned")


@keras.saving.register_keras_serializable(package="mmrep")
class VectorDecoder(keras.layers.Layer):
    """Maps a latent `z` `[B, L]` (and a condition) to the parameters of `p(x | z)`.

    Dense layers of `hidden_units` (with `activation`) over `z`, concatenated with the
    `condition` when one is given (conditional VAE), then a linear map to the output
    dimension. The output is, per `distribution` and `variance`:

    - `"gaussian"`, `"fixed"`: the mean `[B, D]` (score it with
      `mmrep.losses.reconstruction.gaussian_nll` / `GaussianNLL(variance=...)`);
    - `"gaussian"`, `"learned"`: `[B, 2D]`, the mean then the observation log-variance,
      a learned per-feature float32 weight `log_variance` `[D]` (initialised to 0) shared
      by all examples, as the noise of probabilistic PCA or factor analysis
      (`GaussianNLL(variance="learned")`, `split_gaussian` to separate them);
    - `"bernoulli"`: the logits `[B, D]` (`BernoulliNLL`).

    Outputs are in the compute dtype; the losses compute in float32.

    Args:
        output_dim: int. The feature size `D` of the modality.
        hidden_units: int or sequence of ints. Hidden widths. Defaults to `()` (linear).
        activation: str. Hidden-layer activation. Defaults to `"relu"`.
        distribution: `"gaussian"` or `"bernoulli"`. Defaults to `"gaussian"`.
        variance: `"fixed"` or `"learned"` (Gaussian only). Defaults to `"fixed"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        z: floating tensor `[B, L]`.
        condition: optional floating tensor `[B, C]`; as for `VAEHead`, a decoder built
            with a condition needs one at every call.

    Returns:
        A tensor `[B, D]`, or `[B, 2D]` for a learned Gaussian variance.

    Raises:
        ValueError: for bad arguments, or inputs of the wrong rank or size.

    Example:

    >>> decoder = VectorDecoder(5, hidden_units=(8,), distribution="bernoulli")
    >>> tuple(decoder(np.ones((3, 2), "float32")).shape)
    (3, 5)

    Reference:
        Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014, appendix C.
        Tipping & Bishop, "Probabilistic Principal Component Analysis", JRSS-B 1999.
    """

    def __init__(
        self,
        output_dim,
        hidden_units=(),
        activation="relu",
        distribution="gaussian",
        variance="fixed",
        **kwargs,
    ):
        super().__init__(**kwargs)
        output_dim = check_int("output_dim", output_dim, minimum=1)
        units = (hidden_units,) if isinstance(hidden_units, int) else tuple(hidden_units)
        if not all(is_int(u, 1) for u in units):
            raise ValueError(
                f"Expected `hidden_units` to be positive ints. Received: {hidden_units}"
            )
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"Expected `distribution` in {DISTRIBUTIONS}. Received: {distribution!r}"
            )
        if variance not in VARIANCES:
            raise ValueError(f"Expected `variance` in {VARIANCES}. Received: {variance!r}")
        if distribution == "bernoulli" and variance != "fixed":
            raise ValueError("A Bernoulli decoder has no variance; use variance='fixed'.")
        self.output_dim = output_dim
        self.hidden_units = tuple(int(u) for u in units)
        self.activation = activation
        self.distribution = distribution
        self.variance = variance
        self.hidden_layers = [
            keras.layers.Dense(
                u, activation=activation, dtype=self.dtype_policy, name=f"hidden_{i}"
            )
            for i, u in enumerate(self.hidden_units)
        ]
        self.output_layer = keras.layers.Dense(
            self.output_dim, dtype=self.dtype_policy, name="output"
        )

    def build(self, z_shape, condition_shape=None):
        z_shape = tuple(z_shape)
        if len(z_shape) != 2 or z_shape[-1] is None:
            raise ValueError(
                f"{self.name}: expected `z` of shape [batch, latent_dim]. Received: {z_shape}"
            )
        self._latent_dim = width = int(z_shape[-1])
        self._condition_dim = None
        if condition_shape is not None:
            condition_shape = tuple(condition_shape)
            if len(condition_shape) != 2 or condition_shape[-1] is None:
                raise ValueError(
                    f"{self.name}: expected `condition` of shape [batch, condition_dim]. "
                    f"Received shape: {condition_shape}"
                )
            self._condition_dim = int(condition_shape[-1])
            width += self._condition_dim
        for layer in self.hidden_layers:
            layer.build((None, width))
            width = layer.units
        self.output_layer.build((None, width))
        if self.variance == "learned":
            self.log_variance = self.add_weight(
                name="log_variance",
                shape=(self.output_dim,),
                initializer="zeros",
                dtype="float32",
                autocast=False,
            )

    def call(self, z, condition=None):
        shape = tuple(z.shape)
        if len(shape) != 2 or shape[-1] != self._latent_dim:
            raise ValueError(
                f"{self.name}: expected `z` of shape [batch, {self._latent_dim}]. "
                f"Received shape: {shape}"
            )
        if (condition is None) != (self._condition_dim is None):
            expected = "no `condition`" if self._condition_dim is None else "a `condition`"
            raise ValueError(
                f"{self.name}: the layer was built with {expected}; call it the same way."
            )
        h = z
        if condition is not None:
            if tuple(condition.shape)[-1] != self._condition_dim or len(condition.shape) != 2:
                raise ValueError(
                    f"{self.name}: expected `condition` of shape [batch, "
                    f"{self._condition_dim}]. Received shape: {tuple(condition.shape)}"
                )
            h = ops.concatenate([h, ops.cast(condition, h.dtype)], axis=-1)
        for layer in self.hidden_layers:
            h = layer(h)
        mean = self.output_layer(h)
        if self.variance != "learned":
            return mean
        log_var = ops.cast(self.log_variance, mean.dtype) + ops.zeros_like(mean)
        return ops.concatenate([mean, log_var], axis=-1)

    def compute_output_shape(self, z_shape, condition_shape=None):
        width = self.output_dim * (2 if self.variance == "learned" else 1)
        return (*tuple(z_shape)[:-1], width)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "hidden_units": list(self.hidden_units),
                "activation": self.activation,
                "distribution": self.distribution,
                "variance": self.variance,
            }
        )
        return config
