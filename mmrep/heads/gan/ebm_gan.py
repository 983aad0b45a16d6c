"""The energy-based GAN of Adversarial Fisher Vectors: D is a negative energy, G its sampler.

Zhai, Talbott, Guestrin & Susskind (NeurIPS 2019) read a GAN as a variational
energy-based model: the discriminator `D(x)` is an unnormalised log-density (`p(x) ∝
exp(D(x))`) and the generator `G(z)` the variational sampler of that density. Once
trained, `D`'s Fisher score gives the Adversarial Fisher Vector of an example
(`mmrep.heads.AdversarialFisherVector`), and samples come from an exponential moving
average of the generator's weights.
"""

import copy

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mmrep.heads.gan.gan_networks import check_gan_networks
from mmrep.heads.gan.gan_objectives import (
    HYPERPARAMETERS,
    BatchMean,
    check_hyperparameters,
    discriminator_loss_terms,
    ema_regularization_terms,
    generator_loss_terms,
    gradient_penalty_terms,
)
from mmrep.heads.gan.gan_optimizers import gan_optimizers
from mmrep.heads.gan.moving_average import moving_average_copy, update_moving_average
from mmrep.heads.gan.replica_noise import global_batch_rows, replica_normal
from mmrep.losses.cross_replica import strategy_replicas
from mmrep.utils.arguments import check_int


@keras.saving.register_keras_serializable(package="mmrep")
class EBMGAN(keras.Model):
    """An energy-based GAN: train `D` as a negative energy and `G` as its sampler.

    `fit` takes images `x` (any shape `D` takes), or `(x, z)` with the latent noise given
    (`[B, latent_dim]`, e.g. for reproducible tests). Each `train_step` makes
    `discriminator_steps` updates of `D` on the batch, then `generator_steps` updates of
    `G`, each with fresh noise `z ~ N(0, I)` (a given `z` serves every update), with the
    objectives of `gan_objectives`: `"least_squares"` (the authors' default), `"hinge"`,
    or `"energy"` (the plain EBM bound). It logs `d_loss` and `g_loss` (every term below
    and the networks' own layer losses included), `d_real` (mean `D` on the data) and
    `d_fake` (on `G`'s samples);
    `evaluate` (and `fit`'s validation) logs `d_real` and `d_fake` on `G_ema`'s samples.
    Options:

    - `gradient_penalty=ρ` adds `(ρ/2)·mean ‖∇ₓD(x)‖²` on data to D's loss (a zero-centred
      penalty, any objective).
    - `generator_regularization=γ` adds `γ·mean((G(z) − G_ema(z) + ε)²)`, `ε ~ N(0, σ²)`
      with `σ = regularization_noise_std`, to G's loss: the "MCMC" regulariser that stands
      in for the entropy of the sampler.
    - `ema_generator` holds `G_ema`: after each G update every float weight of `G`
      (moving batch-norm statistics included) is averaged in, `p_ema ← d·p_ema + (1−d)·p`
      with `d = ema_decay`. `G_ema` runs in inference mode; `sample` draws from it.

    Distribution. Each objective's per-example terms are averaged by a Keras `Loss`
    (`BatchMean`, divided by the replica count like every Keras loss), the nets' own
    layer losses (regularisers) come from their `compute_loss()`, gradients are taken of
    `optimizer.scale_loss(loss)` and applied by `optimizer.apply`; so one step under
    `tf.distribute` equals the single-device step on the global batch. Noise is drawn
    for the global batch from the layer-held `SeedGenerator(seed)` and each replica takes
    its own rows: replicas draw different noise, and the draws do not depend on the
    number of replicas. Real and generated examples go through `D` in one call, so a
    `D` with batch normalisation normalises them together; per-example independence
    (no batch normalisation, as in `dcgan_discriminator`) is what the AFVs need anyway.

    Args:
        generator: keras.Model. `G`, latent `[B, latent_dim]` to samples shaped like `D`'s
            input (functional or Sequential, so that its input and output are known).
        discriminator: keras.Model. `D`, samples to one score per example, `[B]` or
            `[B, 1]`.
        objective: str. `"least_squares"`, `"hinge"` or `"energy"`. Defaults to
            `"least_squares"`.
        generator_regularization: float >= 0. `γ`. Defaults to `0.0` (off).
        regularization_noise_std: float >= 0. `σ`. Defaults to `0.0`.
        ema_decay: float in [0, 1]. `d`. Defaults to `0.9` (the authors' value).
        gradient_penalty: float >= 0. `ρ`. Defaults to `0.0` (off).
        discriminator_steps: int >= 1. D updates per train step. Defaults to `1`.
        generator_steps: int >= 1. G updates per train step. Defaults to `1`.
        seed: int or `None`. Seed of the training noise.
        **kwargs: `keras.Model` keyword arguments, such as `name`.

    Call arguments:
        inputs: samples `[B, ...]` shaped like `D`'s input.
        training: bool. Passed to `D`.

    Returns:
        Float32 `[B]`: `D(x)`, the negative energy (so `predict` scores examples).

    Raises:
        ValueError: for bad arguments: unknown objective, negative weights, `G`'s output
            shape other than `D`'s input shape, a `D` with more than one output per
            example.

    Example:

    ```python
    gan = EBMGAN(dcgan_generator(64), dcgan_discriminator(), generator_regularization=1.0)
    gan.compile()  # Adam(β1=0, β2=0.999), lr 4e-4 for D and 2e-4 for G
    gan.fit(images_in_minus_one_one, batch_size=64, epochs=10)
    samples = gan.sample(16)
    ```

    Reference:
        Zhai, Talbott, Guestrin & Susskind, "Adversarial Fisher Vectors for Unsupervised
        Representation Learning", NeurIPS 2019; code: github.com/apple/ml-afv.
    """

    def __init__(
        self,
        generator,
        discriminator,
        objective="least_squares",
        generator_regularization=0.0,
        regularization_noise_std=0.0,
        ema_decay=0.9,
        gradient_penalty=0.0,
        discriminator_steps=1,
        generator_steps=1,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        latent_dim, sample_shape = check_gan_networks(generator, discriminator)
        # === Config: the plain arguments, checked and kept as given ===
        arguments = {k: v for k, v in locals().items() if k in HYPERPARAMETERS}
        for name, value in check_hyperparameters(arguments).items():
            setattr(self, name, value)
        self.latent_dim = latent_dim
        self.sample_shape = sample_shape

        # === Networks and state ===
        self.generator = generator
        self.discriminator = discriminator
        self.ema_generator = moving_average_copy(generator)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        # Validation noise has its own stream, so evaluating never changes training.
        self.eval_seed_generator = keras.random.SeedGenerator(
            None if self.seed is None else self.seed + 1
        )
        self.batch_mean = BatchMean()
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")
        self.built = True

    # === Inference ===

    def call(self, inputs, training=None):
        """`D(inputs)` as float32 `[B]`: the negative energy of each example."""
        scores = self.discriminator(inputs, training=training)
        return ops.reshape(ops.cast(scores, "float32"), (-1,))

    def generate(self, z, use_ema=True, batch_size=256):
        """Generates samples from given latent vectors.

        Args:
            z: array `[N, latent_dim]`.
            use_ema: bool. Whether to use `G_ema` (the evaluation sampler) or `G`.
                Defaults to `True`.
            batch_size: int. Samples per forward pass. Defaults to `256`.

        Returns:
            NumPy array `[N, ...]` of samples, inference mode.

        Raises:
            ValueError: if `z` is not `[N, latent_dim]`.
        """
        z = np.asarray(keras.ops.convert_to_numpy(z), "float32")
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"Expected `z` of shape [N, {self.latent_dim}]. Received: shape {z.shape}"
            )
        batch_size = check_int("batch_size", batch_size, minimum=1)
        network = self.ema_generator if use_ema else self.generator
        batches = [
            keras.ops.convert_to_numpy(network(z[i : i + batch_size], training=False))
            for i in range(0, len(z), batch_size)
        ]
        return np.concatenate(batches) if batches else np.zeros((0, *self.sample_shape), "float32")

    def sample(self, num_samples, batch_size=256, use_ema=True, seed=None):
        """Draws `num_samples` samples of `G_ema(z)` (or `G(z)`), `z ~ N(0, I)`.

        Args:
            num_samples: int >= 0.
            batch_size: int. Samples per forward pass. Defaults to `256`.
            use_ema: bool. Whether to sample `G_ema` (default) or `G`.
            seed: int or `None`. Seed of `z`; `None` follows Keras' global seed
                (`keras.utils.set_random_seed`).

        Returns:
            NumPy array `[num_samples, ...]`, inference mode.
        """
        num_samples = check_int("num_samples", num_samples, minimum=0)
        z = keras.random.normal((num_samples, self.latent_dim), seed=seed)
        return self.generate(z, use_ema=use_ema, batch_size=batch_size)

    # === Training ===

    def compile(
        self,
        discriminator_optimizer=None,
        generator_optimizer=None,
        jit_compile="auto",
        auto_scale_loss=True,
        **kwargs,
    ):
        """Configures training with one optimizer per network.

        Args:
            discriminator_optimizer: optimizer, name or `None` for the authors' `Adam(4e-4,
                beta_1=0, beta_2=0.999)`.
            generator_optimizer: optimizer, name or `None` for `Adam(2e-4, beta_1=0,
                beta_2=0.999)`.
            jit_compile: bool or `"auto"`. As for `keras.Model.compile`.
            auto_scale_loss: bool. Wrap each optimizer in a `LossScaleOptimizer` when a
                policy of the model or a network is `"mixed_float16"`. Defaults to `True`.
            **kwargs: other `keras.Model.compile` arguments, such as `steps_per_execution`.

        Raises:
            ValueError: for `optimizer`, `loss` or `metrics` arguments, or one optimizer
                object given for both networks.
        """
        unused = sorted(set(kwargs) & {"optimizer", "loss", "loss_weights", "metrics"})
        if unused:
            raise ValueError(
                f"EBMGAN.compile takes `discriminator_optimizer` and `generator_optimizer`; "
                f"its losses and metrics are fixed. Received: {unused}"
            )
        given = {"discriminator_optimizer": discriminator_optimizer}
        given["generator_optimizer"] = generator_optimizer
        policies = {m.dtype_policy.name for m in (self, self.generator, self.discriminator)}
        d_opt, g_opt = gan_optimizers(
            discriminator_optimizer,
            generator_optimizer,
            loss_scale=auto_scale_loss and "mixed_float16" in policies,
        )
        super().compile(optimizer=None, jit_compile=jit_compile, **kwargs)
        self.discriminator_optimizer, self.generator_optimizer = d_opt, g_opt
        with self.distribute_strategy.scope():
            d_opt.build(self.discriminator.trainable_variables)
            g_opt.build(self.generator.trainable_variables)
        self._ebm_compile_config = {
            **{k: keras.saving.serialize_keras_object(v) for k, v in given.items()},
            "jit_compile": jit_compile,
            "auto_scale_loss": auto_scale_loss,
            **kwargs,
        }

    def get_compile_config(self):
        """The `compile` arguments (optimizers serialised), so `.keras` files recompile."""
        return dict(getattr(self, "_ebm_compile_config", {}))

    def compile_from_config(self, config):
        """Compiles from `get_compile_config()`; the optimizers are built here, so their
        saved state loads into them."""
        load = keras.saving.deserialize_keras_object
        self.compile(
            **{
                **config,
                "discriminator_optimizer": load(config.get("discriminator_optimizer")),
                "generator_optimizer": load(config.get("generator_optimizer")),
            }
        )

    @property
    def metrics(self):
        """`d_loss`, `g_loss`, `d_real`, `d_fake` (reset by `fit`/`evaluate` each epoch)."""
        return [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker, self.d_fake_tracker]

    def _unpack(self, data):
        x, z, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError("EBMGAN does not take sample weights; give `x` or `(x, z)`")
        x = ops.cast(ops.convert_to_tensor(x), "float32")
        shape = tuple(x.shape[1:])
        if len(shape) != len(self.sample_shape) or any(
            a is not None and a != b for a, b in zip(shape, self.sample_shape, strict=True)
        ):
            raise ValueError(
                f"Expected data of shape [B, {', '.join(map(str, self.sample_shape))}] (the "
                f"discriminator's input). Received: shape {tuple(x.shape)}"
            )
        if z is not None:
            z = ops.cast(ops.convert_to_tensor(z), "float32")
            if len(z.shape) != 2 or z.shape[1] != self.latent_dim:
                raise ValueError(
                    f"Expected the noise `z` of shape [B, {self.latent_dim}]. Received: shape "
                    f"{tuple(z.shape)}"
                )
            if x.shape[0] is not None and z.shape[0] is not None and x.shape[0] != z.shape[0]:
                raise ValueError(
                    "Expected as many noise vectors `z` as examples `x`. Received: "
                    f"{z.shape[0]} and {x.shape[0]}"
                )
        return x, z

    def _scores(self, samples, training):
        return ops.reshape(
            ops.cast(self.discriminator(samples, training=training), "float32"), (-1,)
        )

    @staticmethod
    def _layer_losses(network):
        """The network's own losses through Keras' aggregation (replica-scaled), or 0."""
        return network.compute_loss() if network.losses else 0.0

    def _discriminator_step(self, x, z, local):
        fake = ops.stop_gradient(ops.cast(self.generator(z, training=True), "float32"))
        both = ops.concatenate([x, fake], axis=0)
        with tf.GradientTape() as tape:
            if self.gradient_penalty > 0:
                scores, penalty = gradient_penalty_terms(
                    lambda v: self._scores(v, training=True), both, self.gradient_penalty
                )
                penalty = penalty[:local]
            else:
                scores, penalty = self._scores(both, training=True), 0.0
            d_real, d_fake = scores[:local], scores[local:]
            terms = discriminator_loss_terms(self.objective, d_real, d_fake) + penalty
            loss = self.batch_mean(terms) + self._layer_losses(self.discriminator)
            scaled = self.discriminator_optimizer.scale_loss(loss)
        variables = self.discriminator.trainable_variables
        self.discriminator_optimizer.apply(tape.gradient(scaled, variables), variables)
        self.d_loss_tracker.update_state(loss * strategy_replicas(), sample_weight=local)
        self.d_real_tracker.update_state(d_real)
        self.d_fake_tracker.update_state(d_fake)

    def _generator_step(self, z, rows):
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            terms = generator_loss_terms(self.objective, self._scores(fake, training=True))
            if self.generator_regularization > 0:
                target = self.ema_generator(z, training=False)
                noise = None
                if self.regularization_noise_std > 0:
                    noise = self.regularization_noise_std * replica_normal(
                        rows, self.sample_shape, self.seed_generator
                    )
                regularizer = ema_regularization_terms(fake, target, noise)
                terms = terms + self.generator_regularization * regularizer
            loss = self.batch_mean(terms) + self._layer_losses(self.generator)
            scaled = self.generator_optimizer.scale_loss(loss)
        variables = self.generator.trainable_variables
        self.generator_optimizer.apply(tape.gradient(scaled, variables), variables)
        self.g_loss_tracker.update_state(loss * strategy_replicas(), sample_weight=rows[2])
        update_moving_average(self.ema_generator, self.generator, self.ema_decay)

    def train_step(self, data):
        """`discriminator_steps` updates of D, then `generator_steps` of G and of G_ema."""
        x, z = self._unpack(data)
        rows = global_batch_rows(x)

        def latent():
            if z is not None:
                return z
            return replica_normal(rows, (self.latent_dim,), self.seed_generator)

        for _ in range(self.discriminator_steps):
            self._discriminator_step(x, latent(), rows[2])
        for _ in range(self.generator_steps):
            self._generator_step(latent(), rows)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        """`d_real` (D on the data) and `d_fake` (D on `G_ema` samples)."""
        x, z = self._unpack(data)
        if z is None:
            z = replica_normal(global_batch_rows(x), (self.latent_dim,), self.eval_seed_generator)
        fake = ops.cast(self.ema_generator(z, training=False), "float32")
        self.d_real_tracker.update_state(self._scores(x, training=False))
        self.d_fake_tracker.update_state(self._scores(fake, training=False))
        return {m.name: m.result() for m in (self.d_real_tracker, self.d_fake_tracker)}

    # === Config ===

    def get_config(self):
        nets = {k: getattr(self, k) for k in ("generator", "discriminator")}
        return {
            **super().get_config(),
            **{k: keras.saving.serialize_keras_object(v) for k, v in nets.items()},
            **{k: getattr(self, k) for k in HYPERPARAMETERS},
        }

    @classmethod
    def from_config(cls, config):
        # Deserialising a functional model consumes its config: load from copies.
        load = keras.saving.deserialize_keras_object
        nets = {k: load(copy.deepcopy(config[k])) for k in ("generator", "discriminator")}
        return cls(**{**config, **nets})
