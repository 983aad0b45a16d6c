"""Dense CNN descriptors -> Fisher vector -> linear classifier on mmdigits, beside average pooling.

The FV-CNN recipe of Cimpoi, Maji & Vedaldi ("Deep filter banks for texture recognition and
segmentation", CVPR 2015): the last convolutional feature map of a CNN is read as a set of
local descriptors (one per position), encoded by the improved Fisher vector of a diagonal GMM
fitted on training descriptors (Sánchez et al., "Image Classification with the Fisher Vector",
IJCV 2013), and classified by a linear model. The baseline is the same feature map's global
average pooling with the same linear model. Both are run on two backbones: `small_cnn` trained
on the training split with an average-pooling head, and the same architecture left random
(where the orderless second-order statistics of the Fisher vector matter most).

A third row trains the Fisher vector end to end: the GMM (weights, means, variances) starts
from the EM fit and is learned jointly with a linear classifier on top (`trainable_gmm=True`).

Run: `python recipes/fisher_vector_mmdigits.py` (about 2 minutes on 2 CPU cores), or with
`--smoke` for a few-second check.
"""

import argparse
import time

import keras
import numpy as np

from mmrep.data import load_mmdigits
from mmrep.encoders import ImageEncoder
from mmrep.heads import FisherVector
from mmrep.metrics import linear_probe_accuracy
from mmrep.training import TrainingOptions, add_training_arguments


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=16, help="GMM components K")
    parser.add_argument("--epochs", type=int, default=10, help="CNN training epochs")
    parser.add_argument("--fv-epochs", type=int, default=20, help="end-to-end FV epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    add_training_arguments(parser)
    return parser.parse_args(argv)


def load(split, limit):
    data = load_mmdigits(split, modalities=("image",), as_numpy=True)
    return data["image"][:limit], data["label"][:limit]


def apply(layer, x, batch_size=128):
    """Runs a layer over `x` in batches (inference mode), returning a float32 numpy array.

    Float32 whatever the dtype policy: EM and the linear probe compute in numpy.
    """
    parts = [layer(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate([keras.ops.convert_to_numpy(p) for p in parts]).astype("float32")


def feature_maps(encoder, images):
    """The backbone's last feature map as descriptor sets `[n, h * w, C]`."""
    maps = apply(encoder, images)
    return maps.reshape(maps.shape[0], -1, maps.shape[-1])


def compile_classifier(model, jit_compile):
    """Adam (1e-3) on the softmax cross-entropy of the 10 digit logits, with accuracy."""
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def train_backbone(train_images, train_labels, epochs, seed, jit_compile=False):
    keras.utils.set_random_seed(seed)
    encoder = ImageEncoder("small_cnn", image_size=32, pooling=None)
    images = keras.Input((32, 32, 3), dtype="uint8")
    pooled = keras.layers.GlobalAveragePooling2D()(encoder(images))
    model = keras.Model(images, keras.layers.Dense(10)(pooled))
    compile_classifier(model, jit_compile)
    model.fit(train_images, train_labels, batch_size=64, epochs=epochs, verbose=2)
    return encoder


def fisher_features(descriptors, fit_data, k, seed):
    fisher = FisherVector(k, improved=True)
    fit = fisher.adapt(fit_data.reshape(-1, fit_data.shape[-1]), seed=seed, progress=False)
    return fisher, fit, [apply(fisher, d) for d in descriptors]


def end_to_end(fit, train, test, k, epochs, seed, jit_compile=False):
    """FisherVector with a trainable GMM (started from the EM fit) + a linear classifier."""
    keras.utils.set_random_seed(seed)
    (train_x, train_y), (test_x, test_y) = train, test
    gmm = {"weights": fit.weights, "means": fit.means, "variances": fit.variances}
    sets = keras.Input(train_x.shape[1:])
    encoded = FisherVector(k, improved=True, trainable_gmm=True, gmm=gmm)(sets)
    model = keras.Model(sets, keras.layers.Dense(10)(encoded))
    compile_classifier(model, jit_compile)
    model.fit(train_x, train_y, batch_size=64, epochs=epochs, verbose=0)
    return model.evaluate(test_x, test_y, verbose=0)[1]


def main(argv=None):
    args = parse_args(argv)
    options = TrainingOptions.from_args(args).apply()
    jit_compile = options.jit_compile
    limit = 200 if args.smoke else None
    k = 4 if args.smoke else args.components
    epochs = 1 if args.smoke else args.epochs
    fv_epochs = 1 if args.smoke else args.fv_epochs
    train_images, train_labels = load("train", limit)
    test_images, test_labels = load("test", limit)

    rows = []
    for name in ("trained", "random"):
        start = time.perf_counter()
        if name == "trained":
            encoder = train_backbone(train_images, train_labels, epochs, args.seed, jit_compile)
        else:
            keras.utils.set_random_seed(args.seed)
            encoder = ImageEncoder("small_cnn", image_size=32, pooling=None)
        train_sets = feature_maps(encoder, train_images)
        test_sets = feature_maps(encoder, test_images)
        gap = linear_probe_accuracy(
            train_sets.mean(1), train_labels, test_sets.mean(1), test_labels
        )
        _, fit, (train_fv, test_fv) = fisher_features(
            (train_sets, test_sets), train_sets, k, args.seed
        )
        fv = linear_probe_accuracy(train_fv, train_labels, test_fv, test_labels)
        learned = end_to_end(
            fit,
            (train_sets, train_labels),
            (test_sets, test_labels),
            k,
            fv_epochs,
            args.seed,
            jit_compile,
        )
        rows.append((name, train_sets.shape, gap, fv, learned, time.perf_counter() - start))

    print(f"\nmmdigits test accuracy ({len(test_labels)} images), small_cnn feature map, K={k}")
    print(
        "| backbone | descriptors per image | average pooling + linear | "
        "Fisher vector + linear | Fisher vector, GMM learned end to end | seconds |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for name, shape, gap, fv, learned, seconds in rows:
        print(
            f"| {name} | {shape[1]} × {shape[2]} | {gap:.3f} | {fv:.3f} | {learned:.3f} "
            f"| {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
