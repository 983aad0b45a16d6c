"""The built-in demo: four-modality fusion with missing modalities on mmdigits.

A one-minute sibling of the main job (`mmrep train`, `mmrep.job`), with lighter encoders
of its own and no run folder or export: it needs no files beyond the package and no
network, and runs in about a minute on two CPU cores. Each modality of
mmdigits gets a small encoder trained from scratch (a CNN for images, a bag of caption
tokens for text, a log-mel CNN for audio, a per-frame CNN averaged over time for video);
`ConcatFusion` joins them, and a linear layer classifies the digit. Training drops each
modality with probability 0.5 (keeping at least one), so the model learns every subset;
the test split is then scored with every modality present, with each one missing, and
with each one alone. A missing modality's input is filled with junk that would mislead
if read (NaN audio, noise pixels, a caption naming the wrong digit); the presence mask
keeps it out of the computation. The dropout and the junk are the main job's
(`mmrep.job.data`).
"""

import numpy as np

from mmrep.data.mmdigits import MODALITIES, load_mmdigits
from mmrep.job.data import DROP_RATE, junk_like, with_modality_dropout

NUM_CLASSES = 10


def _encoders(captions):
    """One small Keras encoder per modality, each mapping its input to a vector."""
    import keras
    from keras import layers

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
    vectors = {
        "image": image_vector,
        "text": text_vector,
        "audio": audio_vector,
        "video": video_vector,
    }
    return inputs, vectors


def build_model(captions):
    """The demo classifier: per-modality encoders, ConcatFusion, a linear layer."""
    import keras

    from mmrep.fusion import ConcatFusion

    inputs, vectors = _encoders(captions)
    presence = keras.Input((len(MODALITIES),), name="presence")
    fused = ConcatFusion(modalities=list(MODALITIES), projection_dim=32, normalization="layer")(
        vectors, presence=presence
    )
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(fused)
    model = keras.Model({**inputs, "presence": presence}, outputs, name="mmdigits_fusion_demo")
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _as_inputs(example):
    label = example.pop("label")
    return example, label


def run_demo(epochs=12, seed=0, save=None, batch_size=64):
    """Trains the demo model on mmdigits and prints test accuracy per condition.

    Returns:
        dict `{condition: accuracy}` on the test split.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    train = load_mmdigits("train", seed=seed)
    captions = load_mmdigits("train", modalities=("text",), as_numpy=True)["text"]
    model = build_model(captions)
    print(
        f"Training {model.name} on mmdigits: {int(train.cardinality())} examples, "
        f"modalities {list(MODALITIES)}, modality dropout {DROP_RATE}"
    )
    batches = (
        with_modality_dropout(train.shuffle(2048, seed=seed), seed)
        .map(_as_inputs)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    model.fit(batches, epochs=epochs, verbose=2, shuffle=False)  # shuffled by the dataset

    test = load_mmdigits("test", seed=seed, as_numpy=True)
    labels = test.pop("label")
    count = len(labels)

    def accuracy(present):
        features = {
            m: v if m in present else junk_like(m, v, nan_audio=True) for m, v in test.items()
        }
        mask = np.array([[m in present for m in MODALITIES]] * count, "float32")
        feed = {**features, "text": tf.constant(features["text"].astype(bytes)), "presence": mask}
        probs = model.predict(feed, batch_size=256, verbose=0)
        return float(np.mean(probs.argmax(-1) == labels))

    results = {"all modalities": accuracy(set(MODALITIES))}
    for m in MODALITIES:
        results[f"{m} missing"] = accuracy(set(MODALITIES) - {m})
    for m in MODALITIES:
        results[f"{m} only"] = accuracy({m})

    print(f"\nTest accuracy ({count} examples, chance {1 / NUM_CLASSES:.2f}):")
    for condition, value in results.items():
        print(f"  {condition:<20} {value:.3f}")

    if save:
        model.save(save)
        reloaded = keras.models.load_model(save)
        feed = {
            **test,
            "text": tf.constant(test["text"].astype(bytes)),
            "presence": np.ones((count, len(MODALITIES)), "float32"),
        }
        same = np.allclose(
            reloaded.predict(feed, verbose=0), model.predict(feed, verbose=0), atol=1e-5
        )
        if not same:
            raise RuntimeError(f"the model reloaded from {save} gives different predictions")
        print(f"\nSaved to {save} (reloaded: identical predictions)")
    return results
