"""VGGish: a VGG-style audio network giving a 128-d embedding per 0.96 s of audio."""

import keras
from keras import ops

from mmrep.encoders.audio.audio_examples import AudioExamples
from mmrep.encoders.pooling import POOLINGS, masked_pool
from mmrep.utils.arguments import check_int, is_int
from mmrep.utils.masks import as_bool_mask

_POOLINGS = (None, *POOLINGS)
# (stage, convolutions per stage); a 2x2 max pool follows each stage.
_STAGES = (("conv1", 1), ("conv2", 1), ("conv3", 2), ("conv4", 2))


def conv_layer_names():
    """The convolution layers in order, named as in VGGish's TF1 checkpoint."""
    names = []
    for stage, count in _STAGES:
        names += [stage] if count == 1 else [f"{stage}_{i + 1}" for i in range(count)]
    return names


@keras.saving.register_keras_serializable(package="mmrep")
class VGGish(keras.layers.Layer):
    """VGGish audio embeddings: a 128-d vector per 0.96 s example, from waveform or log-mel.

    The network of Hershey et al.: 3x3 SAME convolutions with ReLU, conv64 - pool -
    conv128 - pool - conv256 x2 - pool - conv512 x2 - pool (2x2 stride-2 SAME max pools),
    the `[6, 4, 512]` map flattened in NHWC order, two fully connected ReLU layers of 4096
    and a linear 128-d embedding layer. An example is a `[96, 64]` log-mel patch seen as
    an image of height 96 (time) and width 64 (mel bands).

    Inputs are either waveforms `[B, S]` at 16 kHz, which go through the in-graph
    frontend (`AudioExamples`, so an exported model takes raw audio), or examples
    `[B, E, 96, 64]`. The output is the sequence of example embeddings with its mask, or
    one vector per clip pooled over the valid examples (a clip without any valid example
    pools to zeros). Masked positions of the sequence output are zeros.

    Weights are created by `build` with `kernel_initializer`; the published ones are
    loaded with `VGGish.from_pretrained` or `load_pretrained` (TF1 checkpoint, TF Hub
    SavedModel, or torchvggish state dict). Layer widths are arguments so that tests
    can use a small variant; the defaults are the published sizes (72.1 M parameters).
    The PCA whitening and 8-bit quantisation of the AudioSet release are a separate
    layer, `VGGishPostprocess`.

    Args:
        pooling: `None`, `"mean"`, `"max"` or `"attention"`. `None` returns the
            sequence and its mask; the others pool over valid examples (attention: a
            learned score `w . h_e`, softmax over the clip's valid examples).
            Defaults to `None`.
        pad_short: bool. Pad (and mask) waveforms shorter than one example instead of
            refusing them; see `AudioExamples`. Defaults to `False`.
        example_hop: int. Frames between examples for waveform input (96: no overlap).
            Defaults to `96`.
        frontend: a `LogMelSpectrogram`, its config, or `None` for VGGish's.
            Defaults to `None`.
        conv_filters: 4 ints. Filters of the four convolution stages.
            Defaults to `(64, 128, 256, 512)`.
        fc_units: tuple of ints. Widths of the hidden fully connected layers.
            Defaults to `(4096, 4096)`.
        embedding_dim: int. Width of the embedding layer. Defaults to `128`.
        kernel_initializer: Initializer of the kernels. Defaults to `"glorot_uniform"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: `[B, S]` waveform (floating in [-1, 1], or int16) or `[B, E, 96, 64]`
            log-mel examples. NaN or infinite samples, and float samples beyond 2 in
            magnitude (int16 units held as floats), are errors (see `AudioExamples`).
        lengths: optional integer `[B]`, samples per clip of a padded waveform batch.
        example_mask: optional `[B, E]`, bool or numeric (non-zero: valid), the valid
            examples of an examples input. `None`: all valid.
        sample_rate: optional int; a rate other than the frontend's (16000) is an error.

    Returns:
        With `pooling=None`, a dict `{"sequence_output": [B, E, embedding_dim],
        "mask": [B, E] bool}`; otherwise `[B, embedding_dim]`. In the compute dtype.

    Example:

    >>> model = VGGish(pooling="mean", conv_filters=(4, 4, 4, 4), fc_units=(8,))
    >>> tuple(model(np.zeros((2, 16000), "float32")).shape)
    (2, 128)

    Reference:
        Hershey et al., "CNN Architectures for Large-Scale Audio Classification",
        ICASSP 2017.
    """

    def __init__(
        self,
        pooling=None,
        pad_short=False,
        example_hop=96,
        frontend=None,
        conv_filters=(64, 128, 256, 512),
        fc_units=(4096, 4096),
        embedding_dim=128,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in _POOLINGS:
            raise ValueError(
                f"Expected `pooling` to be one of {_POOLINGS}. Received: pooling={pooling!r}"
            )
        conv_filters = _int_tuple("conv_filters", conv_filters)
        if len(conv_filters) != len(_STAGES):
            raise ValueError(
                f"Expected `conv_filters` to hold {len(_STAGES)} ints, one per stage. "
                f"Received: conv_filters={conv_filters}"
            )
        fc_units = _int_tuple("fc_units", fc_units, allow_empty=True)
        example_hop = check_int("example_hop", example_hop, minimum=1)
        self.pooling = pooling
        self.pad_short = pad_short
        self.example_hop = example_hop
        self.conv_filters = conv_filters
        self.fc_units = fc_units
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # Waveforms must reach the frontend in float32: no autocast on the way in.
        self.autocast = False

        # === Layers ===
        self.examples = AudioExamples(
            frontend=frontend,
            example_hop=example_hop,
            pad_short=pad_short,
            dtype=self.dtype_policy,
            name="audio_examples",
        )
        layer_args = {"kernel_initializer": self.kernel_initializer, "dtype": self.dtype_policy}
        self._convs, self._conv_stages = [], []
        names = iter(conv_layer_names())
        for (_, count), filters in zip(_STAGES, conv_filters, strict=True):
            for _ in range(count):
                conv = keras.layers.Conv2D(
                    filters, 3, padding="same", activation="relu", name=next(names), **layer_args
                )
                self._convs.append(conv)
            self._conv_stages.append(count)
        self._pool = keras.layers.MaxPooling2D(2, 2, padding="same", dtype=self.dtype_policy)
        self._fcs = [
            keras.layers.Dense(units, activation="relu", name=f"fc1_{i + 1}", **layer_args)
            for i, units in enumerate(fc_units)
        ]
        self._embedding = keras.layers.Dense(self.embedding_dim, name="fc2", **layer_args)
        self._attention = None
        if pooling == "attention":
            self._attention = keras.layers.Dense(
                1, use_bias=False, name="attention_score", **layer_args
            )

    @property
    def example_shape(self):
        """`(frames, mel bands)` of one example: `(96, 64)` for VGGish."""
        return (self.examples.example_frames, self.examples.frontend.num_mel_bins)

    @property
    def named_layers(self):
        """The weight-carrying layers by their VGGish checkpoint names (`conv3_1`, `fc2`)."""
        return {layer.name: layer for layer in [*self._convs, *self._fcs, self._embedding]}

    def build(self, inputs_shape=None, lengths_shape=None, example_mask_shape=None):
        frames, bands = self.example_shape
        shape = (None, frames, bands, 1)
        convs = iter(self._convs)
        for count in self._conv_stages:
            for _ in range(count):
                conv = next(convs)
                conv.build(shape)
                shape = conv.compute_output_shape(shape)
            shape = self._pool.compute_output_shape(shape)
        width = shape[1] * shape[2] * shape[3]
        for dense in self._fcs:
            dense.build((None, width))
            width = dense.units
        self._embedding.build((None, width))
        if self._attention is not None:
            self._attention.build((None, self.embedding_dim))
        if inputs_shape is not None and len(inputs_shape) == 2:
            self.examples.build(inputs_shape)

    def call(self, inputs, lengths=None, example_mask=None, sample_rate=None, training=None):
        rank = len(inputs.shape)
        if rank == 2:
            if example_mask is not None:
                raise ValueError(
                    f"{self.name}: `example_mask` goes with examples input [B, E, 96, 64]; "
                    "for a waveform batch pass `lengths`."
                )
            out = self.examples(inputs, lengths=lengths, sample_rate=sample_rate)
            examples, mask = out["examples"], out["mask"]
        elif rank == 4:
            examples, mask = self._check_examples(inputs, lengths, example_mask, sample_rate)
        else:
            raise ValueError(
                f"{self.name}: expected a waveform [batch, samples] or examples "
                f"[batch, examples, {self.example_shape[0]}, {self.example_shape[1]}]. "
                f"Received: shape={tuple(inputs.shape)}"
            )
        examples = ops.cast(examples, self.compute_dtype)
        frames, bands = self.example_shape
        leading = ops.shape(examples)[:2]
        x = ops.reshape(examples, (-1, frames, bands, 1))
        convs = iter(self._convs)
        for count in self._conv_stages:
            for _ in range(count):
                x = next(convs)(x)
            x = self._pool(x)
        # Flattened in NHWC order (height, width, channel), as VGGish's TF1 graph does.
        x = ops.reshape(x, (ops.shape(x)[0], -1))
        for dense in self._fcs:
            x = dense(x)
        x = self._embedding(x)
        sequence = ops.reshape(x, (leading[0], leading[1], self.embedding_dim))
        sequence = ops.where(mask[..., None], sequence, ops.zeros_like(sequence))
        if self.pooling is None:
            return {"sequence_output": sequence, "mask": mask}
        return self._pool_examples(sequence, mask)

    def _check_examples(self, examples, lengths, example_mask, sample_rate):
        if lengths is not None or sample_rate is not None:
            raise ValueError(
                f"{self.name}: `lengths` and `sample_rate` describe waveform input; "
                "examples input takes `example_mask`."
            )
        if tuple(examples.shape[2:]) != self.example_shape:
            raise ValueError(
                f"{self.name}: expected examples of shape [batch, examples, "
                f"{self.example_shape[0]}, {self.example_shape[1]}]. "
                f"Received: shape={tuple(examples.shape)}"
            )
        if not keras.backend.is_float_dtype(examples.dtype):
            raise TypeError(
                f"{self.name}: expected floating log-mel examples. "
                f"Received: dtype={keras.backend.standardize_dtype(examples.dtype)}"
            )
        if example_mask is None:
            return examples, ops.ones(ops.shape(examples)[:2], "bool")
        if len(example_mask.shape) != 2:
            raise ValueError(
                f"{self.name}: expected `example_mask` of shape [batch, examples] "
                f"{tuple(examples.shape[:2])}. Received: shape={tuple(example_mask.shape)}"
            )
        return examples, as_bool_mask(example_mask)

    def _pool_examples(self, sequence, mask):
        scores = self._attention(sequence) if self._attention is not None else None
        pooled = masked_pool(sequence, mask, self.pooling, scores)
        return ops.cast(pooled, self.compute_dtype)

    def _num_examples(self, input_shape):
        if len(input_shape) == 4:
            return input_shape[1]
        return self.examples.compute_output_shape(input_shape)["mask"][1]

    def compute_output_shape(self, input_shape, lengths_shape=None, example_mask_shape=None):
        batch = input_shape[0]
        if self.pooling is not None:
            return (batch, self.embedding_dim)
        examples = self._num_examples(input_shape)
        return {
            "sequence_output": (batch, examples, self.embedding_dim),
            "mask": (batch, examples),
        }

    def compute_output_spec(
        self, inputs, lengths=None, example_mask=None, sample_rate=None, training=None
    ):
        shape = self.compute_output_shape(inputs.shape)
        if self.pooling is not None:
            return keras.KerasTensor(shape, dtype=self.compute_dtype)
        return {
            "sequence_output": keras.KerasTensor(shape["sequence_output"], self.compute_dtype),
            "mask": keras.KerasTensor(shape["mask"], dtype="bool"),
        }

    def load_pretrained(self, source, *, allow_pickle=False):
        """Copies published VGGish weights into this layer; see `load_vggish_weights`."""
        from mmrep.encoders.audio.vggish_weights import load_vggish_weights

        load_vggish_weights(self, source, allow_pickle=allow_pickle)
        return self

    @classmethod
    def from_pretrained(cls, source, *, allow_pickle=False, **kwargs):
        """A `VGGish(**kwargs)` holding the weights of `source`.

        Args:
            source: a TF1 checkpoint (`vggish_model.ckpt`, a prefix, or its folder), a
                SavedModel folder or TF Hub handle (resolved by `tensorflow_hub`, from
                its cache when offline), or a torchvggish `.pth` state dict.
            allow_pickle: bool. Required for `.pth` files (unpickling can run code).
            **kwargs: `VGGish` constructor arguments (`pooling`, `pad_short`, ...).
        """
        return cls(**kwargs).load_pretrained(source, allow_pickle=allow_pickle)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pooling": self.pooling,
                "pad_short": self.pad_short,
                "example_hop": self.example_hop,
                "frontend": keras.saving.serialize_keras_object(self.examples.frontend),
                "conv_filters": list(self.conv_filters),
                "fc_units": list(self.fc_units),
                "embedding_dim": self.embedding_dim,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


def _int_tuple(name, value, allow_empty=False):
    try:
        items = tuple(value)
    except TypeError:
        items = None
    if items is None or (not items and not allow_empty) or not all(is_int(v, 1) for v in items):
        raise ValueError(
            f"Expected `{name}` to be a sequence of positive ints. Received: {name}={value!r}"
        )
    return tuple(int(v) for v in items)
