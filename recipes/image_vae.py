"""A convolutional VAE (optionally β-weighted or conditional) on the mmdigits images.

Strided Conv2D layers take a 32x32 RGB image down to 8x8 features, `mmrep.heads.VAEHead`
gives the posterior and the sample, and Dense + Conv2DTranspose layers take the latent back
up to per-pixel logits of a Bernoulli likelihood on pixels / 255
(`mmrep.losses.reconstruction.BernoulliNLL`, summed over pixels so that it is on the
ELBO's scale against the KL the head adds). `--conditional` feeds the one-hot label to
the head and to the decoder (Sohn et al., NeurIPS 2015); `--beta` weights the KL (Higgins
et al., ICLR 2017), warmed up from 0 by `mmrep.heads.KLAnnealing`.

The results table gives, on the test split: the negative ELBO (nats per image; the
reconstruction term averaged over 10 posterior samples, the KL in closed form), its two
terms, and the accuracy of a logistic-regression probe trained on the train split's
posterior means (for the conditional model the label is an input, so the probe measures
what is left of it in z).

Run: `python recipes/image_vae.py [--beta B] [--conditional] [--epochs N]` (full run a few
minutes on 2 CPU cores) or `--smoke`.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from keras import ops

from mmrep.data import load_mmdigits
from mmrep.heads import KLAnnealing, VAEHead
from mmrep.losses import BernoulliNLL, bernoulli_nll, kl_standard_normal
from mmrep.metrics import linear_probe_accuracy
from mmrep.training import TrainingOptions, add_training_arguments

CLASSES = 10
SIDE = 32


def load_split(split, limit=None):
    """mmdigits images as float32 in [0, 1] `[N, 32, 32, 3]` and one-hot labels `[N, 10]`."""
    data = load_mmdigits(split, modalities=("image",), image_size=SIDE, as_numpy=True)
    images = data["image"][:limit].astype("float32") / 255.0
    labels = data["label"][:limit]
    return images, np.eye(CLASSES, dtype="float32")[labels], labels


class ImageVAE:
    """The encoder, head and decoder, and the training model that joins them.

    Args:
        latent_dim: int. Size of the latent.
        beta: float. Weight of the KL term.
        conditional: bool. Feed the one-hot label to the head and the decoder.
        width: int. Channels of the first convolution (the second has twice as many).
        seed: int. Seed of the head's sampling.
    """

    def __init__(self, latent_dim=16, beta=1.0, conditional=False, width=32, seed=0):
        self.conditional = conditional
        self.encoder = keras.Sequential(
            [
                keras.layers.Conv2D(width, 4, strides=2, padding="same", activation="relu"),
                keras.layers.Conv2D(2 * width, 4, strides=2, padding="same", activation="relu"),
                keras.layers.Flatten(),
            ],
            name="encoder",
        )
        self.head = VAEHead(latent_dim, beta=beta, hidden_units=(128,), seed=seed, name="vae")
        self.decoder = keras.Sequential(
            [
                keras.layers.Dense(8 * 8 * 2 * width, activation="relu"),
                keras.layers.Reshape((8, 8, 2 * width)),
                keras.layers.Conv2DTranspose(
                    width, 4, strides=2, padding="same", activation="relu"
                ),
                keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same"),
            ],
            name="decoder",
        )
        images = keras.Input((SIDE, SIDE, 3), name="image")
        labels = keras.Input((CLASSES,), name="label")
        condition = labels if conditional else None
        posterior = self.head(self.encoder(images), condition=condition)
        logits = self.decode(posterior["z"], labels)
        self.model = keras.Model({"image": images, "label": labels}, logits)

    def decode(self, z, labels):
        """Per-pixel logits `[B, 32, 32, 3]` from latents (and labels when conditional)."""
        if self.conditional:
            z = ops.concatenate([z, ops.cast(labels, z.dtype)], axis=-1)
        return self.decoder(z)

    def compile(self, learning_rate=1e-3, jit_compile=False):
        self.model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=BernoulliNLL(),
            jit_compile=jit_compile,
        )

    def posterior(self, images, labels, batch_size=256):
        """Posterior means and log-variances (numpy) of a set of images."""
        means, log_vars = [], []
        for start in range(0, len(images), batch_size):
            features = self.encoder(images[start : start + batch_size])
            condition = labels[start : start + batch_size] if self.conditional else None
            out = self.head(features, condition=condition)
            means.append(ops.convert_to_numpy(out["z_mean"]))
            log_vars.append(ops.convert_to_numpy(out["z_log_var"]))
        return np.concatenate(means), np.concatenate(log_vars)

    def negative_elbo(self, images, labels, samples=10, seed=0):
        """Per-image reconstruction NLL (Monte Carlo over q) and KL (closed form), numpy."""
        mean, log_var = self.posterior(images, labels)
        rng = np.random.default_rng(seed)
        flat = images.reshape(len(images), -1)
        reconstruction = np.zeros(len(images))
        for _ in range(samples):
            z = mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
            logits = self.decode(ops.convert_to_tensor(z.astype("float32")), labels)
            logits = ops.reshape(logits, (len(images), -1))
            reconstruction += ops.convert_to_numpy(bernoulli_nll(flat, logits)) / samples
        kl = ops.convert_to_numpy(kl_standard_normal(mean, log_var))
        return reconstruction, kl


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beta", type=float, default=1.0, help="KL weight (beta-VAE)")
    parser.add_argument("--conditional", action="store_true", help="condition on the label")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup-epochs", type=int, default=5, help="KL warm-up length")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    options = TrainingOptions.from_args(args).apply()
    keras.utils.set_random_seed(0)

    limit = 128 if args.smoke else None
    epochs = 1 if args.smoke else args.epochs
    train_x, train_y, train_labels = load_split("train", limit)
    test_x, test_y, test_labels = load_split("test", 64 if args.smoke else None)

    vae = ImageVAE(args.latent_dim, args.beta, args.conditional, width=8 if args.smoke else 32)
    vae.compile(**options.compile_kwargs())
    steps = -(-len(train_x) // args.batch_size)
    annealing = KLAnnealing(warmup_steps=max(1, args.warmup_epochs * steps))
    start = time.time()
    history = vae.model.fit(
        {"image": train_x, "label": train_y},
        train_x,
        batch_size=args.batch_size,
        epochs=epochs,
        callbacks=[annealing],
        verbose=0,
    )
    train_seconds = time.time() - start

    reconstruction, kl = vae.negative_elbo(test_x, test_y, samples=2 if args.smoke else 10)
    train_mean, _ = vae.posterior(train_x, train_y)
    test_mean, _ = vae.posterior(test_x, test_y)
    accuracy = linear_probe_accuracy(train_mean, train_labels, test_mean, test_labels)

    variant = ("conditional " if args.conditional else "") + f"VAE, beta={args.beta:g}"
    rows = [
        ("model", variant),
        ("epochs / train seconds", f"{epochs} / {train_seconds:.0f}"),
        ("train loss (last epoch)", f"{history.history['loss'][-1]:.1f}"),
        ("test negative ELBO (nats/image)", f"{np.mean(reconstruction + kl):.1f}"),
        ("test reconstruction NLL (nats/image)", f"{np.mean(reconstruction):.1f}"),
        ("test KL (nats/image)", f"{np.mean(kl):.2f}"),
        ("linear probe accuracy on z_mean", f"{accuracy:.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'quantity'.ljust(width)} | value")
    print(f"|{'-' * (width + 2)}|{'-' * 24}")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value}")
    return dict(rows)


if __name__ == "__main__":
    main()
