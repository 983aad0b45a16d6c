"""Multimodal VAE (product of experts) on mmdigits images and labels, as in the MVAE paper.

Trains `mmrep.heads.MultimodalVAE` on image + one-hot label pairs (optionally with labels
missing for a fraction of the training examples, the paper's weak supervision), then
reports on the test split:

- image -> label: the label decoded from the image-only posterior (accuracy);
- label -> image: images generated from the label-only posterior, scored by how often
  each generated image is nearest to its own digit's mean test image, and the ratio of
  that distance to the nearest other digit's mean (below 1 is right);
- the joint ELBO (nats per example, one sample, reconstruction weights of 1).

Run: `python recipes/mvae_mmdigits.py` (a few minutes on 2 CPU cores) or `--smoke`.

Reference:
    Wu & Goodman, "Multimodal Generative Models for Scalable Weakly-Supervised Learning",
    NeurIPS 2018.
"""

import argparse
import time

import keras
import numpy as np
from keras import ops

from mmrep.data import load_mmdigits
from mmrep.heads import MultimodalVAE
from mmrep.losses.divergences import kl_standard_normal
from mmrep.losses.reconstruction import bernoulli_nll
from mmrep.training import TrainingOptions, add_training_arguments


def load(split, image_size):
    """Images as pixels in [0, 1] `[N, S*S]`, one-hot labels `[N, 10]`, and digits `[N]`."""
    data = load_mmdigits(split, modalities=("image",), image_size=image_size, as_numpy=True)
    images = data["image"][..., 0].reshape(len(data["label"]), -1).astype("float32") / 255.0
    return images, np.eye(10, dtype="float32")[data["label"]], data["label"]


def mlp(units, out, name):
    """A ReLU multilayer perceptron ending in a linear layer of width `out`."""
    layers = [keras.layers.Dense(u, activation="relu") for u in units]
    return keras.Sequential([*layers, keras.layers.Dense(out)], name=name)


def build(pixels, args):
    """The image + label MVAE of the paper's MNIST experiment, at the given sizes."""
    hidden = (args.hidden, args.hidden)
    return MultimodalVAE(
        encoders={
            "image": mlp(hidden, args.hidden, "image_net"),
            "label": mlp((64,), 64, "label_net"),
        },
        decoders={
            "image": mlp(hidden, pixels, "image_decoder"),
            "label": mlp((64,), 10, "label_dec"),
        },
        reconstruction_losses={"image": "bernoulli", "label": "categorical"},
        reconstruction_weights={"label": args.label_weight},
        latent_dim=args.latent_dim,
        num_subsets=args.num_subsets,
        seed=args.seed,
    )


def joint_elbo(model, images, labels, seed):
    """Mean one-sample joint ELBO `[nats]` with unit reconstruction weights."""
    out = model({"image": images, "label": labels})
    noise = np.random.default_rng(seed).standard_normal(out["z_mean"].shape).astype("float32")
    z = out["z_mean"] + ops.exp(0.5 * out["z_log_var"]) * noise
    image_nll = bernoulli_nll(images, model.decoders["image"](z))
    # The decoders compute in the policy's dtype; the ELBO is summed in float32.
    label_logits = ops.cast(model.decoders["label"](z), "float32")
    label_nll = -ops.sum(labels * ops.log_softmax(label_logits, axis=-1), -1)
    kl = kl_standard_normal(out["z_mean"], out["z_log_var"])
    return -float(ops.mean(image_nll + label_nll + kl))


def evaluate(model, test):
    """Image -> label accuracy, label -> image nearest-mean rate and distance ratio."""
    images, _, digits = test
    predicted = model.generate({"image": images}, modalities=["label"])["label"]
    accuracy = float(np.mean(np.argmax(ops.convert_to_numpy(predicted), 1) == digits))
    class_means = np.stack([images[digits == d].mean(0) for d in range(10)])
    generated = model.generate({"label": np.eye(10, dtype="float32")}, modalities=["image"])
    distances = np.linalg.norm(
        ops.convert_to_numpy(generated["image"])[:, None] - class_means[None], axis=-1
    )
    own = np.diag(distances)
    others = np.where(np.eye(10, dtype=bool), np.inf, distances).min(1)
    nearest = float(np.mean(np.argmin(distances, 1) == np.arange(10)))
    return accuracy, nearest, float(np.mean(own / others))


def main(argv=None):
    """Trains the image + label MVAE on mmdigits and prints the results table.

    Args:
        argv: list of str or `None`. Command-line arguments (see `--help`).

    Returns:
        A dict of the reported numbers.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--label-weight", type=float, default=50.0)
    parser.add_argument("--num-subsets", type=int, default=0)
    parser.add_argument(
        "--missing-labels", type=float, default=0.0, help="fraction of training labels dropped"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    options = TrainingOptions.from_args(args).apply()
    if args.smoke:
        args.image_size, args.epochs, args.hidden, args.latent_dim = 8, 2, 32, 4

    keras.utils.set_random_seed(args.seed)
    images, labels, _ = load("train", args.image_size)
    test = load("test", args.image_size)
    presence = np.ones((len(images), 2), "float32")  # columns: image, label (sorted)
    dropped = np.random.default_rng(args.seed).uniform(size=len(images)) < args.missing_labels
    presence[dropped, 1] = 0.0

    model = build(images.shape[1], args)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), **options.compile_kwargs())
    start = time.time()
    model.fit(
        {"image": images, "label": labels, "presence": presence},
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
    )
    seconds = time.time() - start
    accuracy, nearest, ratio = evaluate(model, test)
    elbo = joint_elbo(model, test[0], test[1], args.seed)
    results = {
        "image->label accuracy": accuracy,
        "label->image nearest own mean": nearest,
        "label->image own/other distance": ratio,
        "joint ELBO (nats)": elbo,
        "train seconds": seconds,
    }
    print(
        f"MVAE on mmdigits ({args.image_size}x{args.image_size}, {args.epochs} epochs, "
        f"{args.missing_labels:.0%} labels missing)"
    )
    print("| metric | value |\n|---|---:|")
    for name, value in results.items():
        print(f"| {name} | {value:.3f} |")
    return results


if __name__ == "__main__":
    main()
