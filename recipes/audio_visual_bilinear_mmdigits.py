"""Audio–visual digit classification on mmdigits: compact bilinear pooling vs concatenation.

The spoken digit (a small `VGGish` on the raw waveform, log-mel frontend in the graph;
Hershey et al., ICASSP 2017) and the handwritten one (`ImageEncoder("small_cnn")`) are fused
by multimodal compact bilinear pooling (`BilinearFusion(mode="compact")`: the Tensor Sketch
of the outer product of the two feature vectors, two count sketches multiplied by FFT, then
signed square root and L2 normalisation; Gao et al., "Compact Bilinear Pooling", CVPR 2016;
Fukui et al., "Multimodal Compact Bilinear Pooling for Visual Question Answering and Visual
Grounding", EMNLP 2016) and a linear digit classifier, all trained end to end. The baseline
is `ConcatFusion` of the same features, each projected (ReLU) to half the sketch length, so
both fused vectors have the same width.

Missing modalities. Training drops one modality of an example at random (modality dropout:
each with probability `--drop / 2`; never both), by marking it absent in the `presence`
input. At test time the absent modality's input holds junk (uniform random pixels, Gaussian
noise for audio), and only the presence mask keeps it out:

- `BilinearFusion` replaces an absent modality before the sketch: with `missing="learned"`
  by a trained vector per modality, so the fused vector still carries the present
  modality (`p ⊗ y`); with `missing="zeros"` by zeros, which makes the whole bilinear
  feature zero (a product has no evidence without both factors), so such an example can
  only be given the classifier's bias. Both are shown.
- `ConcatFusion` puts zeros in the absent modality's slot and appends the presence flags.

The last column feeds junk images *without* marking them absent: what the mask prevents.

Run: `python recipes/audio_visual_bilinear_mmdigits.py` (5.5-7 minutes wall on 2 CPU
cores shared with other jobs, load average 4.5-6.5), or `--smoke` for a few-second check.
`--precision` and `--jit-compile` set mixed precision and XLA. Full-run test accuracy
(270 examples, 30 epochs, fused width 1024, seed 0):

| fusion | both | audio missing (junk) | image missing (junk) | image junk, not marked |
|---|---:|---:|---:|---:|
| compact bilinear, missing=learned | 1.000 | 0.933 | 1.000 | 0.996 |
| compact bilinear, missing=zeros | 1.000 | 0.100 | 0.100 | 0.807 |
| concat | 1.000 | 0.767 | 1.000 | 0.552 |

With `--seed 1`: 1.000 / 0.948 / 1.000 / 1.000, 1.000 / 0.104 / 0.104 / 0.800 and
0.967 / 0.807 / 0.848 / 0.170. The spoken digits (clean synthetic voices, test voices
unseen in training) are the easier modality: audio alone is all but perfect, so the
images matter when the audio is missing, where the bilinear model with a learned
placeholder does best.
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from mmrep.data import load_mmdigits
from mmrep.encoders import ImageEncoder, VGGish
from mmrep.fusion import BilinearFusion, ConcatFusion
from mmrep.training import TrainingOptions, add_training_arguments

MODALITIES = ("audio", "image")  # also the column order of `presence`
FUSIONS = {
    "compact bilinear, missing=learned": ("compact", "learned"),
    "compact bilinear, missing=zeros": ("compact", "zeros"),
    "concat": ("concat", None),
}


def parse_args(argv):
    """The command-line arguments (see `--help`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fused-dim", type=int, default=1024, help="sketch length d")
    parser.add_argument(
        "--drop", type=float, default=0.5, help="probability that one modality is dropped"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    if not 0.0 <= args.drop <= 1.0:
        parser.error(f"expected --drop in [0, 1]. Received: {args.drop}")
    return args


def encoders(args):
    """The small audio and image encoders, each giving a 64-d vector.

    VGGish with conv stages of 16/32/64/64 filters (8/16/32/32 at smoke size), one hidden
    fully connected layer of 128 and a 64-d embedding, mean-pooled over the clip's 0.96 s
    examples; `small_cnn` (16/32/64 filters), average-pooled.
    """
    width = 8 if args.smoke else 16
    audio = VGGish(
        pooling="mean",
        conv_filters=(width, 2 * width, 4 * width, 4 * width),
        fc_units=(128,),
        embedding_dim=64,
        name="audio_encoder",
    )
    image = ImageEncoder("small_cnn", pooling="avg", name="image_encoder")
    return audio, image


def build(fusion, missing, args):
    """`{"audio", "image", "presence"}` -> digit logits `[B, 10]`."""
    inputs = {
        "audio": keras.Input((16000,), name="audio"),
        "image": keras.Input((32, 32, 3), dtype="uint8", name="image"),
        "presence": keras.Input((len(MODALITIES),), name="presence"),
    }
    audio_encoder, image_encoder = encoders(args)
    features = {
        "audio": audio_encoder(inputs["audio"]),
        "image": image_encoder(inputs["image"]),
    }
    if fusion == "compact":
        fuse = BilinearFusion(
            mode="compact",
            output_dim=args.fused_dim,
            modalities=list(MODALITIES),
            missing=missing,
            seed=args.seed,
            name="fusion",
        )
    else:
        fuse = ConcatFusion(
            modalities=list(MODALITIES),
            projection_dim=args.fused_dim // 2,
            projection_activation="relu",
            name="fusion",
        )
    fused = fuse(features, presence=inputs["presence"])
    logits = keras.layers.Dense(10, name="classifier")(fused)
    return keras.Model(inputs, logits)


def modality_dropout(drop, seed):
    """Modality dropout: marks one modality absent with probability `drop`, each half of it.

    Args:
        drop: float in [0, 1]. Probability that an example loses one of its modalities;
            audio and image are dropped with probability `drop / 2` each, never both.
        seed: int. Seeds the per-example draws (new ones at every pass over the data).

    Returns:
        A tuple `(add_presence, seeds)`: a function for `Dataset.map` over
        `(example, seed)` pairs that returns `({"audio", "image", "presence"}, label)`,
        and the dataset of per-example seeds to zip with the examples.
    """

    def add_presence(example, example_seed):
        u = tf.random.stateless_uniform([], tf.stack([example_seed, example_seed // 3 + 7]))
        absent = tf.stack([u < drop / 2, tf.logical_and(u >= drop / 2, u < drop)])
        presence = 1.0 - tf.cast(absent, "float32")
        x = {"audio": example["audio"], "image": example["image"], "presence": presence}
        return x, example["label"]

    return add_presence, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)


def training_data(args, limit):
    """Train split with audio augmentation and modality dropout, fresh at every epoch."""
    data = load_mmdigits("train", modalities=MODALITIES, seed=args.seed)
    if limit:
        data = data.take(limit)
    add_presence, seeds = modality_dropout(args.drop, args.seed)
    data = tf.data.Dataset.zip(data, seeds).map(add_presence, num_parallel_calls=2)
    return data.shuffle(2048, seed=args.seed).batch(args.batch_size).prefetch(2)


def test_conditions(args, limit):
    """Test inputs for each condition: both, audio missing, image missing, image junk."""
    test = load_mmdigits("test", modalities=MODALITIES, seed=args.seed, as_numpy=True)
    audio, image, labels = test["audio"][:limit], test["image"][:limit], test["label"][:limit]
    rng = np.random.default_rng(args.seed + 1)
    junk_audio = np.clip(rng.normal(0.0, 0.3, audio.shape), -1, 1).astype("float32")
    junk_image = rng.integers(0, 256, image.shape, dtype="uint8")

    def inputs(a, i, presence):
        presence = np.tile(np.array(presence, "float32"), (len(labels), 1))
        return {"audio": a, "image": i, "presence": presence}

    conditions = {
        "both": inputs(audio, image, [1.0, 1.0]),
        "audio missing (junk)": inputs(junk_audio, image, [0.0, 1.0]),
        "image missing (junk)": inputs(audio, junk_image, [1.0, 0.0]),
        "image junk, not marked": inputs(audio, junk_image, [1.0, 1.0]),
    }
    return conditions, labels


def accuracy(model, x, labels):
    """Fraction of examples whose largest logit is their digit."""
    logits = model.predict(x, batch_size=128, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def main(argv=None):
    """Trains each fusion on mmdigits audio + image and prints the accuracy table.

    Args:
        argv: list of str or `None`. Command-line arguments (see `--help`).

    Returns:
        dict `{fusion: {condition: accuracy, "train seconds": float}}`.
    """
    args = parse_args(argv)
    options = TrainingOptions.from_args(args).apply()
    limit = 96 if args.smoke else None
    if args.smoke:
        args.epochs, args.fused_dim = 1, 64
    train = training_data(args, limit)
    conditions, labels = test_conditions(args, limit)

    results = {}
    for name, (fusion, missing) in FUSIONS.items():
        keras.utils.set_random_seed(args.seed)
        model = build(fusion, missing, args)
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            **options.compile_kwargs(),
        )
        print(f"training {name} for {args.epochs} epochs", flush=True)
        start = time.perf_counter()
        model.fit(train, epochs=args.epochs, shuffle=False, verbose=2)
        seconds = time.perf_counter() - start
        results[name] = {c: accuracy(model, x, labels) for c, x in conditions.items()}
        results[name]["train seconds"] = seconds

    print(
        f"\nmmdigits audio + image test accuracy ({len(labels)} examples), fused width "
        f"{args.fused_dim}, {args.epochs} epochs, modality dropout {args.drop}"
    )
    columns = [*conditions, "train seconds"]
    print("| fusion | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, row in results.items():
        cells = [f"{row[c]:.3f}" for c in conditions] + [f"{row['train seconds']:.0f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return results


if __name__ == "__main__":
    main()
