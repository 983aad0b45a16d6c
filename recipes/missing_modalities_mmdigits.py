"""Four-modality fusion that survives missing modalities, on mmdigits, in about a minute.

Each modality of mmdigits gets a small encoder trained from scratch: a CNN for the
handwritten digit, a bag of caption tokens for the text, a log-mel CNN for the spoken
digit, a per-frame CNN averaged over time for the moving-digit clip. `ConcatFusion` joins
them (per-modality projections with layer normalisation, presence flags appended) and a
linear layer classifies the digit. Training marks each modality absent with probability
0.5, keeping at least one (`mmrep.data.with_modality_dropout`, the ModDrop scheme of
Neverova et al., IEEE TPAMI 2016), so the one model learns every subset.

The test split is then scored with every modality present, with each one missing, and
with each one alone. A missing modality's input is filled with values that would mislead
if read (NaN audio, noise pixels, a caption naming the wrong digit); only the presence
mask keeps them out of the computation (Baltrušaitis, Ahuja & Morency, "Multimodal Machine
Learning: A Survey and Taxonomy", IEEE TPAMI 2019, for early fusion by concatenation).

Run: `python recipes/missing_modalities_mmdigits.py` (about a minute of training on 2 CPU
cores, 12 epochs), or `--smoke` for a few-second check; `--save model.keras` also saves
the model and checks that it reloads with identical predictions. `--precision` and
`--jit-compile` set mixed precision and XLA.
"""

import argparse

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from mmrep import MODALITY_ORDER
from mmrep.data import load_mmdigits, with_modality_dropout
from mmrep.fusion import ConcatFusion
from mmrep.training import TrainingOptions, add_training_arguments

MODALITIES = MODALITY_ORDER  # image, text, audio, video: also the presence columns
NUM_CLASSES = 10
DROP_RATE = 0.5


def encoders(captions):
    """`(inputs, vectors)`: one small Keras encoder per modality, each to a vector."""

    def conv_stack(x, widths):
        # Flatten, not global pooling: where a stroke is matters for a digit.
        for width in widths:
            x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
            x = layers.MaxPooling2D()(x)
        return layers.Dense(64, activation="relu")(layers.Flatten()(x))

    image = keras.Input((32, 32, 3), dtype="uint8", name="image")
    image_vector = conv_stack(layers.Rescaling(1 / 255)(image), (16, 32))

    text = keras.Input((), dtype="string", name="text")
    vectorize = layers.TextVectorization(max_tokens=256, output_sequence_length=12)
    vectorize.adapt(captions)
    tokens = layers.Embedding(256, 16, mask_zero=True)(vectorize(text))
    text_vector = layers.GlobalAveragePooling1D()(tokens)

    # Log-mel frames, then convolutions over time with the mel bands as channels; global
    # max pooling finds the word wherever it sits in the window.
    audio = keras.Input((16000,), name="audio")
    mel = layers.MelSpectrogram(
        fft_length=512,
        sequence_stride=160,
        sequence_length=400,
        sampling_rate=16000,
        num_mel_bins=40,
    )(audio)
    frames = layers.LayerNormalization()(layers.Permute((2, 1))(mel))
    for width in (64, 64):
        frames = layers.Conv1D(width, 5, padding="same", activation="relu")(frames)
        frames = layers.MaxPooling1D(2)(frames)
    audio_vector = layers.GlobalMaxPooling1D()(frames)

    video = keras.Input((16, 32, 32, 3), dtype="uint8", name="video")
    frame = keras.Input((32, 32, 3), dtype="uint8")
    frame_encoder = keras.Model(frame, conv_stack(layers.Rescaling(1 / 255)(frame), (16, 32)))
    video_vector = layers.GlobalAveragePooling1D()(layers.TimeDistributed(frame_encoder)(video))

    inputs = {"image": image, "text": text, "audio": audio, "video": video}
    vectors = {"image": image_vector, "text": text_vector, "audio": audio_vector}
    vectors["video"] = video_vector
    return inputs, vectors


def build_model(captions):
    """The classifier: per-modality encoders, `ConcatFusion`, a linear softmax layer."""
    inputs, vectors = encoders(captions)
    presence = keras.Input((len(MODALITIES),), name="presence")
    fused = ConcatFusion(projection_dim=32, normalization="layer")(vectors, presence=presence)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax")(fused)
    return keras.Model({**inputs, "presence": presence}, outputs, name="mmdigits_fusion")


def misleading(modality, values):
    """What an absent modality holds at test time: values that would mislead if read."""
    if modality == "audio":
        return np.full(values.shape, np.nan, "float32")
    if modality == "text":
        return np.full(values.shape, "a handwritten nine", dtype=object)
    return np.random.default_rng(0).integers(0, 256, values.shape, dtype=np.uint8)


def feed(features, present):
    """Model inputs with the modalities outside `present` absent (and misleading)."""
    count = len(features["label"])
    out = {m: features[m] if m in present else misleading(m, features[m]) for m in MODALITIES}
    out["text"] = tf.constant(out["text"].astype(bytes))
    out["presence"] = np.tile(np.array([[m in present for m in MODALITIES]], "float32"), (count, 1))
    return out


def run(epochs=12, seed=0, save=None, batch_size=64, limit=None, options=None):
    """Trains the model on mmdigits and scores the test split per condition.

    Args:
        epochs: int. Training epochs. Defaults to `12`.
        seed: int. Seeds the data, the dropout and the weights. Defaults to `0`.
        save: str or `None`. A `.keras` path to save the model to (and reload, checking
            the predictions). Defaults to `None`.
        batch_size: int. Defaults to `64`.
        limit: int or `None`. Use only the first `limit` examples of each split.
        options: a `TrainingOptions`, or `None` for the defaults.

    Returns:
        dict `{condition: test accuracy}`.
    """
    options = options or TrainingOptions()
    keras.utils.set_random_seed(seed)
    train = load_mmdigits("train", seed=seed)
    captions = load_mmdigits("train", modalities=("text",), as_numpy=True)["text"]
    test = load_mmdigits("test", seed=seed, as_numpy=True)
    if limit is not None:
        train = train.take(limit)
        test = {k: v[:limit] for k, v in test.items()}
    model = build_model(captions)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        **options.compile_kwargs(),
    )
    batches = (
        with_modality_dropout(train.shuffle(2048, seed=seed), MODALITIES, seed, rate=DROP_RATE)
        .map(lambda example: ({k: v for k, v in example.items() if k != "label"}, example["label"]))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    print(f"training {model.name} for {epochs} epochs, modality dropout {DROP_RATE}", flush=True)
    model.fit(batches, epochs=epochs, verbose=2, shuffle=False)  # shuffled by the dataset

    def accuracy(present):
        probs = model.predict(feed(test, present), batch_size=256, verbose=0)
        return float(np.mean(probs.argmax(-1) == test["label"]))

    everything = set(MODALITIES)
    results = {"all modalities": accuracy(everything)}
    results.update({f"{m} missing": accuracy(everything - {m}) for m in MODALITIES})
    results.update({f"{m} only": accuracy({m}) for m in MODALITIES})

    if save:
        model.save(save)
        reloaded = keras.models.load_model(save)
        inputs = feed(test, everything)
        same = np.allclose(reloaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0))
        if not same:
            raise RuntimeError(f"the model reloaded from {save} gives different predictions")
        print(f"saved to {save} (reloaded: identical predictions)")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", metavar="PATH", help="also save the model as .keras")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    options = TrainingOptions.from_args(args).apply()
    if args.smoke:
        args.epochs = 1
    results = run(
        epochs=args.epochs,
        seed=args.seed,
        save=args.save,
        limit=128 if args.smoke else None,
        options=options,
    )
    count = 128 if args.smoke else "all"
    print(f"\nmmdigits test accuracy ({count} examples, chance {1 / NUM_CLASSES:.2f}):")
    print("| condition | accuracy |")
    print("|---|---:|")
    for condition, value in results.items():
        print(f"| {condition} | {value:.3f} |")
    return results


if __name__ == "__main__":
    main()
