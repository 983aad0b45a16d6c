"""BertEncoder: the BERT transformer encoder as one Keras layer, loadable from Hugging Face."""

import keras
from keras import ops

from mmrep.encoders.text.bert_layers import BertEmbedding, BertTransformerBlock, _initializer
from mmrep.utils.arguments import check_int, is_int
from mmrep.utils.value_checks import checked_whole

_POOLINGS = (None, "cls", "pooled", "mean")
INPUT_KEYS = ("token_ids", "padding_mask", "segment_ids")


@keras.saving.register_keras_serializable(package="mmrep")
class BertEncoder(keras.layers.Layer):
    """The BERT encoder: token ids in, contextual token vectors and a sentence vector out.

    Embeddings (word + position + token type, LayerNorm), `num_layers` post-LN transformer
    blocks whose attention ignores padding, and the pooler (a tanh dense layer on the
    first token, `[CLS]`). Written with `keras.ops`; weights load from a Hugging Face
    checkpoint (a local folder or an id) with `BertEncoder.from_pretrained(directory)` and
    give the numbers of `transformers`' `BertModel`.

    With `pooling=None` the output is the dict `{"sequence_output": [B, T, H],
    "pooled_output": [B, H]}`. With a pooling the output is one `[B, H]` sentence vector:
    `"cls"` the final hidden state of `[CLS]`, `"pooled"` the pooler output, `"mean"` the
    mean over real (unpadded) tokens as sentence-transformers models compute it;
    `normalize=True` scales it to unit L2 norm.

    Mixed precision: matmuls run in the compute dtype; attention softmax, LayerNorm
    statistics and the L2 normalisation in float32.

    Transfer: `encoder.trainable = False` freezes everything; `frozen_layers=N` freezes
    the embeddings and the lowest `N` transformer blocks, the usual partial fine-tuning.

    Args:
        vocabulary_size: int. Rows of the word embedding table (`vocab_size`).
        num_layers: int. Transformer blocks (`num_hidden_layers`).
        num_heads: int. Attention heads (`num_attention_heads`).
        hidden_size: int. Width of the token vectors (`hidden_size`).
        intermediate_size: int. Width of the feed-forward layers (`intermediate_size`).
        max_position_embeddings: int. Longest sequence (`max_position_embeddings`).
            Defaults to `512`.
        type_vocabulary_size: int. Segment ids (`type_vocab_size`). Defaults to `2`.
        activation: str. Feed-forward activation by Hugging Face `hidden_act` name;
            `"gelu"` is the exact erf GELU. Defaults to `"gelu"`.
        dropout: float. Hidden dropout (`hidden_dropout_prob`). Defaults to `0.1`.
        attention_dropout: float. (`attention_probs_dropout_prob`). Defaults to `0.1`.
        layer_norm_epsilon: float. (`layer_norm_eps`). Defaults to `1e-12`.
        initializer_range: float. Defaults to `0.02`.
        pooling: `None`, `"cls"`, `"pooled"` or `"mean"`. Defaults to `None`.
        normalize: bool. L2-normalise the pooled vector (needs a pooling).
            Defaults to `False`.
        frozen_layers: int. Freeze the embeddings and this many lower blocks (`0`: none).
            Defaults to `0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: dict with `"token_ids"` and `"padding_mask"` (`[B, T]`, non-zero for real
            tokens), and optionally `"segment_ids"` (`[B, T]`, zeros when absent): what
            `mmrep.encoders.TextTokenizer` and `WordPieceTokenizer` return. Ids may be
            floating if they hold whole numbers (3.7 is an error, not id 3); token ids
            must be in `[0, vocabulary_size)` and segment ids in
            `[0, type_vocabulary_size)`: eagerly a `ValueError` (token ids:
            `InvalidArgumentError`), in a graph an in-graph assertion (compiled away
            under XLA).
        training: bool. Whether dropout is active.

    Returns:
        The dict `{"sequence_output", "pooled_output"}`, or `[B, H]` with a pooling.

    Example:

    >>> encoder = BertEncoder(
    ...     vocabulary_size=100, num_layers=2, num_heads=2, hidden_size=8,
    ...     intermediate_size=16, pooling="mean", normalize=True)
    >>> ids = np.array([[2, 5, 7, 3, 0]])
    >>> encoder({"token_ids": ids, "padding_mask": ids > 0}).shape
    TensorShape([1, 8])

    Reference:
        Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
        Understanding", NAACL 2019; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019
        (mean pooling).
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_size,
        intermediate_size,
        max_position_embeddings=512,
        type_vocabulary_size=2,
        activation="gelu",
        dropout=0.1,
        attention_dropout=0.1,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        pooling=None,
        normalize=False,
        frozen_layers=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in _POOLINGS:
            raise ValueError(
                f"Expected `pooling` to be one of {list(_POOLINGS)}. Received: pooling={pooling!r}"
            )
        if normalize and pooling is None:
            raise ValueError(
                "Expected a `pooling` with normalize=True (it normalises the sentence vector). "
                "Received: pooling=None"
            )
        self.num_layers = check_int("num_layers", num_layers, minimum=0)
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.pooling = pooling
        self.normalize = normalize

        # === Layers ===
        self.embedding = BertEmbedding(
            vocabulary_size=vocabulary_size,
            hidden_size=hidden_size,
            max_position_embeddings=max_position_embeddings,
            type_vocabulary_size=type_vocabulary_size,
            layer_norm_epsilon=layer_norm_epsilon,
            dropout=dropout,
            initializer_range=initializer_range,
            name="embedding",
            dtype=self.dtype_policy,
        )
        # The embedding checked its four sizes and holds them as Python ints.
        self.vocabulary_size = self.embedding.vocabulary_size
        self.hidden_size = self.embedding.hidden_size
        self.max_position_embeddings = self.embedding.max_position_embeddings
        self.type_vocabulary_size = self.embedding.type_vocabulary_size
        self.blocks = [
            BertTransformerBlock(
                hidden_size=self.hidden_size,
                num_heads=num_heads,
                intermediate_size=intermediate_size,
                activation=activation,
                dropout=dropout,
                attention_dropout=attention_dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                initializer_range=initializer_range,
                name=f"transformer_layer_{i}",
                dtype=self.dtype_policy,
            )
            for i in range(self.num_layers)
        ]
        self.pooler = keras.layers.Dense(
            self.hidden_size,
            activation="tanh",
            kernel_initializer=_initializer(initializer_range),
            name="pooler",
            dtype=self.dtype_policy,
        )
        # Unused by "cls" and "mean" pooling; kept so that checkpoints load either way,
        # but not trained (it would receive no gradient).
        self.pooler.trainable = pooling in (None, "pooled")
        self.frozen_layers = 0
        self.freeze_lower_layers(frozen_layers)

    def freeze_lower_layers(self, num_layers):
        """Freezes the embeddings and the lowest `num_layers` blocks; unfreezes the rest.

        `0` makes every part trainable again (the layer's own `trainable` flag still
        applies on top).
        """
        if not is_int(num_layers, 0, self.num_layers):
            raise ValueError(
                f"Expected `frozen_layers` to be an int in [0, {self.num_layers}] (the "
                f"number of transformer layers). Received: {num_layers!r}"
            )
        num_layers = int(num_layers)
        self.frozen_layers = num_layers
        self.embedding.trainable = num_layers == 0
        for i, block in enumerate(self.blocks):
            block.trainable = i >= num_layers

    def build(self, inputs_shape):
        shape = self._token_shape(inputs_shape)
        self.embedding.build(shape)
        for block in self.blocks:
            block.build((*shape, self.hidden_size))
        self.pooler.build((shape[0], self.hidden_size))

    @staticmethod
    def _token_shape(inputs_shape):
        if not isinstance(inputs_shape, dict) or "token_ids" not in inputs_shape:
            raise ValueError(
                "Expected inputs to be a dict with keys 'token_ids', 'padding_mask' (and "
                f"optionally 'segment_ids'). Received: {inputs_shape!r}"
            )
        return tuple(inputs_shape["token_ids"])

    def call(self, inputs, training=None):
        if not isinstance(inputs, dict):
            raise ValueError(
                "Expected inputs to be a dict with keys 'token_ids', 'padding_mask' and "
                f"optionally 'segment_ids'. Received: {type(inputs).__name__}"
            )
        unknown = sorted(set(inputs) - set(INPUT_KEYS))
        missing = [k for k in ("token_ids", "padding_mask") if k not in inputs]
        if unknown or missing:
            raise ValueError(
                f"Expected input keys {list(INPUT_KEYS)} ('segment_ids' optional). "
                f"Missing: {missing}; unknown: {unknown}"
            )
        token_ids = ops.cast(checked_whole(inputs["token_ids"], self.name, "token ids"), "int32")
        padding_mask = ops.cast(inputs["padding_mask"], "bool")
        segment_ids = inputs.get("segment_ids")
        if segment_ids is None:
            segment_ids = ops.zeros_like(token_ids)
        else:
            segment_ids = ops.cast(checked_whole(segment_ids, self.name, "segment ids"), "int32")

        x = self.embedding(token_ids, segment_ids, training=training)
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask, training=training)
        if self.pooling is None:
            return {"sequence_output": x, "pooled_output": self.pooler(x[:, 0])}
        if self.pooling == "cls":
            sentence = x[:, 0]
        elif self.pooling == "pooled":
            sentence = self.pooler(x[:, 0])
        else:
            weights = ops.cast(padding_mask, "float32")[..., None]
            total = ops.sum(ops.cast(x, "float32") * weights, axis=1)
            # A row with no real token averages nothing: zeros, not NaN.
            sentence = total / ops.maximum(ops.sum(weights, axis=1), 1.0)
        if self.normalize:
            sentence = ops.cast(sentence, "float32")
            norm = ops.sqrt(ops.maximum(ops.sum(ops.square(sentence), -1, keepdims=True), 1e-24))
            sentence = sentence / norm
        return ops.cast(sentence, self.compute_dtype)

    def compute_output_shape(self, inputs_shape):
        shape = self._token_shape(inputs_shape)
        pooled = (shape[0], self.hidden_size)
        if self.pooling is None:
            return {"sequence_output": (*shape, self.hidden_size), "pooled_output": pooled}
        return pooled

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocabulary_size": self.type_vocabulary_size,
            "activation": self.activation,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "frozen_layers": self.frozen_layers,
        }

    @classmethod
    def from_pretrained(cls, directory, *, allow_pickle=False, strict=True, **kwargs):
        """Builds the encoder from a Hugging Face BERT checkpoint: a folder or an id.

        Reads `config.json` and `model.safetensors` (or a sharded
        `model.safetensors.index.json`); see `mmrep.encoders.text.bert_checkpoint` for the
        accepted layouts and the errors. A Hugging Face id is resolved in the Hugging Face
        cache, downloading into it when online; see
        `mmrep.encoders.text.hf_hub.resolve_checkpoint`.

        Args:
            directory: str or path. A local checkpoint folder or a Hugging Face id (such as
                `"sentence-transformers/all-MiniLM-L6-v2"`, optionally `"<id>@<revision>"`).
            allow_pickle: bool. Also accept `pytorch_model.bin`, a pickle that can run code
                when loaded (needs PyTorch); for an id, also download it. Defaults to
                `False`.
            strict: bool. Whether missing or unexpected encoder weights are errors. With
                `False` they are logged and missing ones keep their random initial values.
                Defaults to `True`.
            **kwargs: Constructor arguments that are not in the checkpoint (`pooling`,
                `normalize`, `frozen_layers`, `name`, `dtype`) or that override it
                (`dropout`).

        Returns:
            A built `BertEncoder` holding the checkpoint's weights.

        Raises:
            FileNotFoundError: neither a folder nor a Hugging Face id that is cached or
                downloadable; the message names the cache searched and how to fill it.
            OSError: a download from the Hub that started and failed.
            CheckpointError: see `mmrep.encoders.text.bert_checkpoint`.
        """
        from mmrep.encoders.text.bert_checkpoint import load_bert_checkpoint
        from mmrep.encoders.text.hf_hub import resolve_checkpoint

        directory = resolve_checkpoint(directory, allow_pickle=allow_pickle)
        return load_bert_checkpoint(
            cls, directory, allow_pickle=allow_pickle, strict=strict, **kwargs
        )
