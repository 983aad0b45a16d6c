"""A small four-modality model for the export tests, and inputs for it.

mmdigits-sized inputs (image uint8 32x32x3, a caption string, 1 s of 16 kHz audio, 16
frames of 32x32 video) through mmrep's own encoders (ImageEncoder's small CNN,
TextVectorization + embedding, VGGish with its in-graph log-mel frontend, VideoEncoder
over a small CNN), ConcatFusion with a presence mask, dropout and a softmax. Its
BatchNormalization and Dropout layers behave differently in training, so outputs equal
to `model(x, training=False)` show that a signature runs in inference mode.
"""

import keras
import numpy as np

from mmrep.data.mmdigits import MODALITIES

CAPTIONS = [
    "a handwritten zero",
    "the digit one written by hand",
    "number two in ink",
    "a scrawled three",
    "four, neatly drawn",
    "the numeral 5",
]
IMAGE, FRAMES = (32, 32, 3), 16


def build(seed=0):
    """`(model, embeddings)`: the fusion model and `{modality: one-input model}`."""
    from mmrep.encoders import ImageEncoder, VGGish, VideoEncoder
    from mmrep.fusion import ConcatFusion

    keras.utils.set_random_seed(seed)
    image = keras.Input(IMAGE, dtype="uint8", name="image")
    text = keras.Input((), dtype="string", name="text")
    audio = keras.Input((16000,), name="audio")
    video = keras.Input((FRAMES, *IMAGE), dtype="uint8", name="video")
    presence = keras.Input((len(MODALITIES),), name="presence")

    image_vector = ImageEncoder("small_cnn", backbone_kwargs={"filters": [4, 8]})(image)
    vectorize = keras.layers.TextVectorization(max_tokens=64, output_sequence_length=8)
    vectorize.adapt(CAPTIONS)
    tokens = keras.layers.Embedding(64, 8, mask_zero=True)(vectorize(text))
    text_vector = keras.layers.GlobalAveragePooling1D()(tokens)
    audio_vector = VGGish(
        pooling="mean", conv_filters=(4, 4, 4, 4), fc_units=(8,), embedding_dim=8
    )(audio)
    frame_encoder = ImageEncoder("small_cnn", backbone_kwargs={"filters": [4]})
    video_vector = VideoEncoder(frame_encoder, pooling="mean")(video)

    vectors = {"image": image_vector, "text": text_vector, "audio": audio_vector}
    vectors["video"] = video_vector
    fused = ConcatFusion(modalities=list(MODALITIES), projection_dim=8, normalization="layer")(
        vectors, presence=presence
    )
    hidden = keras.layers.Dropout(0.5)(fused)
    probabilities = keras.layers.Dense(10, activation="softmax", name="probabilities")(hidden)
    inputs = {"image": image, "text": text, "audio": audio, "video": video}
    model = keras.Model(
        {**inputs, "presence": presence},
        {"embedding": fused, "probabilities": probabilities},
        name="export_test_model",
    )
    embeddings = {m: keras.Model(inputs[m], vectors[m], name=f"{m}_embedding") for m in inputs}
    return model, embeddings


def example_inputs(batch, seed=0):
    """Random inputs for `batch` examples; presence has absent modalities in some rows."""
    rng = np.random.default_rng(seed)
    words = " ".join(CAPTIONS).replace(",", "").split()
    presence = (rng.uniform(size=(batch, len(MODALITIES))) > 0.3).astype("float32")
    presence[:, 0] = 1.0  # never all absent
    return {
        "image": rng.integers(0, 256, (batch, *IMAGE), dtype=np.uint8),
        "text": np.array(
            [" ".join(rng.choice(words, 4)).encode() for _ in range(batch)], dtype=object
        ),
        "audio": (0.3 * rng.standard_normal((batch, 16000))).astype("float32"),
        "video": rng.integers(0, 256, (batch, FRAMES, *IMAGE), dtype=np.uint8),
        "presence": presence,
    }


def keras_outputs(model, inputs):
    """The model's outputs in inference mode, as numpy arrays."""
    import tensorflow as tf

    feed = {k: tf.constant(v) for k, v in inputs.items()}
    return keras.tree.map_structure(np.asarray, model(feed, training=False))
