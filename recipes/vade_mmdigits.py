"""VaDE on mmdigits images: clustering with a Gaussian-mixture prior VAE, against k-means.

Variational Deep Embedding (Jiang et al., IJCAI 2017) in three steps, through the public API:

1. pretrain: a dense VAE (`mmrep.heads.VAEHead` with a `GaussianMixturePrior`, Bernoulli
   `VectorDecoder`) on the flattened 8x8 grey images of the train split, with the KL weight
   at 0, i.e. a (noisy) autoencoder;
2. initialise: fit a diagonal GMM of K=10 components to the train latents (posterior means)
   and assign it to the prior (`GaussianMixturePrior.adapt`);
3. fine-tune: train the whole model on the VaDE ELBO (KL weight 1).

The clusters are `argmax` of the responsibilities at the posterior mean. The results table
gives the clustering accuracy (Hungarian matching, `mmrep.metrics.clustering_accuracy`) on
the test split beside k-means (fitted on the train split) on pixels, on the pretrained
latents and on the VaDE latents, and the test negative ELBO (nats per image, Monte Carlo
over the posterior) at the GMM initialisation and after fine-tuning.

Run: `python recipes/vade_mmdigits.py` (full, about a minute on 2 CPU cores) or `--smoke`.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from keras import ops
from sklearn.cluster import KMeans

from mmrep.data import load_mmdigits
from mmrep.heads import GaussianMixturePrior, VAEHead, VectorDecoder
from mmrep.losses import bernoulli_nll
from mmrep.metrics import clustering_accuracy
from mmrep.training import TrainingOptions, add_training_arguments


def load_pixels(split, limit=None):
    """Flattened 8x8 grey mmdigits images in [0, 1] `[N, 64]` and labels `[N]`."""
    data = load_mmdigits(split, modalities=("image",), image_size=8, as_numpy=True)
    pixels = data["image"][..., 0].reshape(len(data["label"]), -1).astype("float32") / 255.0
    return pixels[:limit], data["label"][:limit]


class VaDE:
    """The dense VaDE model: encoder head with the mixture prior, and a Bernoulli decoder."""

    def __init__(self, input_dim, latent_dim, clusters, hidden_units, seed):
        self.prior = GaussianMixturePrior(clusters, seed=seed, name="prior")
        self.head = VAEHead(
            latent_dim, prior=self.prior, hidden_units=hidden_units, seed=seed, name="vae"
        )
        self.decoder = VectorDecoder(
            input_dim, hidden_units=tuple(reversed(hidden_units)), distribution="bernoulli"
        )
        inputs = keras.Input((input_dim,), name="pixels")
        posterior = self.head(inputs)
        self.model = keras.Model(inputs, self.decoder(posterior["z"]))
        self.encoder = keras.Model(inputs, posterior)

    def train(self, pixels, *, kl_weight, epochs, batch_size, learning_rate, jit_compile=False):
        self.head.kl_weight.assign(kl_weight)
        self.model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=bernoulli_nll,
            jit_compile=jit_compile,
        )
        self.model.fit(pixels, pixels, epochs=epochs, batch_size=batch_size, verbose=0)

    def encode(self, pixels):
        """Posterior means `[N, L]` and clusters `[N]` (argmax responsibilities at the mean)."""
        out = self.encoder.predict(pixels, batch_size=512, verbose=0)
        return out["z_mean"], out["cluster"]

    def negative_elbo(self, pixels, samples=10):
        """Monte Carlo -ELBO per image (nats): reconstruction at sampled z + VaDE prior terms."""
        total = 0.0
        for _ in range(samples):
            post = self.head(pixels, training=True)
            recon = bernoulli_nll(pixels, self.decoder(post["z"]))
            kl = self.prior(post["z"], post["z_mean"], post["z_log_var"])["kl"]
            total += float(ops.mean(recon + kl))
        return total / samples


def run(
    *,
    pretrain_epochs=60,
    epochs=100,
    latent_dim=10,
    clusters=10,
    hidden_units=(256, 128),
    batch_size=64,
    learning_rate=1e-3,
    finetune_learning_rate=2e-4,
    train_limit=None,
    seed=0,
    jit_compile=False,
):
    """Pretrains, initialises from a GMM, fine-tunes; returns a dict of test results.

    The global dtype policy (`TrainingOptions.apply`) must be set before the call.
    """
    keras.utils.set_random_seed(seed)
    x_train, _ = load_pixels("train", train_limit)
    x_test, y_test = load_pixels("test")

    def kmeans_accuracy(train, test):
        km = KMeans(clusters, n_init=10, random_state=seed).fit(train)
        return clustering_accuracy(y_test, km.predict(test))

    results = {"k-means on pixels": kmeans_accuracy(x_train, x_test)}
    vade = VaDE(x_train.shape[1], latent_dim, clusters, tuple(hidden_units), seed)
    start = time.perf_counter()
    vade.train(
        x_train,
        kl_weight=0.0,
        epochs=pretrain_epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        jit_compile=jit_compile,
    )
    latents_train, _ = vade.encode(x_train)
    latents_test, _ = vade.encode(x_test)
    results["k-means on pretrained latents"] = kmeans_accuracy(latents_train, latents_test)
    vade.prior.adapt(latents_train, seed=seed, progress=False)
    vade.head.kl_weight.assign(1.0)
    results["GMM on pretrained latents (VaDE init)"] = clustering_accuracy(
        y_test, vade.encode(x_test)[1]
    )
    results["test -ELBO at init"] = vade.negative_elbo(x_test)
    vade.train(
        x_train,
        kl_weight=1.0,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=finetune_learning_rate or learning_rate,
        jit_compile=jit_compile,
    )
    latents_train, _ = vade.encode(x_train)
    latents_test, clusters_test = vade.encode(x_test)
    results["VaDE (argmax responsibilities)"] = clustering_accuracy(y_test, clusters_test)
    results["k-means on VaDE latents"] = kmeans_accuracy(latents_train, latents_test)
    results["test -ELBO after fine-tuning"] = vade.negative_elbo(x_test)
    results["training seconds"] = time.perf_counter() - start
    return results


def main(argv=None):
    """Runs the recipe and prints the results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny epochs and data (< 30 s)")
    parser.add_argument("--pretrain-epochs", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    options = TrainingOptions.from_args(args).apply()
    sizes = {"pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs}
    if args.smoke:
        sizes = {"pretrain_epochs": 2, "epochs": 2, "train_limit": 256, "hidden_units": (32,)}
    results = run(latent_dim=args.latent_dim, seed=args.seed, **sizes, **options.compile_kwargs())
    print("| VaDE on mmdigits images (test split, K=10) | value |")
    print("|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.3f} |")
    return results


if __name__ == "__main__":
    main()
