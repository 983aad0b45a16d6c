"""The end-to-end VAE Fisher vector on mmdigits: patch latents, a learned mixture, one graph.

A convolutional VAE maps each image to an 8x8 grid of patch-level latent codes (one Gaussian
posterior per position, `VAEHead` applied to every patch) and decodes the grid back to the
image. Its prior over patch codes is a learnable Gaussian mixture (`GaussianMixturePrior`,
VaDE: Jiang et al., "Variational Deep Embedding", IJCAI 2017), and a `FisherVector` layer
computes, in the same graph, the Fisher vector (Sánchez et al., "Image Classification with
the Fisher Vector", IJCV 2013) of the image's patch codes under that very mixture
(`external_mixture=True`, fed with `prior.mixture()`). Encoder, decoder and mixture are
trained together on the ELBO; the Fisher vector is read off the trained graph with no
fitting step afterwards.

Compared, by the accuracy of a logistic-regression probe (`mmrep.metrics.
linear_probe_accuracy`) trained on the train split and scored on the test split:

- plain VAE latent: the same architecture with a standard normal prior; its posterior-mean
  grid, flattened;
- two-stage Fisher vector: a GMM fitted by EM (`FisherVector.adapt`) on the plain VAE's
  patch codes after training, then the Fisher vector of each image's codes;
- end-to-end Fisher vector: the mixture-prior VAE's in-graph Fisher vector (and, for
  reference, its own flattened latent grid).

The mixture-prior model is trained as VaDE is: pretrained (its encoder and decoder start from
the trained plain VAE), its mixture initialised by EM on the pretrained patch codes (the
two-stage GMM, `prior.set_gmm`), then everything is trained jointly on the full ELBO. So the
last row shows what joint training adds to the two-stage Fisher vector it starts from.

Run: `python recipes/vae_fisher_vector_mmdigits.py` (a few minutes on 2 CPU cores) or with
`--smoke`.
"""

import argparse
import time

import keras
import numpy as np
from keras import ops

from mmrep.data import load_mmdigits
from mmrep.heads import FisherVector, GaussianMixturePrior, VAEHead
from mmrep.losses import BernoulliNLL
from mmrep.metrics import linear_probe_accuracy
from mmrep.training import TrainingOptions, add_training_arguments

GRID = 8  # patches per side: 32x32 images, two stride-2 convolutions


class PatchVAE(keras.Model):
    """A convolutional VAE with one latent code per patch of an 8x8 grid.

    With `components`, the prior over patch codes is a learnable Gaussian mixture and the
    model also returns the Fisher vector of each image's patch codes under it.
    """

    def __init__(self, latent_dim, components=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        conv = {"padding": "same", "activation": "relu"}
        self.encoder = keras.Sequential(
            [
                keras.layers.Conv2D(32, 4, strides=2, **conv),
                keras.layers.Conv2D(64, 4, strides=2, **conv),
            ]
        )
        self.prior = GaussianMixturePrior(components, seed=seed) if components else None
        # The ELBO per image sums the KL of its GRID**2 patches; the head averages over
        # patches, so its weight is the number of patches.
        self.head = VAEHead(latent_dim, beta=GRID * GRID, prior=self.prior, seed=seed)
        self.decoder = keras.Sequential(
            [
                keras.layers.Conv2DTranspose(64, 4, strides=2, **conv),
                keras.layers.Conv2DTranspose(32, 4, strides=2, **conv),
                keras.layers.Conv2D(1, 3, padding="same"),
                keras.layers.Flatten(),  # per-pixel logits [B, 1024], as the loss sums them
            ]
        )
        self.fisher = (
            FisherVector(components, improved=True, external_mixture=True) if components else None
        )

    def call(self, images, training=None):
        features = self.encoder(images)
        patches = ops.reshape(features, (-1, features.shape[-1]))
        posterior = self.head(patches, training=training)
        z_grid = ops.reshape(posterior["z"], (-1, GRID, GRID, self.latent_dim))
        codes = ops.reshape(posterior["z_mean"], (-1, GRID * GRID, self.latent_dim))
        samples = ops.reshape(posterior["z"], (-1, GRID * GRID, self.latent_dim))
        outputs = {"logits": self.decoder(z_grid), "codes": codes, "samples": samples}
        if self.fisher is not None:
            outputs["fisher_vector"] = self.fisher(codes, mixture=self.prior.mixture())
        return outputs


def load(split, limit):
    data = load_mmdigits(split, modalities=("image",), as_numpy=True)
    grey = data["image"][..., :1].astype("float32") / 255.0
    return grey[:limit], data["label"][:limit]


def predict(model, images, key, batch_size=256, training=False):
    parts = [
        model(images[i : i + batch_size], training=training)[key]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate([ops.convert_to_numpy(p) for p in parts])


def train(model, images, epochs, learning_rate=1e-3, jit_compile=False):
    """Fits the ELBO: the pixels' Bernoulli NLL (a compiled loss) plus the head's KL."""
    model.compile(
        keras.optimizers.Adam(learning_rate),
        loss={"logits": BernoulliNLL()},
        jit_compile=jit_compile,
    )
    model.fit(
        images, {"logits": images.reshape(len(images), -1)}, batch_size=64, epochs=epochs, verbose=2
    )


def test_loss(model, images):
    """Reconstruction NLL + KL in nats per image, decoding the posterior means."""
    targets = {"logits": images.reshape(len(images), -1)}
    return model.evaluate(images, targets, verbose=0, return_dict=True)["loss"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-dim", type=int, default=8, help="latent size per patch")
    parser.add_argument("--components", type=int, default=16, help="mixture components K")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--finetune-learning-rate", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    options = TrainingOptions.from_args(args).apply()
    jit_compile = options.jit_compile
    limit = 128 if args.smoke else None
    epochs, finetune = (1, 1) if args.smoke else (args.epochs, args.finetune_epochs)
    k = 4 if args.smoke else args.components
    (train_x, train_y), (test_x, test_y) = load("train", limit), load("test", limit)

    def probe(features):
        train_f, test_f = features  # one array per split
        return linear_probe_accuracy(train_f, train_y, test_f, test_y)

    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    plain = PatchVAE(args.latent_dim, seed=args.seed)
    train(plain, train_x, epochs, jit_compile=jit_compile)
    plain_seconds = time.perf_counter() - start
    plain_codes = [predict(plain, x, "codes") for x in (train_x, test_x)]
    two_stage = FisherVector(k, improved=True)
    # The mixture models the aggregate posterior: fitted to posterior samples, not means, so
    # that latent dimensions the VAE leaves unused (means ~0, posterior ~ prior) keep their
    # unit variance rather than collapsing to the variance floor.
    samples = predict(plain, train_x, "samples", training=True)
    two_stage_fit = two_stage.adapt(samples, seed=args.seed, progress=False)
    two_stage_fv = [ops.convert_to_numpy(two_stage(c)) for c in plain_codes]

    # VaDE's recipe: pretrain (here the plain VAE), initialise the mixture by EM on the
    # pretrained codes (the two-stage GMM), then train everything jointly on the ELBO.
    start = time.perf_counter()
    joint = PatchVAE(args.latent_dim, components=k, seed=args.seed)
    joint(train_x[:2])  # builds every layer before the weights are copied in
    for name in ("encoder", "decoder"):
        getattr(joint, name).set_weights(getattr(plain, name).get_weights())
    for name in ("mean_layer", "log_var_layer"):
        getattr(joint.head, name).set_weights(getattr(plain.head, name).get_weights())
    joint.prior.set_gmm(*(two_stage_fit.weights, two_stage_fit.means, two_stage_fit.variances))
    train(joint, train_x, finetune, args.finetune_learning_rate, jit_compile)
    joint_seconds = plain_seconds + time.perf_counter() - start

    rows = [
        (
            "plain VAE latent grid (flattened z_mean)",
            GRID * GRID * args.latent_dim,
            probe([c.reshape(len(c), -1) for c in plain_codes]),
            test_loss(plain, test_x),
            plain_seconds,
        ),
        (
            "two-stage Fisher vector (GMM fitted after training)",
            2 * k * args.latent_dim,
            probe(two_stage_fv),
            test_loss(plain, test_x),
            plain_seconds,
        ),
        (
            "mixture-prior VAE latent grid (flattened z_mean)",
            GRID * GRID * args.latent_dim,
            probe([predict(joint, x, "codes").reshape(len(x), -1) for x in (train_x, test_x)]),
            test_loss(joint, test_x),
            joint_seconds,
        ),
        (
            "end-to-end Fisher vector (in-graph, learned mixture)",
            2 * k * args.latent_dim,
            probe([predict(joint, x, "fisher_vector") for x in (train_x, test_x)]),
            test_loss(joint, test_x),
            joint_seconds,
        ),
    ]
    print(
        f"\nmmdigits linear probe, test split ({len(test_y)} images), K={k}, "
        f"latent {args.latent_dim} per patch, {GRID}x{GRID} patches"
    )
    print("| representation | width | probe accuracy | model's test loss (nats) | train s |")
    print("|---|---:|---:|---:|---:|")
    for name, width, accuracy, elbo, seconds in rows:
        print(f"| {name} | {width} | {accuracy:.3f} | {elbo:.1f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
