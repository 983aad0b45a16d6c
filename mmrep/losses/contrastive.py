"""Contrastive losses over paired embeddings: CLIP / InfoNCE, NT-Xent, VSE++ max-margin.

Each loss compares a batch of pairs `(a_i, b_i)` (two modalities, or two views) with
every other pair of the batch, by cosine similarity: the embeddings are L2-normalised
here (in float32, or float64 for float64 input), so that raw vectors and the unit-norm
output of `CoordinatedEmbedding` give the same loss.

Missing data. A pair is valid when both sides are present (`presence`). Invalid pairs
are left out as anchors and as negatives; the loss is the mean over the valid pairs of
the global batch (0 when there is none). Whatever an invalid row holds, even NaN, reaches
neither the loss nor the gradients.

Replicas. Under `tf.distribute` the negatives are gathered from every replica
(`cross_replica=True`, see `mmrep.losses.cross_replica`) and each replica returns its
*share* of the global-batch loss: the sum of its valid pairs' losses divided by the
number of valid pairs in the global batch. The shares add up to the global-batch mean
and, as Keras sums the replicas' gradients, one step equals the single-device step on
the global batch, like `tf.nn.compute_average_loss`. Outside a strategy the share is the
mean itself. `cross_replica=False` keeps each replica's negatives local (the mean of the
replicas' local-batch losses); it exists to measure what gathering changes.
"""

from collections import namedtuple

import keras
from keras import ops

from mmrep.losses.cross_replica import gather_batch, num_replicas_in_sync

# A logit that `exp` turns into exactly 0 in float32 and float64, yet finite, so that an
# all-masked row (an invalid anchor) cannot produce NaN in the backward pass.
_MASKED_LOGIT = -1e9

_Pairs = namedtuple("_Pairs", ["a", "b", "a_all", "b_all", "valid", "valid_all", "rows", "count"])


def _compute_dtype(*tensors):
    return (
        "float64"
        if any(keras.backend.standardize_dtype(t.dtype) == "float64" for t in tensors)
        else "float32"
    )


def _check_embeddings(a, b):
    a, b = ops.convert_to_tensor(a), ops.convert_to_tensor(b)
    for name, x in (("a", a), ("b", b)):
        if len(x.shape) != 2 or not keras.backend.is_float_dtype(x.dtype):
            raise ValueError(
                f"Expected `{name}` to be a floating tensor [batch, dim]. "
                f"Received: shape={tuple(x.shape)}, dtype={x.dtype}"
            )
    if a.shape[1] is not None and b.shape[1] is not None and a.shape[1] != b.shape[1]:
        raise ValueError(
            "Expected `a` and `b` to share the embedding dimension. "
            f"Received: a.shape={tuple(a.shape)}, b.shape={tuple(b.shape)}"
        )
    if a.shape[0] is not None and b.shape[0] is not None and a.shape[0] != b.shape[0]:
        raise ValueError(
            "Expected `a` and `b` to hold the same number of pairs. "
            f"Received: a.shape={tuple(a.shape)}, b.shape={tuple(b.shape)}"
        )
    return a, b


def _pair_validity(presence, batch_shape):
    """`[B]` bool: both sides present. `presence` is `[B, 2]` (per side) or `[B]` (per pair)."""
    presence = ops.convert_to_tensor(presence)
    shape = tuple(presence.shape)
    if len(shape) == 2 and shape[1] in (None, 2):
        present = presence if presence.dtype == "bool" else ops.not_equal(presence, 0)
        return ops.logical_and(present[:, 0], present[:, 1])
    if len(shape) == 1:
        return presence if presence.dtype == "bool" else ops.not_equal(presence, 0)
    raise ValueError(
        "Expected `presence` of shape [batch, 2] (one column per side) or [batch] (per "
        f"pair), with batch {batch_shape}. Received shape: {shape}"
    )


def _l2_normalize(x):
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))
    return x / norm


def pair_terms(a, b, presence=None, cross_replica=True):
    """Normalised, masked and (across replicas) gathered pairs, shared by the losses.

    The building block of the losses here and of the retrieval metrics; see the module
    docstring for the conventions.

    Args:
        a: `[B, D]` floating tensor. One side of the pairs.
        b: `[B, D]` floating tensor. The other side.
        presence: optional `[B, 2]` (per side) or `[B]` (per pair) mask.
        cross_replica: bool. Gather across replicas.

    Returns:
        A namedtuple: `a`, `b` (local `[B, D]`, unit norm, zero rows for invalid pairs),
        `a_all`, `b_all` (gathered `[N, D]`), `valid`, `valid_all` (`[B]`, `[N]`
        floats), `rows` (int32 `[B]`, positions of the local pairs in the gathered
        batch) and `count` (the number of valid pairs the shares are divided by).

    Raises:
        ValueError: for embeddings that are not `[B, D]` floating tensors of one shape,
            or a `presence` of the wrong shape.
    """
    a, b = _check_embeddings(a, b)
    dtype = _compute_dtype(a, b)
    a, b = ops.cast(a, dtype), ops.cast(b, dtype)
    if presence is None:
        valid = ops.ones(ops.shape(a)[:1], "bool")
    else:
        valid = _pair_validity(presence, a.shape[0])
    column = ops.expand_dims(valid, -1)
    # Clear invalid rows before anything multiplies them: 0 * NaN would be NaN.
    # Zero rows stay zero through the normalisation (0 / sqrt(1e-12)).
    a = _l2_normalize(ops.where(column, a, ops.zeros_like(a)))
    b = _l2_normalize(ops.where(column, b, ops.zeros_like(b)))
    valid = ops.cast(valid, dtype)
    if cross_replica:
        (a_all, b_all), offset = gather_batch([a, b])
        valid_all, _ = gather_batch(valid, differentiable=False)
        count = ops.sum(valid_all)
    else:
        a_all, b_all, valid_all, offset = a, b, valid, 0
        count = ops.sum(valid) * num_replicas_in_sync()
    rows = ops.arange(ops.shape(a)[0], dtype="int32") + ops.cast(offset, "int32")
    return _Pairs(a, b, a_all, b_all, valid, valid_all, rows, count)


def _as_dtype(value, dtype):
    # Python floats go straight to `dtype`: through float32 first, 0.3 would be off by 4e-8.
    if isinstance(value, (int, float)):
        return ops.convert_to_tensor(value, dtype)
    return ops.cast(ops.convert_to_tensor(value), dtype)


def _scale(value, dtype, what):
    """A scalar, or `[B, 1]` for per-example values (one per row of the logits)."""
    value = _as_dtype(value, dtype)
    if len(value.shape) == 0:
        return value
    if len(value.shape) > 2:
        raise ValueError(
            f"Expected `{what}` to be a scalar or one value per pair ([batch] or "
            f"[batch, 1]). Received shape: {tuple(value.shape)}"
        )
    return ops.reshape(value, (-1, 1))


def _cross_entropy(logits, allowed, positive):
    """Softmax cross-entropy of each row against column `positive`, over `allowed` columns."""
    logits = ops.where(allowed, logits, _MASKED_LOGIT)
    picked = ops.take_along_axis(logits, ops.expand_dims(positive, -1), axis=1)[:, 0]
    return ops.logsumexp(logits, axis=-1) - picked


def _columns(pairs, size):
    """`[1, N]` bool of valid columns and `[B, N]` bool marking each row's own pair."""
    valid = ops.expand_dims(ops.cast(pairs.valid_all, "bool"), 0)
    own = ops.equal(
        ops.expand_dims(pairs.rows, -1), ops.expand_dims(ops.arange(size, dtype="int32"), 0)
    )
    return valid, own


def clip_per_pair(pairs, logit_scale):
    """Per-pair symmetric InfoNCE terms; see `clip_loss`.

    Args:
        pairs: the result of `pair_terms`.
        logit_scale: scalar or `[B]`/`[B, 1]` inverse temperature.

    Returns:
        `[B]` terms, zero for invalid pairs.
    """
    scale = _scale(logit_scale, pairs.a.dtype, "logit_scale")
    valid_columns, _ = _columns(pairs, ops.shape(pairs.b_all)[0])
    a_to_b = scale * ops.matmul(pairs.a, ops.transpose(pairs.b_all))
    b_to_a = scale * ops.matmul(pairs.b, ops.transpose(pairs.a_all))
    terms = 0.5 * (
        _cross_entropy(a_to_b, valid_columns, pairs.rows)
        + _cross_entropy(b_to_a, valid_columns, pairs.rows)
    )
    return ops.where(ops.cast(pairs.valid, "bool"), terms, 0.0)


def nt_xent_per_pair(pairs, scale):
    """Per-pair NT-Xent terms (the mean of the pair's two views); see `nt_xent_loss`.

    Args:
        pairs: the result of `pair_terms`.
        scale: scalar or `[B]`/`[B, 1]` inverse temperature `1 / tau`.

    Returns:
        `[B]` terms, zero for invalid pairs.
    """
    inverse = _scale(scale, pairs.a.dtype, "1 / temperature")
    if len(inverse.shape) == 2:
        inverse = ops.concatenate([inverse, inverse], axis=0)
    size = ops.shape(pairs.a_all)[0]
    views = ops.concatenate([pairs.a, pairs.b], axis=0)  # local anchors [2B, D]
    candidates = ops.concatenate([pairs.a_all, pairs.b_all], axis=0)  # [2N, D]
    logits = inverse * ops.matmul(views, ops.transpose(candidates))
    valid = ops.cast(pairs.valid_all, "bool")
    valid_columns = ops.expand_dims(ops.concatenate([valid, valid], axis=0), 0)
    # View a of pair i sits at row i of the candidates, view b at row N + i.
    own_a, own_b = pairs.rows, pairs.rows + size
    itself = ops.concatenate([own_a, own_b], axis=0)
    positive = ops.concatenate([own_b, own_a], axis=0)
    not_self = ops.not_equal(
        ops.expand_dims(itself, -1), ops.expand_dims(ops.arange(2 * size, dtype="int32"), 0)
    )
    losses = _cross_entropy(logits, ops.logical_and(valid_columns, not_self), positive)
    batch = ops.shape(pairs.a)[0]
    terms = 0.5 * (losses[:batch] + losses[batch:])
    return ops.where(ops.cast(pairs.valid, "bool"), terms, 0.0)


def max_margin_per_pair(pairs, margin, max_violation):
    """Per-pair VSE++ hinge terms (both directions); see `max_margin_ranking_loss`.

    Args:
        pairs: the result of `pair_terms`.
        margin: float. The margin.
        max_violation: bool. Hardest negative, or sum over negatives.

    Returns:
        `[B]` terms, zero for invalid pairs.
    """
    valid_columns, own = _columns(pairs, ops.shape(pairs.b_all)[0])
    negatives = ops.logical_and(valid_columns, ops.logical_not(own))
    terms = 0.0
    for anchor, others in ((pairs.a, pairs.b_all), (pairs.b, pairs.a_all)):
        scores = ops.matmul(anchor, ops.transpose(others))
        positive = ops.take_along_axis(scores, ops.expand_dims(pairs.rows, -1), axis=1)
        hinge = ops.where(negatives, ops.relu(margin - positive + scores), 0.0)
        # Hinges are >= 0, so a masked 0 never wins the max over negatives.
        terms = terms + (ops.max(hinge, axis=-1) if max_violation else ops.sum(hinge, axis=-1))
    return ops.where(ops.cast(pairs.valid, "bool"), terms, 0.0)


def _mean_share(terms, pairs):
    return ops.divide_no_nan(ops.sum(terms), ops.cast(pairs.count, terms.dtype))


def clip_loss(a, b, logit_scale, presence=None, cross_replica=True):
    """Symmetric InfoNCE (CLIP) loss of paired embeddings.

    Logits `s * cos(a_i, b_j)` over the batch; the loss is the mean of the a→b and
    b→a softmax cross-entropies with the matching pair as the target:
    `l_i = (CE_i(a→b) + CE_i(b→a)) / 2`, averaged over the valid pairs.

    Args:
        a: `[B, D]` floating tensor. Embeddings of one modality (or view).
        b: `[B, D]` floating tensor. Embeddings of the other, row `i` paired with `a[i]`.
        logit_scale: the inverse temperature `s = 1 / tau`: a float, a scalar tensor, or
            one value per pair (`[B]` or `[B, 1]`, such as `CoordinatedEmbedding`'s
            `"logit_scale"` output).
        presence: optional `[B, 2]` mask of each side (bool or numeric, non-zero means
            present) or `[B]` mask of pairs. Defaults to `None` (all present).
        cross_replica: bool. Gather negatives from every replica. Defaults to `True`.

    Returns:
        A scalar: the mean over valid pairs (this replica's share of it under a
        strategy; see the module docstring), float32 (float64 for float64 input).

    Raises:
        ValueError: if the embeddings are not `[B, D]` floating tensors of the same
            shape, or `presence`/`logit_scale` have the wrong shape.

    Reference:
        van den Oord, Li & Vinyals, "Representation Learning with Contrastive
        Predictive Coding", arXiv:1807.03748, 2018 (InfoNCE); Radford et al.,
        "Learning Transferable Visual Models From Natural Language Supervision",
        ICML 2021 (CLIP's symmetric loss).
    """
    pairs = pair_terms(a, b, presence, cross_replica)
    return _mean_share(clip_per_pair(pairs, logit_scale), pairs)


def nt_xent_loss(a, b, temperature=0.5, presence=None, cross_replica=True):
    """NT-Xent loss of two views (SimCLR): 2N x 2N cosine similarities, self masked.

    Each of the `2N` views is an anchor whose positive is the other view of its pair
    and whose negatives are the other `2N - 2` views; `l_i` is the mean of the two
    views' cross-entropies, averaged over the valid pairs (the mean over `2N` anchors).

    Args:
        a: `[B, D]` floating tensor. First views.
        b: `[B, D]` floating tensor. Second views, row `i` paired with `a[i]`.
        temperature: the temperature `tau` (logits are `cos / tau`): a float, a scalar
            tensor or one value per pair. Defaults to `0.5`.
        presence: optional `[B, 2]` or `[B]` mask, as for `clip_loss`.
        cross_replica: bool. Gather negatives from every replica. Defaults to `True`.

    Returns:
        A scalar: the mean over valid pairs (the replica's share under a strategy).

    Raises:
        ValueError: as `clip_loss`.

    Reference:
        Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive
        Learning of Visual Representations", ICML 2020.
    """
    pairs = pair_terms(a, b, presence, cross_replica)
    inverse = 1.0 / _as_dtype(temperature, pairs.a.dtype)
    return _mean_share(nt_xent_per_pair(pairs, inverse), pairs)


def max_margin_ranking_loss(
    a, b, margin=0.2, max_violation=True, presence=None, cross_replica=True
):
    """Bidirectional max-margin ranking loss, with hardest negatives (VSE++).

    With cosine scores `S_ij = cos(a_i, b_j)`, pair `i` costs
    `max_j [m - S_ii + S_ij]_+ + max_j [m - S_ii + S_ji]_+` over negatives `j != i`
    (`max_violation=True`, VSE++), or the sums over `j` instead of the maxima
    (`max_violation=False`, the sum-of-hinges loss of VSE0). VSE++ sums over the batch;
    here the loss is the mean over valid pairs (the sum divided by their number), so
    that it does not grow with the batch size.

    Args:
        a: `[B, D]` floating tensor. Embeddings of one modality (e.g. images).
        b: `[B, D]` floating tensor. Embeddings of the other (e.g. captions).
        margin: float. The margin `m`. Defaults to `0.2` (VSE++).
        max_violation: bool. Hardest negative only. Defaults to `True`.
        presence: optional `[B, 2]` or `[B]` mask, as for `clip_loss`.
        cross_replica: bool. Gather negatives from every replica. Defaults to `True`.

    Returns:
        A scalar: the mean over valid pairs (the replica's share under a strategy).

    Raises:
        ValueError: as `clip_loss`.

    Reference:
        Faghri, Fleet, Kiros & Fidler, "VSE++: Improving Visual-Semantic Embeddings
        with Hard Negatives", BMVC 2018.
    """
    pairs = pair_terms(a, b, presence, cross_replica)
    return _mean_share(max_margin_per_pair(pairs, margin, max_violation), pairs)
