"""Adversarial Fisher Vectors on mmdigits: an energy-based GAN as a feature extractor.

Zhai et al. ("Adversarial Fisher Vectors for Unsupervised Representation Learning",
NeurIPS 2019) train a GAN as an energy-based model, the discriminator `D(x)` a negative
energy, and represent an image by `D`'s Fisher score normalised by the Fisher
information estimated on generated samples: the Adversarial Fisher Vector (AFV).

This recipe, on mmdigits' 32x32 RGB digit images scaled to [-1, 1]:

1. trains `EBMGAN` (DCGAN-style networks, spectrally normalised `D`, least-squares
   objectives, the generator's moving-average regulariser) on the full train split, and
   the same model on only 100 training images for the same number of steps, each with a
   `FisherSimilarityCallback`: the paper's overfitting experiment in small. A `D` that
   memorises its few training images sees held-out images unlike the generated ones,
   so its validation Fisher similarity falls below its training one;
2. compares linear probes (`mmrep.metrics.linear_probe_accuracy`, train split -> test
   split) on raw pixels, "D-pool" features (each conv block's activations of `D`,
   global-average pooled and concatenated: the paper's baseline), and AFVs of the
   full-data GAN (adapted on `G_ema` samples; a count-sketch projection of the
   gradients of all of `D`'s weights, power- and L2-normalised).

Run: `python recipes/afv_mmdigits.py` (a few minutes on 2 CPU cores) or with `--smoke`.
`--precision` and `--jit-compile` set mixed precision and XLA.
"""

import argparse
import time

import keras
import tensorflow as tf

from mmrep.data import load_mmdigits
from mmrep.heads import (
    EBMGAN,
    AdversarialFisherVector,
    FisherSimilarityCallback,
    dcgan_discriminator,
    dcgan_generator,
)
from mmrep.metrics import linear_probe_accuracy
from mmrep.training import TrainingOptions, add_training_arguments


def load(split, limit=None):
    """Images in [-1, 1] (float32 `[N, 32, 32, 3]`) and labels."""
    data = load_mmdigits(split, modalities=("image",), as_numpy=True)
    images = data["image"].astype("float32") / 127.5 - 1.0
    return images[:limit], data["label"][:limit]


def batches(images, batch_size, seed):
    """An endless shuffled stream of full batches (so every run takes the same steps)."""
    dataset = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=seed)
    return dataset.repeat().batch(batch_size, drop_remainder=True).prefetch(2)


def train_gan(images, validation, args, options, steps_per_epoch, epochs):
    """Trains one EBM-GAN; returns it, its history and the training time in seconds."""
    widths = tuple(args.widths)
    gan = EBMGAN(
        dcgan_generator(args.latent_dim, widths=widths[::-1]),
        dcgan_discriminator(widths=widths),
        generator_regularization=args.gamma,
        regularization_noise_std=args.noise_std,
        seed=args.seed,
    )
    gan.compile(**options.compile_kwargs())
    # A random subset of D's gradient coordinates: its mean squared normalised distance
    # is the authors' per-coordinate mean, so the similarity keeps their scale.
    monitor = AdversarialFisherVector(gan.discriminator, subset_size=args.monitor_dim, seed=1)
    callback = FisherSimilarityCallback(
        monitor,
        validation,
        gan.sample,
        num_samples=args.monitor_samples,
        reference_data=images[: len(validation)],
    )
    start = time.perf_counter()
    history = gan.fit(
        batches(images, args.batch_size, args.seed),
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        callbacks=[callback],
        shuffle=False,  # the stream is shuffled already
        verbose=2,
    )
    return gan, history.history, time.perf_counter() - start


def d_pool(discriminator, images):
    """Global-average-pooled activations of every conv block of `D`, concatenated."""
    blocks = [layer.output for layer in discriminator.layers if layer.name.endswith("_lrelu")]
    pooled = [keras.layers.GlobalAveragePooling2D()(block) for block in blocks]
    extractor = keras.Model(discriminator.inputs, keras.layers.Concatenate()(pooled))
    return extractor.predict(images, batch_size=256, verbose=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--gamma", type=float, default=1.0, help="generator regulariser γ")
    parser.add_argument("--noise-std", type=float, default=0.1, help="regulariser noise σ")
    parser.add_argument("--small-train", type=int, default=100, help="images of the small run")
    parser.add_argument("--afv-dim", type=int, default=4096, help="AFV sketch dimension")
    parser.add_argument("--adapt-samples", type=int, default=2048)
    parser.add_argument("--monitor-dim", type=int, default=8192, help="callback AFV subset")
    parser.add_argument("--monitor-samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.latent_dim, args.widths, args.batch_size = 16, [8, 16], 32
        args.epochs, args.steps_per_epoch, args.small_train = 1, 2, 32
        args.afv_dim, args.adapt_samples, args.monitor_dim, args.monitor_samples = 64, 64, 64, 32
    options = TrainingOptions.from_args(args).apply()
    keras.utils.set_random_seed(args.seed)
    limit = 64 if args.smoke else None
    (train_x, train_y), (test_x, test_y) = load("train", limit), load("test", limit)
    validation, _ = load("validation", limit)

    runs = {}
    for name, images in (
        (f"{args.small_train} images", train_x[: args.small_train]),
        (f"all {len(train_x)} images", train_x),
    ):
        print(f"\n== EBM-GAN on {name}: {args.epochs} x {args.steps_per_epoch} steps ==")
        runs[name] = train_gan(images, validation, args, options, args.steps_per_epoch, args.epochs)

    print(
        "\nFisher similarity of real images to G's samples (exp(-10 d²/P), 1 = alike); "
        "'train' = the run's own training images"
    )
    names = list(runs)
    print("| epoch | " + " | ".join(f"{n}: val | {n}: train" for n in names) + " |")
    print("|---:|" + "---:|---:|" * len(names))
    for epoch in range(args.epochs):
        cells = []
        for name in names:
            history = runs[name][1]
            cells += [f"{history[f'fisher_similarity_{s}'][epoch]:.3f}" for s in ("val", "train")]
        print(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    print(
        "\nAfter training: mean D (the negative energy) and the last epoch's Fisher "
        "similarity; overfitting shows as D(train) > D(val) and similarity train > val"
    )
    print(
        "| run | D(val) | D(own train) | D(G_ema samples) | similarity val | train | train - val |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        gan, history, _ = runs[name]
        own = train_x[: args.small_train] if name == names[0] else train_x
        samples = gan.sample(len(validation))
        values = [float(keras.ops.mean(gan(x))) for x in (validation, own, samples)]
        values += [history[f"fisher_similarity_{s}"][-1] for s in ("val", "train")]
        values.append(values[-1] - values[-2])
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")

    gan, _, seconds = runs[names[-1]]
    start = time.perf_counter()
    afv = AdversarialFisherVector(
        gan.discriminator,
        projection_dim=args.afv_dim,
        seed=args.seed,
        power_normalize=True,
        l2_normalize=True,
    )
    afv.adapt(gan.sample, num_samples=args.adapt_samples, verbose=0)
    xs = (train_x, test_x)
    afv_features = [afv.transform(x) for x in xs]
    afv_seconds = time.perf_counter() - start
    rows = [
        ("raw pixels", None, [x.reshape(len(x), -1) for x in xs], 0.0),
        ("D-pool (pooled conv blocks of D)", None, [d_pool(gan.discriminator, x) for x in xs], 0.0),
        (f"AFV (sketch of {afv.full_dim} gradients)", afv.output_dim(), afv_features, afv_seconds),
    ]
    print(f"\nmmdigits linear probe: train {len(train_y)} -> test {len(test_y)} images")
    print(f"(EBM-GAN trained {seconds:.0f} s; {options!r})")
    print("| representation | width | probe accuracy | extraction s |")
    print("|---|---:|---:|---:|")
    for name, width, (train_f, test_f), extract in rows:
        accuracy = linear_probe_accuracy(train_f, train_y, test_f, test_y)
        print(f"| {name} | {width or train_f.shape[1]} | {accuracy:.3f} | {extract:.0f} |")


if __name__ == "__main__":
    main()
