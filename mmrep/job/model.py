"""The main job's model: four encoders, a fusion, an optional head, a digit classifier.

`build_job_model` makes the layers once and wires three kinds of functional models on
them, all sharing weights:

- `training`: token ids (not strings: `tf.distribute` cannot split string tensors) and
  the presence mask in, `{"probabilities", "embedding", ...}` out, wrapped in a
  `JobTrainer` that adds the fusion's own objective;
- `serving`: the raw-input model (`image` uint8 `[32, 32, 3]`, `text` string `[]`
  tokenised in the graph, `audio` float32 `[16000]`, `video` uint8 `[16, 32, 32, 3]`,
  `presence` float32 `[4]`) giving `{"embedding": [B, D], "probabilities": [B, 10]}`;
- `embeddings`: one model per modality (and `"text_ids"`), the serving model with only
  that modality present, so every modality embeds into the fused space.

The graph is a function of the layers alone (`wire`), looked up by name, so a reloaded
`model.keras` gives back the per-modality models (`embedding_models`).
"""

import keras

from mmrep.data.mmdigits import MODALITIES
from mmrep.job.encoders import EncoderSizes, PaddingMask, encode, make_encoders, make_tokenizer
from mmrep.job.fusion_stage import (
    fusion_of,
    head_layers,
    make_fusion_layers,
    wire_fusion,
    wire_head,
)
from mmrep.job.graph_layers import BatchConstant
from mmrep.job.names import DEFAULT_FUSION, FUSIONS, HEADS, check_choice, default_run_name

NUM_CLASSES = 10
# Input shapes of mmdigits at the job's settings (32-pixel images and frames, 1 s audio).
INPUT_SHAPES = {
    "image": ((32, 32, 3), "uint8"),
    "text": ((), "string"),
    "audio": ((16000,), "float32"),
    "video": ((16, 32, 32, 3), "uint8"),
}


class JobModel:
    """What `build_job_model` returns: the training, serving and embedding models.

    Attributes:
        training: `JobTrainer` (a `keras.Model`) over token ids, uncompiled.
        serving: functional `keras.Model` over raw inputs.
        embeddings: dict `{"image", "text", "text_ids", "audio", "video": keras.Model}`.
        fusion: str. The fusion name.
        head: str or `None`. The head name.
        layers: dict `{name: layer}` of every layer of the graph.
    """

    def __init__(self, training, serving, embeddings, fusion, head, layers):
        self.training = training
        self.serving = serving
        self.embeddings = embeddings
        self.fusion = fusion
        self.head = head
        self.layers = layers


def _inputs(text_as_ids, text_length):
    inputs = {}
    for m in MODALITIES:
        shape, dtype = INPUT_SHAPES[m]
        if m == "text" and text_as_ids:
            inputs["text_ids"] = keras.Input((text_length,), dtype="int32", name="text_ids")
        else:
            inputs[m] = keras.Input(shape, dtype=dtype, name=m)
    return inputs


def wire(layers, fusion, head, vectors, presence):
    """The graph from the per-modality vectors and the presence mask to the outputs.

    Args:
        layers: dict `{name: layer}` (from `build_job_model` or a reloaded model).
        fusion: str. One of `FUSIONS`.
        head: str or `None`. One of `HEADS`.
        vectors: dict `{modality: [B, vector_dim]}`.
        presence: `[B, 4]`, columns in `MODALITIES` order.

    Returns:
        dict with `"embedding"` (float32 `[B, D]`), `"probabilities"` (float32
        `[B, 10]`) and, for `"coordinated"`, `"coordinated"`: the per-modality dict of
        `CoordinatedEmbedding` (with `"logit_scale"`).
    """
    fused, extra = wire_fusion(layers, fusion, vectors, presence)
    embedding, features = wire_head(layers, head, fused, vectors, presence)
    outputs = {
        "embedding": layers["embedding"](embedding),
        "probabilities": layers["classifier"](features),
    }
    if "coordinated" in extra:
        outputs["coordinated"] = extra["coordinated"]
    return outputs


def _make_layers(fusion, head, vocabulary, sizes, seed):
    layers = {
        "text_tokenizer": make_tokenizer(vocabulary, sizes.text_length),
        "padding_mask": PaddingMask(name="padding_mask"),
    }
    vocabulary_size = layers["text_tokenizer"].vocabulary_size()
    layers.update(make_encoders(vocabulary_size, sizes))
    layers.update(make_fusion_layers(fusion, sizes.vector_dim, seed))
    layers.update(head_layers(head, seed))
    layers["classifier"] = keras.layers.Dense(
        NUM_CLASSES, activation="softmax", dtype="float32", name="classifier"
    )
    # The embedding leaves the model in float32 under any dtype policy.
    layers["embedding"] = keras.layers.Activation("linear", dtype="float32", name="embedding")
    return layers


def _single_modality_model(layers, fusion, head, modality, name):
    """The model with only `modality` present: absent vectors are constants (never read)."""
    if modality == "text_ids":
        length = layers["text_tokenizer"].get_config()["output_sequence_length"]
        value = keras.Input((length,), dtype="int32", name="text_ids")
        ids, source = value, "text"
    else:
        shape, dtype = INPUT_SHAPES[modality]
        value = keras.Input(shape, dtype=dtype, name=modality)
        ids = layers["text_tokenizer"](value) if modality == "text" else value
        source = modality
    vectors = {source: encode(layers, source, ids)}
    width = int(vectors[source].shape[-1])
    for m in MODALITIES:
        if m != source:
            vectors[m] = BatchConstant([0.0] * width, name=f"absent_{m}")(value)
    flags = [1.0 if m == source else 0.0 for m in MODALITIES]
    presence = BatchConstant(flags, name="presence")(value)
    outputs = wire(layers, fusion, head, vectors, presence)
    return keras.Model(value, outputs["embedding"], name=f"{name}_{modality}_embedding")


def embedding_models(layers, fusion, head, name):
    """The per-modality embedding models over the given layers.

    Args:
        layers: dict `{name: layer}`.
        fusion: str. One of `FUSIONS`.
        head: str or `None`. One of `HEADS`.
        name: str. Prefix of the model names.

    Returns:
        dict `{"image", "text", "text_ids", "audio", "video": keras.Model}`, each with
        one input named like its key, giving `[B, D]` float32.
    """
    keys = ("image", "text", "text_ids", "audio", "video")
    return {k: _single_modality_model(layers, fusion, head, k, name) for k in keys}


def layers_of(model):
    """`{name: layer}` of a serving model (e.g. reloaded from `model.keras`), with its
    fusion and head names, read from its layers.

    Args:
        model: the serving `keras.Model` of `build_job_model` (or a reloaded copy).

    Returns:
        `(layers, fusion, head)`.

    Raises:
        ValueError: if the model is not a main-job model.
    """
    layers = {layer.name: layer for layer in model.layers}
    fusion = fusion_of(layers)
    needed = {"text_tokenizer", "padding_mask", "classifier", "embedding"}
    if fusion is None or not needed <= set(layers):
        raise ValueError(
            f"Expected a main-job serving model (layers {sorted(needed)} and a fusion's "
            f"layers). Received a model with layers {sorted(layers)}"
        )
    head = "vae" if "vae" in layers else "fisher" if "fisher" in layers else None
    return layers, fusion, head


def build_job_model(fusion=DEFAULT_FUSION, head=None, *, vocabulary, seed=0, sizes=None):
    """Builds the main job's training, serving and per-modality embedding models.

    Every fusion classifies the digit with a 10-way softmax on its fused embedding.
    `"concat"`: `ConcatFusion` (projections with LayerNorm, presence flags) then a dense
    layer; `"bilinear"`: compact bilinear pooling (`BilinearFusion(mode="compact")`) of
    every pair of modalities, absent ones replaced by a learned vector, concatenated,
    then a dense layer; `"autoencoder"`: the code of a `MultimodalAutoencoder` (its
    reconstruction loss is added in training); `"coordinated"`: a
    `CoordinatedEmbedding` per modality, fused by the mean over present modalities
    (`JobTrainer` adds a CLIP loss for every pair of modalities). Head `"vae"`: a
    `VAEHead` on the fused embedding (KL added in training; the classifier reads the
    sampled latent, the embedding is the latent mean: the variational information
    bottleneck of Alemi et al., ICLR 2017); `"fisher"`: a learned `FisherVector` over the
    set of per-modality descriptors `[B, 4, d]` masked by the presence, concatenated
    to the fused embedding.

    Args:
        fusion: str. One of `FUSIONS`. Defaults to `DEFAULT_FUSION`.
        head: str or `None`. One of `HEADS`. Defaults to `None`.
        vocabulary: list of str. The caption words for the tokenizer (see
            `mmrep.job.encoders.caption_vocabulary`).
        seed: int. Seeds the initial weights and the layers' random draws.
            Defaults to `0`.
        sizes: `EncoderSizes` or `None` for the job's defaults.

    Returns:
        A `JobModel`.

    Raises:
        ValueError: for an unknown fusion or head, or a bad vocabulary.
    """
    from mmrep.job.trainer import JobTrainer

    check_choice("fusion", fusion, FUSIONS)
    check_choice("head", head, HEADS, allow_none=True)
    sizes = sizes or EncoderSizes()
    keras.utils.set_random_seed(seed)
    layers = _make_layers(fusion, head, vocabulary, sizes, seed)
    name = default_run_name(fusion, head)

    def outputs_for(inputs, ids):
        vectors = {m: encode(layers, m, ids if m == "text" else inputs[m]) for m in MODALITIES}
        return wire(layers, fusion, head, vectors, inputs["presence"])

    presence = keras.Input((len(MODALITIES),), dtype="float32", name="presence")
    raw = {**_inputs(False, sizes.text_length), "presence": presence}
    served = outputs_for(raw, layers["text_tokenizer"](raw["text"]))
    serving = keras.Model(
        raw, {"embedding": served["embedding"], "probabilities": served["probabilities"]}, name=name
    )

    ids = {**_inputs(True, sizes.text_length), "presence": presence}
    trained = outputs_for(ids, ids["text_ids"])
    outputs = {"embedding": trained["embedding"], "probabilities": trained["probabilities"]}
    pairs = ()
    if "coordinated" in trained:
        outputs.update({f"coordinated_{k}": v for k, v in trained["coordinated"].items()})
        outputs["logit_scale"] = outputs.pop("coordinated_logit_scale")
        pairs = [(a, b) for i, a in enumerate(MODALITIES) for b in MODALITIES[i + 1 :]]
    network = keras.Model(ids, outputs, name=f"{name}_training_network")
    training = JobTrainer(network, contrastive_pairs=pairs, name=f"{name}_trainer")
    embeddings = embedding_models(layers, fusion, head, name)
    return JobModel(training, serving, embeddings, fusion, head, layers)
