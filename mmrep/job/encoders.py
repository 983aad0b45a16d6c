"""The main job's four encoders: mmrep's own image, text, audio and video encoders, small.

Each is the library encoder in a variant small enough to train from scratch on two CPU
cores in a few minutes, followed where needed by a dense layer to a vector:

- image: `ImageEncoder("small_cnn")` (conv-BatchNorm-ReLU blocks) keeping its feature
  map, flattened (where a stroke is matters for a digit), then `Dense(vector_dim)`;
- text: token ids from `keras.layers.TextVectorization` (core TensorFlow ops, so a
  SavedModel with the tokenizer loads with TensorFlow alone) into a two-layer
  `BertEncoder` with mean pooling over the real tokens (padding mask `ids != 0`);
- audio: `VGGish` with narrow convolutions on the raw 16 kHz waveform (its log-mel
  frontend is in the graph), mean-pooled over its 0.96 s examples;
- video: `VideoEncoder` over a per-frame small CNN (frames averaged down to
  `video_frame_size`, global max pooling: the digit moves, so where it is does not
  matter), mean-pooled over time.
"""

import dataclasses

import keras
from keras import ops

from mmrep.data.mmdigits import MODALITIES


@dataclasses.dataclass(frozen=True)
class EncoderSizes:
    """Widths of the main job's encoders (the defaults fit the 10-minute CPU budget).

    Args:
        vector_dim: int. Width of every encoder's output vector. Defaults to `64`.
        image_filters: tuple of ints. `small_cnn` block widths for images.
        video_filters: tuple of ints. `small_cnn` block widths for video frames.
        video_frame_size: int. Side frames are averaged down to before the frame CNN
            (a divisor of 32).
        video_frame_pooling: `None` (flatten the frame CNN's map, keeping where the
            strokes are), `"max"` or `"avg"` (global pooling: where the moving digit is
            does not matter).
        text_length: int. Tokens per caption (longer ones are cut, shorter padded).
        text_layers: int. Transformer blocks of the text encoder.
        text_hidden: int. Hidden width of the text encoder.
        text_heads: int. Attention heads of the text encoder.
        audio_filters: 4 ints. VGGish convolution widths.
        audio_units: tuple of ints. VGGish hidden fully connected widths.
    """

    vector_dim: int = 64
    image_filters: tuple = (16, 32, 32)
    video_filters: tuple = (16, 32, 64)
    video_frame_size: int = 16
    video_frame_pooling: str = "max"
    text_length: int = 16
    text_layers: int = 2
    text_hidden: int = 64
    text_heads: int = 2
    audio_filters: tuple = (8, 16, 32, 32)
    audio_units: tuple = (64,)


@keras.saving.register_keras_serializable(package="mmrep")
class PaddingMask(keras.layers.Layer):
    """`token_ids != 0`: the real tokens of a padded id sequence (id 0 is padding).

    `keras.layers.TextVectorization` pads with 0, and `BertEncoder` takes the mask as
    `"padding_mask"`.

    Call arguments:
        token_ids: integer tensor `[B, L]`.

    Returns:
        bool tensor `[B, L]`.

    Raises:
        TypeError: for token ids that are not integers.
    """

    def call(self, token_ids):
        dtype = keras.backend.standardize_dtype(token_ids.dtype)
        if "int" not in dtype:
            raise TypeError(f"{self.name}: expected integer token ids. Received: dtype={dtype}")
        return ops.not_equal(token_ids, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="bool")


def make_tokenizer(vocabulary, length):
    """The caption tokenizer: lower-cased, punctuation stripped, split on spaces, ids.

    Args:
        vocabulary: list of str. The words, most frequent first (ids 2.. in this order;
            0 is padding and 1 an unknown word).
        length: int. Output length `L` (padded with 0 or cut).

    Returns:
        A `keras.layers.TextVectorization` named `"text_tokenizer"` mapping strings `[B]`
        to int64 ids `[B, L]`; the vocabulary is part of its config.

    Raises:
        ValueError: for an empty vocabulary or one with the reserved tokens.
    """
    vocabulary = [str(word) for word in vocabulary]
    if not vocabulary or "" in vocabulary or "[UNK]" in vocabulary:
        raise ValueError(
            "Expected `vocabulary` to be a non-empty list of words without '' and '[UNK]' "
            f"(the padding and unknown tokens are added). Received: {vocabulary[:10]}"
        )
    return keras.layers.TextVectorization(
        vocabulary=vocabulary, output_sequence_length=length, name="text_tokenizer"
    )


def caption_vocabulary(captions, max_words=1000):
    """The words of the captions, most frequent first, as `TextVectorization` splits them.

    Args:
        captions: array of str or bytes.
        max_words: int. Keep at most this many words. Defaults to `1000`.

    Returns:
        list of str.
    """
    layer = keras.layers.TextVectorization(max_tokens=max_words + 2)
    layer.adapt([c.decode() if isinstance(c, bytes) else str(c) for c in captions])
    return [str(w) for w in layer.get_vocabulary()[2:]]


# The layers of each modality's encoder, in the order they apply (see `make_encoders`).
ENCODER_LAYERS = {
    "image": ("image_encoder", "image_flatten", "image_vector"),
    "text": ("text_encoder", "text_vector"),
    "audio": ("audio_encoder", "audio_vector"),
    "video": ("video_encoder",),
}


def make_encoders(vocabulary_size, sizes=None):
    """The four encoders and their dense heads, as layers keyed by their names.

    Args:
        vocabulary_size: int. Ids the text encoder embeds (the tokenizer's vocabulary
            size, padding and unknown included).
        sizes: `EncoderSizes` or `None` for the defaults.

    Returns:
        dict `{name: layer}` with the layers of `ENCODER_LAYERS`, which `encode` applies
        to a modality's input (uint8 images `[B, 32, 32, 3]`, int token ids `[B, L]` with
        a `PaddingMask`, waveforms `[B, 16000]`, uint8 videos `[B, T, 32, 32, 3]`) to
        give a vector `[B, vector_dim]`.
    """
    from mmrep.encoders import BertEncoder, ImageEncoder, VGGish, VideoEncoder

    sizes = sizes or EncoderSizes()
    width = sizes.vector_dim
    image = [
        ImageEncoder(
            "small_cnn",
            pooling=None,
            image_size=32,
            backbone_kwargs={"filters": list(sizes.image_filters)},
            name="image_encoder",
        ),
        keras.layers.Flatten(name="image_flatten"),
        keras.layers.Dense(width, activation="relu", name="image_vector"),
    ]
    frame = keras.Input((32, 32, 3), dtype="uint8", name="frame")
    factor = 32 // sizes.video_frame_size
    if factor * sizes.video_frame_size != 32:
        raise ValueError(
            "Expected `video_frame_size` to divide the frames' 32 pixels. "
            f"Received: video_frame_size={sizes.video_frame_size}"
        )
    pixels = frame
    if factor > 1:
        # Area downsampling (2x2 means) rather than the encoder's antialiased resize,
        # which XLA on CPU cannot compile (no ScaleAndTranslate kernel).
        pixels = keras.layers.Rescaling(1.0, name="frame_to_float")(pixels)
        pixels = keras.layers.AveragePooling2D(factor, name="frame_downsample")(pixels)
    frame_features = ImageEncoder(
        "small_cnn",
        pooling=sizes.video_frame_pooling,
        image_size=sizes.video_frame_size,
        backbone_kwargs={"filters": list(sizes.video_filters)},
        name="frame_cnn",
    )(pixels)
    if sizes.video_frame_pooling is None:
        frame_features = keras.layers.Flatten(name="frame_flatten")(frame_features)
    frame_vector = keras.layers.Dense(width, activation="relu", name="frame_vector")(frame_features)
    frame_encoder = keras.Model(frame, frame_vector, name="frame_encoder")
    video = [VideoEncoder(frame_encoder, pooling="mean", name="video_encoder")]
    text = [
        BertEncoder(
            vocabulary_size=vocabulary_size,
            num_layers=sizes.text_layers,
            num_heads=sizes.text_heads,
            hidden_size=sizes.text_hidden,
            intermediate_size=2 * sizes.text_hidden,
            max_position_embeddings=sizes.text_length,
            pooling="mean",
            name="text_encoder",
        ),
        keras.layers.Dense(width, activation="relu", name="text_vector"),
    ]
    audio = [
        VGGish(
            pooling="mean",
            conv_filters=tuple(sizes.audio_filters),
            fc_units=tuple(sizes.audio_units),
            embedding_dim=width,
            name="audio_encoder",
        ),
        keras.layers.ReLU(name="audio_vector"),
    ]
    return {layer.name: layer for layer in [*image, *text, *audio, *video]}


def encode(layers, modality, value):
    """Applies one modality's encoder layers to its (symbolic or eager) input.

    Args:
        layers: dict `{name: layer}` holding `ENCODER_LAYERS[modality]` (and
            `"padding_mask"` for text), e.g. the layers of `make_encoders`.
        modality: str. One of `MODALITIES`.
        value: the modality's input (token ids for text).

    Returns:
        The vector `[B, vector_dim]`.

    Raises:
        ValueError: for an unknown modality.
    """
    if modality not in MODALITIES:
        raise ValueError(f"Expected a modality in {MODALITIES}. Received: {modality!r}")
    x = value
    for i, name in enumerate(ENCODER_LAYERS[modality]):
        if modality == "text" and i == 0:
            x = layers[name]({"token_ids": x, "padding_mask": layers["padding_mask"](x)})
        else:
            x = layers[name](x)
    return x
