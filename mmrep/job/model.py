"""A run's model: one encoder per modality, a fusion, an optional head, the task's outputs.

`build_run_model(config, ...)` makes the layers once and wires three kinds of functional
models on them, all sharing weights:

- `training`: token ids (not strings: `tf.distribute` cannot split string tensors),
  the other modalities' inputs with their padding, and the presence mask in;
  `{"embedding", "probabilities", ...}` out, wrapped in a `JobTrainer` that adds the
  fusion's own objective and, for retrieval, a CLIP loss for every pair of modalities;
- `serving`: the raw-input model (uint8 images, strings tokenised in the graph,
  waveforms of any length with `<m>_length`, uint8 videos with `<m>_frame_mask`,
  `presence`) giving `{"embedding": [B, D]}` and, for classification,
  `"probabilities": [B, classes]`;
- `embeddings`: one model per modality, the serving model with only that modality
  present, so every modality embeds into the fused space (`embedding_model`).

In the training and serving models a modality's inputs pass a `PresenceGate`
(`<m>_presence_gate`) before its encoder: in the rows where the presence is 0 they are
zeros, so a missing modality's values (NaN, int16-scale audio, garbage lengths or ids)
are never read, nor checked, and the presence is checked (0 or 1, one row per example).

The graph is a function of the layers alone (`wire`), looked up by name, so a reloaded
`model.keras` gives back the per-modality models (`RunModel.from_serving`).
"""

import keras

from mmrep.job.encoders import encode, make_encoder_layers, modality_inputs, model_inputs
from mmrep.job.fusion_stage import (
    fusion_of,
    head_layers,
    make_fusion_layers,
    pairs_of,
    wire_fusion,
    wire_head,
)
from mmrep.job.graph_layers import BatchConstant, PresenceGate


class RunModel:
    """What `build_run_model` returns: the training, serving and embedding models.

    Attributes:
        training: `JobTrainer` (a `keras.Model`) over token ids, uncompiled.
        serving: functional `keras.Model` over raw inputs.
        embeddings: dict `{modality: keras.Model}`.
        config: dict. The checked run config.
        classes: list or `None`. The class names, in the classifier's order.
        layers: dict `{name: layer}` of every layer of the graph.
    """

    def __init__(self, training, serving, embeddings, config, classes, layers):
        self.training = training
        self.serving = serving
        self.embeddings = embeddings
        self.config = config
        self.classes = classes
        self.layers = layers

    @property
    def modalities(self):
        """dict `{name: kind}` in presence order."""
        return kinds_of(self.config)

    @classmethod
    def from_serving(cls, serving, config, classes=None):
        """The run model around a (reloaded) serving model: its embedding models rebuilt.

        Args:
            serving: the serving `keras.Model` (e.g. from `model.keras`).
            config: dict. The run's checked config.
            classes: list or `None`. The class names.

        Returns:
            A `RunModel` with `training=None`.

        Raises:
            ValueError: when the model's layers are not those of `config`.
        """
        layers = {layer.name: layer for layer in serving.layers}
        fusion = config["fusion"]["kind"]
        missing = [n for n in _needed_layers(config) if n not in layers]
        if missing or fusion_of(layers) != fusion:
            raise ValueError(
                f"Expected a run model of fusion {fusion!r} with the layers "
                f"{sorted(_needed_layers(config))}. Received a model with layers "
                f"{sorted(layers)}"
            )
        embeddings = embedding_models(layers, config, serving.name)
        return cls(None, serving, embeddings, config, classes, layers)


def kinds_of(config):
    """`{modality: kind}` of a config, in presence order."""
    return {name: table["kind"] for name, table in config["modalities"].items()}


def has_classifier(config):
    return config["task"] in ("classification", "both")


def has_pair_loss(config):
    """Coordinated embeddings are always trained with their pair losses."""
    return config["fusion"]["kind"] == "coordinated"


def _needed_layers(config):
    names = {"embedding"} | {f"{m}_encoder" for m in config["modalities"]}
    if has_classifier(config):
        names.add("classifier")
    return names


def _head(config):
    head = config["head"]["kind"]
    return None if head == "none" else head


def wire(layers, config, vectors, presence):
    """The graph from the per-modality vectors and the presence mask to the outputs.

    Args:
        layers: dict `{name: layer}` (from `build_run_model` or a reloaded model).
        config: dict. The checked run config.
        vectors: dict `{modality: [B, vector_dim]}`.
        presence: `[B, M]`, columns in the config's modality order.

    Returns:
        dict with `"embedding"` (float32 `[B, D]`), `"probabilities"` (float32
        `[B, classes]`, with a classifier) and, for `"coordinated"`, `"coordinated"`:
        the per-modality dict of `CoordinatedEmbedding` (with `"logit_scale"`).
    """
    modalities = list(config["modalities"])
    fusion = config["fusion"]["kind"]
    fused, extra = wire_fusion(layers, fusion, modalities, vectors, presence)
    embedding, features = wire_head(layers, _head(config), modalities, fused, vectors, presence)
    outputs = {"embedding": layers["embedding"](embedding)}
    if "classifier" in layers:
        outputs["probabilities"] = layers["classifier"](features)
    if "coordinated" in extra:
        outputs["coordinated"] = extra["coordinated"]
    return outputs


def _make_layers(config, num_classes, captions):
    fusion, vector_dim = config["fusion"], config["fusion"]["vector_dim"]
    modalities = list(config["modalities"])
    layers = make_encoder_layers(config["modalities"], vector_dim, captions)
    for column, m in enumerate(modalities):
        layers[f"{m}_presence_gate"] = PresenceGate(column, name=f"{m}_presence_gate")
    layers.update(
        make_fusion_layers(fusion["kind"], modalities, vector_dim, fusion["dim"], config["seed"])
    )
    layers.update(head_layers(_head(config), modalities, fusion["dim"], config["seed"]))
    if has_classifier(config):
        layers["classifier"] = keras.layers.Dense(
            num_classes, activation="softmax", dtype="float32", name="classifier"
        )
    # The embedding leaves the model in float32 under any dtype policy.
    layers["embedding"] = keras.layers.Activation("linear", dtype="float32", name="embedding")
    return layers


def _vectors(layers, config, inputs):
    return {
        name: encode(layers, name, table["kind"], inputs)
        for name, table in config["modalities"].items()
    }


def _gated(layers, config, inputs, presence):
    """`inputs` with each modality's entries zero in the rows where it is absent.

    Every entry an encoder reads (`modality_inputs`: a waveform and its lengths, frames
    and their mask, strings or ids and their mask) goes through the modality's
    `PresenceGate`, so no encoder reads, or asserts on, a missing modality's values.
    """
    gated = dict(inputs)
    for name, table in config["modalities"].items():
        gate = layers[f"{name}_presence_gate"]
        # One tensor per call: the gate is shared by the serving and training graphs,
        # whose text entries differ (strings, or ids and mask), and a Keras layer called
        # again on another structure loses track of its outputs.
        for key in modality_inputs(inputs, name, table["kind"]):
            gated[key] = gate(inputs[key], presence)
    return gated


def embedding_model(layers, config, modality, name="run"):
    """The model with only `modality` present: absent vectors are constants, never read.

    Args:
        layers: dict `{name: layer}`.
        config: dict. The checked run config.
        modality: str. One of the config's modalities.
        name: str. Prefix of the model's name. Defaults to `"run"`.

    Returns:
        A `keras.Model` over that modality's serving inputs (with its `<m>_length` or
        `<m>_frame_mask`) giving the fused embedding `[B, D]` float32.
    """
    tables = config["modalities"]
    if modality not in tables:
        raise ValueError(f"Expected a modality among {list(tables)}. Received: {modality!r}")
    kind = tables[modality]["kind"]
    inputs = modality_inputs(
        model_inputs({modality: tables[modality]}, serving=True), modality, kind
    )
    reference = inputs[modality]
    vectors = {modality: encode(layers, modality, kind, inputs)}
    width = config["fusion"]["vector_dim"]
    for m in tables:
        if m != modality:
            vectors[m] = BatchConstant([0.0] * width, name=f"absent_{m}")(reference)
    flags = [1.0 if m == modality else 0.0 for m in tables]
    presence = BatchConstant(flags, name="presence")(reference)
    outputs = wire(layers, config, vectors, presence)
    feed = inputs if len(inputs) > 1 else reference
    return keras.Model(feed, outputs["embedding"], name=f"{name}_{modality}_embedding")


def embedding_models(layers, config, name="run"):
    """`{modality: embedding_model(...)}` for every modality of the config."""
    return {m: embedding_model(layers, config, m, name) for m in config["modalities"]}


def vector_models(layers, config):
    """The evaluation's two halves over the run's layers (shared weights).

    Args:
        layers: dict `{name: layer}`.
        config: dict. The checked run config.

    Returns:
        `(encoders, fusion)`: `encoders` maps the serving inputs (less `presence`) to
        `{modality: [B, vector_dim]}`; `fusion` maps `{"<modality>_vector": vector}` and
        `presence` to the serving outputs. `fusion(encoders(x), presence)` is the serving model.
    """
    raw = model_inputs(config["modalities"], serving=True)
    encoders = keras.Model(raw, _vectors(layers, config, raw), name="encoders")
    width = config["fusion"]["vector_dim"]
    inputs = {
        f"{m}_vector": keras.Input((width,), name=f"{m}_vector") for m in config["modalities"]
    }
    presence = keras.Input((len(inputs),), dtype="float32", name="presence")
    vectors = {m: inputs[f"{m}_vector"] for m in config["modalities"]}
    outputs = wire(layers, config, vectors, presence)
    outputs.pop("coordinated", None)
    fusion = keras.Model({**inputs, "presence": presence}, outputs, name="fusion_outputs")
    return encoders, fusion


def build_run_model(config, *, classes=None, captions=None):
    """Builds a run's training, serving and per-modality embedding models.

    Every fusion gives a fused embedding; with a classifier (`task` "classification" or
    "both") a softmax over `classes` reads it. `"concat"`: `ConcatFusion` (projections
    with LayerNorm, presence flags) then a dense layer; `"bilinear"`: compact bilinear
    pooling (`BilinearFusion(mode="compact")`) of every pair of modalities, absent ones
    replaced by a learned vector, concatenated, then a dense layer; `"autoencoder"`: the
    code of a `MultimodalAutoencoder` (its reconstruction loss is added in training);
    `"coordinated"`: a `CoordinatedEmbedding` per modality, fused by the mean over present
    modalities, with a CLIP loss for every pair of modalities (added by `JobTrainer`, for
    every task). Head `"vae"`: a `VAEHead` on the fused embedding (KL added in
    training; the classifier reads the sampled latent, the embedding is the latent mean:
    the variational information bottleneck of Alemi et al., ICLR 2017); `"fisher"`: a
    learned `FisherVector` over the set of per-modality descriptors masked by the
    presence, concatenated to the fused embedding.

    Args:
        config: dict. A checked run config (`mmrep.job.config`).
        classes: list or `None`. The class names (required with a classifier).
        captions: dict `{text modality: array of str}` of training captions, for text
            encoders trained from scratch (their vocabulary), or `None`.

    Returns:
        A `RunModel`.

    Raises:
        ValueError: for missing classes, or encoders that cannot be built.
    """
    from mmrep.job.trainer import JobTrainer

    if has_classifier(config) and (classes is None or len(classes) < 2):
        raise ValueError(
            f"task = {config['task']!r} needs two or more classes. Received: {classes}"
        )
    keras.utils.set_random_seed(config["seed"])
    layers = _make_layers(config, len(classes) if classes is not None else 0, captions)
    name = config["name"]
    presence = keras.Input((len(config["modalities"]),), dtype="float32", name="presence")

    raw = {**model_inputs(config["modalities"], serving=True), "presence": presence}
    served = wire(
        layers, config, _vectors(layers, config, _gated(layers, config, raw, presence)), presence
    )
    served.pop("coordinated", None)
    serving = keras.Model(raw, served, name=name)

    ids = {**model_inputs(config["modalities"], serving=False), "presence": presence}
    trained = wire(
        layers, config, _vectors(layers, config, _gated(layers, config, ids, presence)), presence
    )
    outputs = {k: v for k, v in trained.items() if k != "coordinated"}
    pairs = ()
    if has_pair_loss(config):
        outputs.update({f"coordinated_{k}": v for k, v in trained["coordinated"].items()})
        outputs["logit_scale"] = outputs.pop("coordinated_logit_scale")
        pairs = pairs_of(list(config["modalities"]))
    network = keras.Model(ids, outputs, name=f"{name}_training_network")
    training = JobTrainer(network, contrastive_pairs=pairs, name=f"{name}_trainer")
    embeddings = embedding_models(layers, config, name)
    return RunModel(training, serving, embeddings, config, classes, layers)
