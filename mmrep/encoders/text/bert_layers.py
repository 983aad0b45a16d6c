"""The building blocks of BERT: the embedding sum and the post-LN transformer block."""

import math

import keras
from keras import ops

from mmrep.utils.arguments import check_int

# Hugging Face `hidden_act` names and what they compute.
ACTIVATIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=False),
    "gelu_new": lambda x: ops.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: ops.gelu(x, approximate=True),
    "gelu_fast": lambda x: ops.gelu(x, approximate=True),
    "relu": ops.relu,
    "silu": ops.silu,
    "swish": ops.silu,
    "tanh": ops.tanh,
}


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Expected `activation` to be one of {sorted(ACTIVATIONS)} (Hugging Face "
            f"`hidden_act` names). Received: activation={activation!r}"
        )


def _initializer(stddev):
    return keras.initializers.TruncatedNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="mmrep")
class BertEmbedding(keras.layers.Layer):
    """BERT's input embedding: word + position + token type, then LayerNorm and dropout.

    Positions are `0 .. T-1` (absolute, learned). A sequence longer than
    `max_position_embeddings` is an error, not a silent wrap or clip.

    Args:
        vocabulary_size: int. Rows of the word embedding table.
        hidden_size: int. Width of every embedding.
        max_position_embeddings: int. The longest sequence the position table covers.
        type_vocabulary_size: int. Number of segment (token type) ids. Defaults to `2`.
        layer_norm_epsilon: float. Epsilon of the LayerNorm. Defaults to `1e-12`, BERT's.
        dropout: float. Dropout rate after the LayerNorm. Defaults to `0.1`.
        initializer_range: float. Standard deviation of the truncated-normal initialiser.
            Defaults to `0.02`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        token_ids: int tensor `[B, T]`.
        segment_ids: int tensor `[B, T]`, each in `[0, type_vocabulary_size)` (checked:
            eagerly a `ValueError`, in a graph an assertion).
        training: bool. Whether dropout is active.

    Returns:
        `[B, T, hidden_size]`.

    Reference:
        Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
        Understanding", NAACL 2019.
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_size,
        max_position_embeddings,
        type_vocabulary_size=2,
        layer_norm_epsilon=1e-12,
        dropout=0.1,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        vocabulary_size = check_int("vocabulary_size", vocabulary_size, minimum=1)
        hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        max_position_embeddings = check_int(
            "max_position_embeddings", max_position_embeddings, minimum=1
        )
        type_vocabulary_size = check_int("type_vocabulary_size", type_vocabulary_size, minimum=1)
        self.vocabulary_size = vocabulary_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocabulary_size = type_vocabulary_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.initializer_range = initializer_range

        init = _initializer(initializer_range)
        self.word_embeddings = keras.layers.Embedding(
            vocabulary_size,
            hidden_size,
            embeddings_initializer=init,
            name="word_embeddings",
            dtype=self.dtype_policy,
        )
        self.position_embeddings = keras.layers.Embedding(
            max_position_embeddings,
            hidden_size,
            embeddings_initializer=init,
            name="position_embeddings",
            dtype=self.dtype_policy,
        )
        self.token_type_embeddings = keras.layers.Embedding(
            type_vocabulary_size,
            hidden_size,
            embeddings_initializer=init,
            name="token_type_embeddings",
            dtype=self.dtype_policy,
        )
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="layer_norm", dtype=self.dtype_policy
        )
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, token_ids_shape, segment_ids_shape=None):
        self.word_embeddings.build(token_ids_shape)
        self.position_embeddings.build((None,))
        self.token_type_embeddings.build(token_ids_shape)
        self.layer_norm.build((*token_ids_shape, self.hidden_size))

    def call(self, token_ids, segment_ids, training=None):
        length = token_ids.shape[1]
        if length is not None and length > self.max_position_embeddings:
            raise ValueError(
                f"Expected sequences of at most max_position_embeddings="
                f"{self.max_position_embeddings} tokens. Received: length {length}"
            )
        token_ids = self._checked(token_ids, static_length=length)
        segment_ids = self._checked_segments(segment_ids)
        positions = self.position_embeddings(ops.arange(ops.shape(token_ids)[1]))
        x = (
            self.word_embeddings(token_ids)
            + self.token_type_embeddings(segment_ids)
            + positions[None]
        )
        return self.dropout_layer(self.layer_norm(x), training=training)

    def _checked(self, token_ids, static_length):
        """Token ids guarded by in-graph checks of the id range and the sequence length.

        An out-of-range id or position would be an error on the CPU but read as zeros on
        a GPU, so the graph checks them itself. XLA (`jit_compile=True`) drops assertions;
        there the length is still checked when the shape is static.
        """
        if keras.backend.backend() != "tensorflow":
            return token_ids
        import tensorflow as tf

        checks = [
            tf.debugging.assert_less(
                token_ids,
                tf.cast(self.vocabulary_size, token_ids.dtype),
                message=f"token ids must be < vocabulary_size={self.vocabulary_size}",
            ),
            tf.debugging.assert_non_negative(token_ids, message="token ids must be >= 0"),
        ]
        if static_length is None:
            checks.append(
                tf.debugging.assert_less_equal(
                    tf.shape(token_ids)[1],
                    self.max_position_embeddings,
                    message="Expected sequences of at most max_position_embeddings="
                    f"{self.max_position_embeddings} tokens; received a longer one",
                )
            )
        with tf.control_dependencies(checks):
            return tf.identity(token_ids)

    def _checked_segments(self, segment_ids):
        """Segment ids guarded by a check of their range, `[0, type_vocabulary_size)`.

        As for token ids, a GPU would read zeros for an id past the table. Eagerly a
        `ValueError` names the ids received; in a graph an assertion (dropped by XLA).
        """
        if keras.backend.backend() != "tensorflow":
            return segment_ids
        from mmrep.utils.value_checks import checked_range

        return checked_range(
            segment_ids,
            self.name,
            0,
            self.type_vocabulary_size - 1,
            what="segment ids",
            why=f" (type_vocabulary_size={self.type_vocabulary_size})",
        )

    def compute_output_shape(self, token_ids_shape, segment_ids_shape=None):
        return (*token_ids_shape, self.hidden_size)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "hidden_size": self.hidden_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocabulary_size": self.type_vocabulary_size,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "dropout": self.dropout,
            "initializer_range": self.initializer_range,
        }


@keras.saving.register_keras_serializable(package="mmrep")
class BertTransformerBlock(keras.layers.Layer):
    """One post-LN transformer encoder block of BERT.

    `x = LayerNorm(x + Dropout(Attention(x)))`, then
    `x = LayerNorm(x + Dropout(Dense(act(Dense(x)))))`. Multi-head self-attention uses one
    fused query/key/value projection (a single matmul), scaled dot products, and a softmax
    computed in float32 under mixed precision. Padding positions are excluded as keys; the
    outputs at padding positions are computed but carry no meaning.

    Args:
        hidden_size: int. Width of the block's input and output.
        num_heads: int. Attention heads; must divide `hidden_size`.
        intermediate_size: int. Width of the feed-forward layer.
        activation: str. The feed-forward activation, by Hugging Face `hidden_act` name:
            `"gelu"` is the exact (erf) GELU; `"gelu_new"`, `"gelu_pytorch_tanh"` and
            `"gelu_fast"` the tanh approximation; also `"relu"`, `"silu"`, `"tanh"`.
            Defaults to `"gelu"`.
        dropout: float. Dropout on the attention output and the feed-forward output.
            Defaults to `0.1`.
        attention_dropout: float. Dropout on the attention probabilities. Defaults to `0.1`.
        layer_norm_epsilon: float. Defaults to `1e-12`.
        initializer_range: float. Defaults to `0.02`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        x: `[B, T, hidden_size]`.
        padding_mask: `[B, T]`, bool or int (non-zero = a real token), or `None`.
        training: bool.

    Returns:
        `[B, T, hidden_size]`.

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017; Devlin et al., "BERT",
        NAACL 2019.
    """

    def __init__(
        self,
        hidden_size,
        num_heads,
        intermediate_size,
        activation="gelu",
        dropout=0.1,
        attention_dropout=0.1,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(
                f"Expected `hidden_size` divisible by `num_heads`. Received: "
                f"hidden_size={hidden_size}, num_heads={num_heads}"
            )
        _check_activation(activation)
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range

        def dense(units, name):
            return keras.layers.Dense(
                units,
                kernel_initializer=_initializer(initializer_range),
                name=name,
                dtype=self.dtype_policy,
            )

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name=name, dtype=self.dtype_policy
            )

        self.qkv = dense(3 * hidden_size, "query_key_value")
        self.attention_output = dense(hidden_size, "attention_output")
        self.attention_norm = norm("attention_layer_norm")
        self.intermediate = dense(intermediate_size, "intermediate")
        self.output_dense = dense(hidden_size, "output")
        self.output_norm = norm("output_layer_norm")
        self.attention_dropout_layer = keras.layers.Dropout(
            attention_dropout, dtype=self.dtype_policy
        )
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, x_shape, padding_mask_shape=None):
        self.qkv.build(x_shape)
        self.attention_output.build(x_shape)
        self.attention_norm.build(x_shape)
        self.intermediate.build(x_shape)
        self.output_dense.build((*x_shape[:-1], self.intermediate_size))
        self.output_norm.build(x_shape)

    def _attention(self, x, padding_mask, training):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        head_size = self.hidden_size // self.num_heads
        qkv = ops.reshape(self.qkv(x), (batch, length, 3, self.num_heads, head_size))
        # [3, B, heads, T, head_size]
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        query, key, value = qkv[0], qkv[1], qkv[2]
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
        scores = ops.cast(scores, "float32") * (1.0 / math.sqrt(head_size))
        if padding_mask is not None:
            keep = ops.cast(padding_mask, "bool")[:, None, None, :]
            # The most negative float32, as Hugging Face uses: a fully padded row
            # becomes uniform instead of NaN.
            scores = ops.where(keep, scores, ops.cast(-3.4028234663852886e38, "float32"))
        probs = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        probs = self.attention_dropout_layer(probs, training=training)
        context = ops.matmul(probs, value)  # [B, heads, T, head_size]
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch, length, -1))
        return self.attention_output(context)

    def call(self, x, padding_mask=None, training=None):
        attended = self.dropout_layer(self._attention(x, padding_mask, training), training=training)
        x = self.attention_norm(x + attended)
        hidden = ACTIVATIONS[self.activation](self.intermediate(x))
        out = self.dropout_layer(self.output_dense(hidden), training=training)
        return self.output_norm(x + out)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return tuple(x_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "activation": self.activation,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
        }
