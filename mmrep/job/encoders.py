"""The run's encoders: one per modality, built from its `[modalities.<name>]` table.

Each modality becomes mmrep's own encoder followed by a dense layer to the fusion's
`vector_dim`, its layers named after the modality (`<m>_encoder`, `<m>_vector`, ...), so
that a reloaded model is rewired by name:

- image: `ImageEncoder(encoder, weights=...)` (any keras.applications backbone with
  `"imagenet"` weights from Keras's cache, a local weights file, or `small_cnn` from
  scratch), globally pooled or flattened (`pooling = "flatten"` keeps where things are);
- text: `BertEncoder.from_pretrained(weights)` with its own WordPiece tokenizer in the
  graph (`TextTokenizer.in_graph`, a Hugging Face id or folder), or a small BERT trained
  from scratch over `keras.layers.TextVectorization` ids (core TensorFlow ops) with the
  training captions' words; mean or [CLS] pooling over the real tokens;
- audio: `VGGish` on the raw 16 kHz waveform of any length (its log-mel frontend is in
  the graph) with its `lengths`, mean-pooled over the 0.96 s examples; pretrained
  weights (a TF1 checkpoint, SavedModel folder or TF Hub handle, then a dense layer), or
  small from scratch with its embedding layer `vector_dim` wide (then a ReLU);
- video: `VideoEncoder` over a frame encoder (an image encoder of its own, or one with
  the image modality's settings), pooled over the real frames (`<m>_frame_mask`).

References:
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; Devlin et al.,
    "BERT", NAACL 2019; Hershey et al., "CNN Architectures for Large-Scale Audio
    Classification", ICASSP 2017 (VGGish); Wang et al., "Temporal Segment Networks",
    ECCV 2016 (frame sampling and averaging).
"""

import keras
from keras import ops

from mmrep.job.graph_layers import LengthFloor


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


def make_tokenizer(vocabulary, length, name="text_tokenizer"):
    """The caption tokenizer: lower-cased, punctuation stripped, split on spaces, ids.

    Args:
        vocabulary: list of str. The words, most frequent first (ids 2.. in this order;
            0 is padding and 1 an unknown word).
        length: int. Output length `L` (padded with 0 or cut).
        name: str. The layer's name. Defaults to `"text_tokenizer"`.

    Returns:
        A `keras.layers.TextVectorization` named `name` mapping strings `[B]`
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
        vocabulary=vocabulary, output_sequence_length=length, name=name
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


def _image_layers(prefix, table, vector_dim):
    """`[ImageEncoder, (Flatten), Dense]` for an image table (also a video frame table)."""
    from mmrep.encoders import ImageEncoder

    flatten = table["pooling"] == "flatten"
    kwargs = {}
    if table["filters"] is not None:
        kwargs["backbone_kwargs"] = {"filters": list(table["filters"])}
    encoder = ImageEncoder(
        table["encoder"],
        weights=table["weights"],
        pooling=None if flatten else table["pooling"],
        image_size=table["image_size"],
        trainable_blocks=table["trainable_blocks"],
        name=f"{prefix}_encoder",
        **kwargs,
    )
    if not table["trainable"]:
        encoder.trainable = False
    layers = [encoder]
    if flatten:
        layers.append(keras.layers.Flatten(name=f"{prefix}_flatten"))
    layers.append(keras.layers.Dense(vector_dim, activation="relu", name=f"{prefix}_vector"))
    return layers


def _frame_encoder(name, table, image_table, vector_dim):
    """The per-frame model of a video modality: uint8 frames `[S, S, 3]` to vectors."""
    frame_table = dict(image_table if table["frame_encoder"] == "image" else table["frame"])
    size = table["frame_size"]
    frame = keras.Input((size, size, 3), dtype="uint8", name="frame")
    pixels = frame
    factor = size // frame_table["image_size"]
    if factor > 1 and factor * frame_table["image_size"] == size:
        # Area downsampling (means of factor x factor blocks) rather than the encoder's
        # antialiased resize, which XLA on CPU cannot compile (no ScaleAndTranslate).
        pixels = keras.layers.Rescaling(1.0, name="frame_to_float")(pixels)
        pixels = keras.layers.AveragePooling2D(factor, name="frame_downsample")(pixels)
    for layer in _image_layers(f"{name}_frame", frame_table, vector_dim):
        pixels = layer(pixels)
    return keras.Model(frame, pixels, name=f"{name}_frame_encoder")


def _text_layers(name, table, vector_dim, captions):
    """`{tokenizer, encoder, vector}` for a text table."""
    from mmrep.encoders import BertEncoder, TextTokenizer

    length = table["sequence_length"]
    if table["weights"] is not None:
        tokenizer = TextTokenizer.from_pretrained(table["weights"], sequence_length=length)
        text_tokenizer = tokenizer.in_graph(name=f"{name}_tokenizer")
        encoder = BertEncoder.from_pretrained(
            table["weights"],
            pooling=table["pooling"],
            frozen_layers=table["frozen_layers"],
            name=f"{name}_encoder",
        )
    else:
        if captions is None or not len(captions):
            raise ValueError(
                f"The text modality {name!r} has no `weights`, so its vocabulary comes from "
                "the training captions, and there are none."
            )
        vocabulary = caption_vocabulary(captions, max_words=table["vocabulary_size"])
        text_tokenizer = make_tokenizer(vocabulary, length, name=f"{name}_tokenizer")
        encoder = BertEncoder(
            vocabulary_size=text_tokenizer.vocabulary_size(),
            num_layers=table["layers"],
            num_heads=table["heads"],
            hidden_size=table["hidden_size"],
            intermediate_size=2 * table["hidden_size"],
            max_position_embeddings=length,
            pooling=table["pooling"],
            frozen_layers=table["frozen_layers"],
            name=f"{name}_encoder",
        )
    if not table["trainable"]:
        encoder.trainable = False
    return {
        f"{name}_tokenizer": text_tokenizer,
        f"{name}_padding_mask": PaddingMask(name=f"{name}_padding_mask"),
        f"{name}_encoder": encoder,
        f"{name}_vector": keras.layers.Dense(vector_dim, activation="relu", name=f"{name}_vector"),
    }


def _audio_layers(name, table, vector_dim):
    from mmrep.encoders import VGGish

    kwargs = {"pooling": "mean", "pad_short": True, "name": f"{name}_encoder"}
    if table["weights"] is not None:
        encoder = VGGish.from_pretrained(table["weights"], **kwargs)
        # VGGish's own 128-d embedding, projected to the fusion's width.
        vector = keras.layers.Dense(vector_dim, activation="relu", name=f"{name}_vector")
    else:
        # Trained from scratch, VGGish's last layer is the projection to the fusion's width
        # (unless `embedding_dim` says otherwise).
        sizes = {
            "conv_filters": table["conv_filters"],
            "fc_units": table["fc_units"],
            "embedding_dim": table["embedding_dim"] or vector_dim,
        }
        kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items() if v})
        encoder = VGGish(**kwargs)
        if sizes["embedding_dim"] == vector_dim:
            vector = keras.layers.ReLU(name=f"{name}_vector")
        else:
            vector = keras.layers.Dense(vector_dim, activation="relu", name=f"{name}_vector")
    if not table["trainable"]:
        encoder.trainable = False
    return {
        f"{name}_length_floor": LengthFloor(name=f"{name}_length_floor"),
        f"{name}_encoder": encoder,
        f"{name}_vector": vector,
    }


def make_encoder_layers(modalities, vector_dim, captions=None):
    """Every modality's encoder layers, keyed by their names.

    Args:
        modalities: dict `{name: table}`, the checked config's `modalities`.
        vector_dim: int. Width of every modality's vector (the fusion's input).
        captions: dict `{text modality: array of str}` of training captions, for a text
            modality trained from scratch (its vocabulary), or `None`.

    Returns:
        dict `{layer name: layer}`; `encode` applies a modality's layers.

    Raises:
        ValueError: for a text modality trained from scratch with no captions; the
            encoders' own errors for weights that cannot be found or loaded.
    """
    from mmrep.encoders import VideoEncoder

    layers = {}
    image_tables = [t for t in modalities.values() if t["kind"] == "image"]
    for name, table in modalities.items():
        kind = table["kind"]
        if kind == "image":
            layers.update({layer.name: layer for layer in _image_layers(name, table, vector_dim)})
        elif kind == "text":
            layers.update(_text_layers(name, table, vector_dim, (captions or {}).get(name)))
        elif kind == "audio":
            layers.update(_audio_layers(name, table, vector_dim))
        else:
            image_table = image_tables[0] if image_tables else None
            frames = _frame_encoder(name, table, image_table, vector_dim)
            layers[f"{name}_encoder"] = VideoEncoder(
                frames, pooling=table["pooling"], name=f"{name}_encoder"
            )
    return layers


def model_inputs(modalities, *, serving):
    """The `keras.Input`s of every modality (and its padding), keyed by input name.

    Args:
        modalities: dict `{name: table}`, the checked config's `modalities`.
        serving: bool. Raw text (strings) for serving; token ids `<m>_ids` and the
            padding mask `<m>_mask` (int32 `[L]`) for training, since `tf.distribute`
            cannot split string tensors.

    Returns:
        dict `{input name: keras.Input}`: images uint8 `[S, S, 3]`; text; audio float32
        `[samples]` (any length) with `<m>_length` int32; video uint8 `[T, S, S, 3]` with
        `<m>_frame_mask` bool `[T]`.
    """
    inputs = {}
    for name, table in modalities.items():
        kind = table["kind"]
        if kind == "image":
            size = table["image_size"]
            inputs[name] = keras.Input((size, size, 3), dtype="uint8", name=name)
        elif kind == "text" and serving:
            inputs[name] = keras.Input((), dtype="string", name=name)
        elif kind == "text":
            length = table["sequence_length"]
            inputs[f"{name}_ids"] = keras.Input((length,), dtype="int32", name=f"{name}_ids")
            inputs[f"{name}_mask"] = keras.Input((length,), dtype="int32", name=f"{name}_mask")
        elif kind == "audio":
            inputs[name] = keras.Input((None,), dtype="float32", name=name)
            inputs[f"{name}_length"] = keras.Input((), dtype="int32", name=f"{name}_length")
        else:
            size, frames = table["frame_size"], table["num_frames"]
            inputs[name] = keras.Input((frames, size, size, 3), dtype="uint8", name=name)
            inputs[f"{name}_frame_mask"] = keras.Input(
                (frames,), dtype="bool", name=f"{name}_frame_mask"
            )
    return inputs


def tokenize(layers, name, strings):
    """`(ids, mask)` int32 `[B, L]` of a text modality's strings, in a graph or eagerly.

    Args:
        layers: dict `{layer name: layer}` holding `<name>_tokenizer` (and
            `<name>_padding_mask`).
        name: str. The text modality.
        strings: string tensor `[B]`.

    Returns:
        `(token ids, padding mask)`, each `[B, L]`; the mask is 1 on real tokens.
    """
    out = layers[f"{name}_tokenizer"](strings)
    if isinstance(out, dict):
        return out["token_ids"], out["padding_mask"]
    return out, layers[f"{name}_padding_mask"](out)


def modality_inputs(inputs, name, kind):
    """The entries of an input dict that one modality's encoder reads.

    Args:
        inputs: dict of inputs (`model_inputs`' names).
        name: str. The modality.
        kind: str. Its kind.

    Returns:
        dict: `{name}` plus `<name>_length` (audio) or `<name>_frame_mask` (video), or
        `<name>_ids` and `<name>_mask` (text in training).
    """
    keys = {
        "image": [name],
        "audio": [name, f"{name}_length"],
        "video": [name, f"{name}_frame_mask"],
        "text": [f"{name}_ids", f"{name}_mask"] if f"{name}_ids" in inputs else [name],
    }[kind]
    return {k: inputs[k] for k in keys}


def encode(layers, name, kind, inputs):
    """A modality's vector `[B, vector_dim]` from its inputs (`modality_inputs`).

    Args:
        layers: dict `{layer name: layer}` (from `make_encoder_layers`, or a reloaded
            model's layers).
        name: str. The modality.
        kind: str. Its kind (`"image"`, `"text"`, `"audio"` or `"video"`).
        inputs: dict of inputs holding the modality's entries.

    Returns:
        The vector.
    """
    if kind == "image":
        x = layers[f"{name}_encoder"](inputs[name])
        if f"{name}_flatten" in layers:
            x = layers[f"{name}_flatten"](x)
        return layers[f"{name}_vector"](x)
    if kind == "text":
        if f"{name}_ids" in inputs:
            ids, mask = inputs[f"{name}_ids"], inputs[f"{name}_mask"]
        else:
            ids, mask = tokenize(layers, name, inputs[name])
        pooled = layers[f"{name}_encoder"]({"token_ids": ids, "padding_mask": mask})
        return layers[f"{name}_vector"](pooled)
    if kind == "audio":
        lengths = layers[f"{name}_length_floor"](inputs[f"{name}_length"])
        pooled = layers[f"{name}_encoder"](inputs[name], lengths=lengths)
        return layers[f"{name}_vector"](pooled)
    return layers[f"{name}_encoder"](inputs[name], frame_mask=inputs[f"{name}_frame_mask"])
