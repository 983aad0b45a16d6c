"""Masked pooling of a sequence `[B, T, D]` over its valid positions, shared by the encoders.

VGGish pools its per-example embeddings and `VideoEncoder` its per-frame embeddings the same
way: a mean or a max over the positions the mask marks valid, or attention pooling, a
softmax over learned scores restricted to those positions (the attention-based
multiple-instance pooling of Ilse et al., "Attention-based Deep Multiple Instance
Learning", ICML 2018, in its simplest linear-score form). A row without any valid
position pools to zeros, never to NaN or to the padding.
"""

from keras import ops

POOLINGS = ("mean", "max", "attention")
_LOWEST = -3.0e38


def masked_pool(sequence, mask, mode, scores=None):
    """Pools `sequence` over its valid positions, in float32.

    Args:
        sequence: float tensor `[B, T, D]`.
        mask: bool tensor `[B, T]`; `True` marks a valid position.
        mode: `"mean"`, `"max"` or `"attention"`.
        scores: float tensor `[B, T, 1]`, the attention logits; only for `"attention"`.

    Returns:
        A float32 tensor `[B, D]`. The statistics are computed in float32 whatever the
        dtype of `sequence`: a float16 sum over many positions can overflow.

    Raises:
        ValueError: if `mode` is not one of `POOLINGS`, or `scores` is missing for
            `"attention"`.
    """
    if mode not in POOLINGS:
        raise ValueError(f"Expected `mode` to be one of {POOLINGS}. Received: mode={mode!r}")
    x = ops.cast(sequence, "float32")
    valid = mask[..., None]
    weights = ops.cast(valid, "float32")
    count = ops.sum(weights, axis=1)
    if mode == "mean":
        return ops.sum(x * weights, axis=1) / ops.maximum(count, 1.0)
    if mode == "max":
        pooled = ops.max(ops.where(valid, x, ops.full_like(x, _LOWEST)), axis=1)
        return ops.where(count > 0, pooled, ops.zeros_like(pooled))
    if scores is None:
        raise ValueError("Attention pooling needs `scores` of shape [batch, time, 1].")
    scores = ops.cast(scores, "float32")
    scores = ops.where(valid, scores, ops.full_like(scores, _LOWEST))
    scores = scores - ops.max(scores, axis=1, keepdims=True)
    exp = ops.exp(scores) * weights
    alpha = exp / ops.maximum(ops.sum(exp, axis=1, keepdims=True), 1e-30)
    return ops.sum(alpha * x, axis=1)
