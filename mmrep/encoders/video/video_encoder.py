"""VideoEncoder: a frame encoder applied to every sampled frame, then masked temporal pooling."""

import keras
import tensorflow as tf
from keras import ops
from tensorflow.python.ops import control_flow_util

from mmrep.encoders.pooling import POOLINGS, masked_pool
from mmrep.utils.arguments import is_int
from mmrep.utils.masks import as_bool_mask

_POOLINGS = (*POOLINGS, "sequence")


@keras.saving.register_keras_serializable(package="mmrep")
class VideoEncoder(keras.layers.Layer):
    """Frame-sampled video embeddings: a per-frame encoder, then masked temporal pooling.

    The video representation of Karpathy et al. ("Large-scale Video Classification with
    Convolutional Neural Networks", CVPR 2014) and of temporal segment networks (Wang et
    al., ECCV 2016) in their simplest form: frames sampled from the clip (see
    `mmrep.preprocessing.sample_frames`) go through one image encoder each, with shared
    weights, and the per-frame vectors are pooled over time. `pooling="sequence"` keeps the
    per-frame vectors for a later head (fusion, Fisher vector, NetVLAD).

    Input is a batch of frame stacks `[B, T, H, W, C]` and an optional `frame_mask`
    `[B, T]` that marks the real frames (clips shorter than `T` are padded). Padded frames
    never reach the output: their vectors are zeros in the sequence and are left out of
    every pooling; a clip without any real frame pools to zeros. Their values are never
    read: NaN or out-of-range pixels in a padded frame are not an error.

    With `skip_masked_frames=True` (the default) padded frames are not even encoded: the
    real frames of the batch are gathered, encoded as one batch and scattered back. This
    matters when the frame encoder trains BatchNormalization: padding frames would
    otherwise enter its batch statistics. Inside an XLA-compiled function (`jit_compile`)
    shapes must be static, so there every frame is encoded and the mask applied afterwards,
    as with `skip_masked_frames=False`.

    Args:
        frame_encoder: a Keras layer or model mapping images `[N, H, W, C]` to vectors
            `[N, D]`, such as `mmrep.encoders.ImageEncoder(pooling="avg")`; or its
            serialised form (`keras.saving.serialize_keras_object`). It keeps its own
            dtype policy and receives the frames unchanged (uint8 stays uint8).
        pooling: `"mean"`, `"max"`, `"attention"` (a softmax over a learned linear score
            per frame, restricted to real frames; Ilse et al., ICML 2018) or `"sequence"`.
            Defaults to `"mean"`.
        skip_masked_frames: bool. Encode only the frames `frame_mask` marks real.
            Defaults to `True`.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        frames: `[B, T, H, W, C]`, of a dtype the frame encoder takes.
        frame_mask: `[B, T]` bool (or numbers, nonzero = real), or `None` for all real.
        training: passed on to the frame encoder.

    Returns:
        `[B, D]` in the layer's compute dtype; with `pooling="sequence"`, a dict
        `{"sequence_output": [B, T, D], "mask": [B, T] bool}`.

    Example:

    >>> frame_encoder = keras.Sequential([
    ...     keras.layers.Rescaling(1 / 255),
    ...     keras.layers.Conv2D(4, 3),
    ...     keras.layers.GlobalAveragePooling2D(),
    ... ])
    >>> video = VideoEncoder(frame_encoder, pooling="mean")
    >>> frames = np.zeros((2, 8, 32, 32, 3), "uint8")
    >>> video(frames, frame_mask=np.arange(8) < np.array([[8], [5]])).shape
    TensorShape([2, 4])
    """

    def __init__(self, frame_encoder, pooling="mean", skip_masked_frames=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(frame_encoder, dict):
            frame_encoder = keras.saving.deserialize_keras_object(frame_encoder)
        if not isinstance(frame_encoder, keras.layers.Layer):
            raise TypeError(
                "Expected `frame_encoder` to be a Keras layer or model mapping images "
                f"[N, H, W, C] to vectors [N, D]. Received: {type(frame_encoder).__name__}"
            )
        if pooling not in _POOLINGS:
            raise ValueError(
                f"Expected `pooling` to be one of {_POOLINGS}. Received: pooling={pooling!r}"
            )
        if not isinstance(skip_masked_frames, bool):
            raise ValueError(
                "Expected `skip_masked_frames` to be a bool. "
                f"Received: skip_masked_frames={skip_masked_frames!r}"
            )
        self.frame_encoder = frame_encoder
        self.pooling = pooling
        self.skip_masked_frames = skip_masked_frames
        self.frame_dim = None
        # The frames go to the frame encoder as they come: it owns its preprocessing.
        self.autocast = False
        self._attention = None
        if pooling == "attention":
            self._attention = keras.layers.Dense(
                1, use_bias=False, name="attention_score", dtype=self.dtype_policy
            )

    def build(self, frames_shape, frame_mask_shape=None):
        frames_shape = self._check_frames_shape(frames_shape)
        frame_shape = (None, *frames_shape[2:])
        if not self.frame_encoder.built:
            self.frame_encoder.build(frame_shape)
        self.frame_dim = self._frame_output_dim(frame_shape)
        if self._attention is not None:
            self._attention.build((None, self.frame_dim))

    def _frame_output_dim(self, frame_shape):
        try:
            shape = self.frame_encoder.compute_output_shape(frame_shape)
        except NotImplementedError:
            shape = None
        if not isinstance(shape, (tuple, list)) or not all(d is None or is_int(d) for d in shape):
            raise ValueError(
                f"{self.name}: `frame_encoder` must return one vector per frame [N, D]. "
                f"For frames {frame_shape} it returns {shape!r}"
            )
        if len(shape) != 2 or shape[1] is None:
            hint = " (an ImageEncoder needs pooling='avg' or 'max')" if len(shape) == 4 else ""
            raise ValueError(
                f"{self.name}: `frame_encoder` must return one vector per frame [N, D] with "
                f"a known D{hint}. For frames {frame_shape} it returns {tuple(shape)}"
            )
        return int(shape[1])

    def _check_frames_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 5:
            raise ValueError(
                f"{self.name}: expected frames of shape [batch, time, height, width, "
                f"channels]. Received: shape={shape}"
            )
        return shape

    def call(self, frames, frame_mask=None, training=None):
        self._check_frames_shape(frames.shape)
        batch, time = ops.shape(frames)[0], ops.shape(frames)[1]
        mask = self._mask(frames, frame_mask)
        flat = tf.reshape(frames, tf.concat([[-1], tf.shape(frames)[2:]], axis=0))
        flat_mask = ops.reshape(mask, (-1,))
        if frame_mask is not None and self.skip_masked_frames and not _in_xla():
            vectors = self._encode_real_frames(flat, flat_mask, training)
        else:
            if frame_mask is not None:
                # Padded frames are encoded here but never read: zeros go in their place,
                # so NaN or out-of-range padding reaches neither the frame encoder's
                # checks, its batch statistics nor a gradient.
                keep = ops.reshape(flat_mask, (-1,) + (1,) * (len(frames.shape) - 2))
                flat = tf.where(keep, flat, tf.zeros_like(flat))
            vectors = self._encode(flat, training)
        sequence = ops.reshape(vectors, (batch, time, self.frame_dim))
        sequence = ops.where(mask[..., None], sequence, ops.zeros_like(sequence))
        if self.pooling == "sequence":
            return {"sequence_output": sequence, "mask": mask}
        scores = self._attention(sequence) if self._attention is not None else None
        return ops.cast(masked_pool(sequence, mask, self.pooling, scores), self.compute_dtype)

    def _encode(self, images, training):
        vectors = self.frame_encoder(images, training=training)
        if not hasattr(vectors, "shape") or len(vectors.shape) != 2:
            got = tuple(vectors.shape) if hasattr(vectors, "shape") else type(vectors).__name__
            raise ValueError(
                f"{self.name}: `frame_encoder` must return one vector per frame [N, D]. "
                f"Received: {got}"
            )
        return ops.cast(vectors, self.compute_dtype)

    def _encode_real_frames(self, flat, flat_mask, training):
        """Encodes the real frames only; padded rows of the result are zeros."""
        indices = tf.where(flat_mask)
        rows = tf.shape(flat_mask, out_type=tf.int64)[0]
        shape = tf.stack([rows, tf.constant(self.frame_dim, tf.int64)])

        def encode():
            vectors = self._encode(tf.gather(flat, indices[:, 0]), training)
            return tf.scatter_nd(indices, vectors, shape)

        def nothing():
            # No real frame in the batch: the encoder never sees an empty batch (a
            # training BatchNormalization would average over zero frames).
            return tf.zeros(shape, self.compute_dtype)

        return tf.cond(tf.size(indices) > 0, encode, nothing)

    def _mask(self, frames, frame_mask):
        leading = ops.shape(frames)[:2]
        if frame_mask is None:
            return ops.ones(leading, "bool")
        if len(frame_mask.shape) != 2:
            raise ValueError(
                f"{self.name}: expected `frame_mask` of shape [batch, time] "
                f"{tuple(frames.shape[:2])}. Received: shape={tuple(frame_mask.shape)}"
            )
        static_time, mask_time = frames.shape[1], frame_mask.shape[1]
        if static_time is not None and mask_time is not None and static_time != mask_time:
            raise ValueError(
                f"{self.name}: `frame_mask` must have one entry per frame: expected shape "
                f"[batch, {static_time}]. Received: shape={tuple(frame_mask.shape)}"
            )
        return as_bool_mask(frame_mask)

    def compute_output_shape(self, frames_shape, frame_mask_shape=None):
        frames_shape = self._check_frames_shape(frames_shape)
        if self.frame_dim is None:
            self.frame_dim = self._frame_output_dim((None, *frames_shape[2:]))
        batch, time = frames_shape[:2]
        if self.pooling != "sequence":
            return (batch, self.frame_dim)
        return {"sequence_output": (batch, time, self.frame_dim), "mask": (batch, time)}

    def compute_output_spec(self, frames, frame_mask=None, training=None):
        shape = self.compute_output_shape(frames.shape)
        if self.pooling != "sequence":
            return keras.KerasTensor(shape, dtype=self.compute_dtype)
        return {
            "sequence_output": keras.KerasTensor(shape["sequence_output"], self.compute_dtype),
            "mask": keras.KerasTensor(shape["mask"], dtype="bool"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "frame_encoder": keras.saving.serialize_keras_object(self.frame_encoder),
                "pooling": self.pooling,
                "skip_masked_frames": self.skip_masked_frames,
            }
        )
        return config


def _in_xla():
    """Whether the graph being built is compiled by XLA (which needs static shapes)."""
    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
