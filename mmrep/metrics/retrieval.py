"""Cross-modal retrieval metrics: recall@k and median rank, as numpy functions and Keras metrics.

A query (e.g. an image) ranks every gallery item (e.g. captions) by similarity; its rank
is the 1-based position of its first correct item. Recall@k is the fraction of queries
whose rank is <= k, the median rank the median of the ranks (Karpathy & Fei-Fei 2015;
Faghri et al., VSE++, BMVC 2018, report R@1/5/10 and Med r).

Ties. A gallery item scored exactly as the query's best correct item is counted
*ahead* of it (`ties="pessimistic"`, the default): a constant scorer gets the worst rank,
not the best, so ties cannot inflate recall. `ties="optimistic"` counts only strictly
better items.

The numpy functions rank a full query-by-gallery similarity matrix (evaluation code).
The Keras metrics rank *within each batch*: the gallery is the other modality of the
same (global, under `tf.distribute`) batch, and counts accumulate over batches, so their
values depend on the batch size (recall@1 among 256 candidates); they are for monitoring
training, while reported numbers should come from `retrieval_scores` on the whole set.
"""

import keras
import numpy as np
from keras import ops

from mmrep.losses.contrastive import pair_terms
from mmrep.utils.arguments import check_int, is_int

_TIES = ("pessimistic", "optimistic")


def _check_ties(ties):
    if ties not in _TIES:
        raise ValueError(f"Expected `ties` to be one of {_TIES}. Received: ties={ties!r}")


def _check_ks(ks):
    ks = tuple(ks) if isinstance(ks, (list, tuple)) else (ks,)
    if not ks or not all(is_int(k, 1) for k in ks):
        raise ValueError(f"Expected `ks` to be positive ints. Received: ks={ks!r}")
    return tuple(int(k) for k in ks)


def retrieval_ranks(similarity, positives=None, ties="pessimistic"):
    """1-based rank of each query's best correct gallery item.

    Args:
        similarity: `[Q, G]` array, higher means more similar (e.g. cosine).
        positives: `None` (query `i` matches gallery item `i`; needs `Q <= G`), an int
            array `[Q]` of gallery indices, or a bool array `[Q, G]` (several correct
            items, e.g. five captions per image: the best-scored one counts).
        ties: `"pessimistic"` or `"optimistic"`; see the module docstring.
            Defaults to `"pessimistic"`.

    Returns:
        int64 array `[Q]`: `1 + #{wrong items scored >= (or >) the best correct one}`.

    Raises:
        ValueError: for a similarity that is not a finite 2-D array, positives of the
            wrong shape or out of range, or a query without any correct item.

    Example:

    >>> retrieval_ranks(np.array([[0.9, 0.1], [0.8, 0.3]])).tolist()
    [1, 2]
    """
    _check_ties(ties)
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or not np.all(np.isfinite(similarity)):
        raise ValueError(
            "Expected `similarity` to be a finite [queries, gallery] array. "
            f"Received shape: {similarity.shape}"
            + ("" if similarity.ndim != 2 else " (with non-finite values)")
        )
    queries, gallery = similarity.shape
    if positives is None:
        if queries > gallery:
            raise ValueError(
                "`positives=None` pairs query i with gallery item i, which needs queries "
                f"<= gallery. Received similarity shape: {similarity.shape}"
            )
        positives = np.arange(queries)
    positives = np.asarray(positives)
    if positives.ndim == 1:
        if positives.shape != (queries,) or not np.issubdtype(positives.dtype, np.integer):
            raise ValueError(
                f"Expected integer `positives` of shape ({queries},). Received: "
                f"shape={positives.shape}, dtype={positives.dtype}"
            )
        if np.any((positives < 0) | (positives >= gallery)):
            raise ValueError(f"`positives` must index the gallery [0, {gallery}).")
        mask = np.zeros((queries, gallery), bool)
        mask[np.arange(queries), positives] = True
    elif positives.shape == (queries, gallery):
        mask = positives.astype(bool)
    else:
        raise ValueError(
            f"Expected `positives` of shape ({queries},) or ({queries}, {gallery}). "
            f"Received shape: {positives.shape}"
        )
    without = np.flatnonzero(~mask.any(axis=1))
    if without.size:
        raise ValueError(f"Queries {without[:10].tolist()} have no correct gallery item.")
    best = np.where(mask, similarity, -np.inf).max(axis=1, keepdims=True)
    ahead = similarity >= best if ties == "pessimistic" else similarity > best
    return 1 + np.sum(ahead & ~mask, axis=1)


def recall_at_k(ranks, ks=(1, 5, 10)):
    """Fraction of queries whose rank is at most k.

    Args:
        ranks: int array `[Q]` of 1-based ranks (from `retrieval_ranks`).
        ks: int or tuple of ints. Defaults to `(1, 5, 10)`.

    Returns:
        dict `{k: float}`.

    Raises:
        ValueError: for empty ranks or ks that are not positive ints.
    """
    ks = _check_ks(ks)
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"Expected a non-empty 1-D array of ranks. Received shape: {ranks.shape}")
    return {k: float(np.mean(ranks <= k)) for k in ks}


def median_rank(ranks):
    """Median of the ranks (the mean of the two middle ranks for an even count).

    Args:
        ranks: int array `[Q]` of 1-based ranks.

    Returns:
        float.

    Raises:
        ValueError: for empty ranks.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"Expected a non-empty 1-D array of ranks. Received shape: {ranks.shape}")
    return float(np.median(ranks))


def retrieval_scores(query, gallery, ks=(1, 5, 10), positives=None, ties="pessimistic"):
    """Recall@k and median rank of retrieving `gallery` items with `query` embeddings.

    Similarity is the cosine (rows are L2-normalised in float64).

    Args:
        query: `[Q, D]` array of query embeddings.
        gallery: `[G, D]` array of gallery embeddings.
        ks: int or tuple of ints. Defaults to `(1, 5, 10)`.
        positives: as for `retrieval_ranks`. Defaults to `None` (row i matches row i).
        ties: as for `retrieval_ranks`. Defaults to `"pessimistic"`.

    Returns:
        dict `{"recall@k": float, ..., "median_rank": float}`.

    Raises:
        ValueError: for arrays that are not `[N, D]` with the same `D`, and as
            `retrieval_ranks`.
    """
    query, gallery = np.asarray(query, np.float64), np.asarray(gallery, np.float64)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(
            "Expected `query` [Q, D] and `gallery` [G, D] with the same D. Received: "
            f"query.shape={query.shape}, gallery.shape={gallery.shape}"
        )

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    ranks = retrieval_ranks(unit(query) @ unit(gallery).T, positives, ties)
    scores = {f"recall@{k}": v for k, v in recall_at_k(ranks, ks).items()}
    scores["median_rank"] = median_rank(ranks)
    return scores


def batch_ranks(query, gallery, presence=None, ties="pessimistic", cross_replica=True):
    """In-graph ranks of each query among the (global) batch's gallery items.

    Pairs `(query[i], gallery[i])` with a missing side (`presence`) are neither queries
    nor gallery items. Under `tf.distribute` the gallery is gathered from every replica.

    Args:
        query: `[B, D]` tensor. Query embeddings; row `i` is paired with `gallery[i]`.
        gallery: `[B, D]` tensor. Gallery embeddings.
        presence: optional `[B, 2]` or `[B]` mask, as for `mmrep.losses.clip_loss`.
        ties: `"pessimistic"` or `"optimistic"`. Defaults to `"pessimistic"`.
        cross_replica: bool. Gather the gallery from every replica. Defaults to `True`.

    Returns:
        A tuple `(ranks, valid)`: int32 `[B]` 1-based ranks and float `[B]` (1 for a
        valid query).
    """
    _check_ties(ties)
    pairs = pair_terms(query, gallery, presence, cross_replica)
    scores = ops.matmul(pairs.a, ops.transpose(pairs.b_all))
    best = ops.take_along_axis(scores, ops.expand_dims(pairs.rows, -1), axis=1)
    columns = ops.arange(ops.shape(scores)[1], dtype="int32")
    wrong = ops.logical_and(
        ops.expand_dims(ops.cast(pairs.valid_all, "bool"), 0),
        ops.not_equal(ops.expand_dims(pairs.rows, -1), ops.expand_dims(columns, 0)),
    )
    ahead = ops.greater_equal(scores, best) if ties == "pessimistic" else scores > best
    ranks = 1 + ops.sum(ops.cast(ops.logical_and(ahead, wrong), "int32"), axis=1)
    return ranks, pairs.valid


class _RetrievalMetric(keras.metrics.Metric):
    """Base: picks the query and gallery embeddings and ranks them within the batch."""

    def __init__(self, query, gallery, ties, cross_replica, name, **kwargs):
        super().__init__(name=name or f"{query}_to_{gallery}_{self._suffix}", **kwargs)
        if not (isinstance(query, str) and isinstance(gallery, str)) or query == gallery:
            raise ValueError(
                "Expected `query` and `gallery` to name two different modalities. "
                f"Received: query={query!r}, gallery={gallery!r}"
            )
        _check_ties(ties)
        self.query, self.gallery = query, gallery
        self.ties = ties
        self.cross_replica = bool(cross_replica)

    def _ranks(self, y_true, y_pred, sample_weight):
        if sample_weight is not None:
            raise ValueError(f"{self.name}: `sample_weight` is not supported.")
        if not isinstance(y_pred, dict) or not {self.query, self.gallery} <= set(y_pred):
            keys = sorted(y_pred) if isinstance(y_pred, dict) else type(y_pred).__name__
            raise ValueError(
                f"{self.name}: expected `y_pred` to be a dict with the embeddings "
                f"{self.query!r} and {self.gallery!r}. Received: {keys}"
            )
        query = ops.cast(y_pred[self.query], "float32")
        gallery = ops.cast(y_pred[self.gallery], "float32")
        if y_true is None:
            # CoordinatedEmbedding's missing embeddings are all-zero rows.
            y_true = ops.stack(
                [ops.any(ops.not_equal(x, 0), axis=-1) for x in (query, gallery)], axis=-1
            )
        return batch_ranks(query, gallery, y_true, self.ties, self.cross_replica)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "query": self.query,
                "gallery": self.gallery,
                "ties": self.ties,
                "cross_replica": self.cross_replica,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="mmrep")
class RecallAtK(_RetrievalMetric):
    """Within-batch recall@k of cross-modal retrieval (query modality → gallery modality).

    `update_state(y_true, y_pred)` takes `y_pred`, a dict with both embeddings (such as
    `CoordinatedEmbedding`'s output), and `y_true`, `None` (all-zero rows are missing)
    or a presence mask `[B, 2]` (query, gallery columns). Each batch's valid queries
    are ranked among its valid gallery items (the global batch under `tf.distribute`);
    hits and queries are counted over batches. See the module docstring for ties.

    Args:
        query: str. The modality whose embeddings are the queries.
        gallery: str. The modality searched.
        ks: int or tuple of ints. Defaults to `(1, 5, 10)`.
        ties: `"pessimistic"` or `"optimistic"`. Defaults to `"pessimistic"`.
        cross_replica: bool. Gather the gallery across replicas. Defaults to `True`.
        name: str. Defaults to `"{query}_to_{gallery}_recall"`.
        **kwargs: `keras.metrics.Metric` arguments (`dtype`).

    Returns (`result()`):
        dict `{"{name}@{k}": fraction}` (0 before any valid query).

    Reference:
        Faghri, Fleet, Kiros & Fidler, "VSE++: Improving Visual-Semantic Embeddings
        with Hard Negatives", BMVC 2018 (R@K for image-caption retrieval).
    """

    _suffix = "recall"

    def __init__(
        self,
        query,
        gallery,
        ks=(1, 5, 10),
        ties="pessimistic",
        cross_replica=True,
        name=None,
        **kwargs,
    ):
        super().__init__(query, gallery, ties, cross_replica, name, **kwargs)
        self.ks = _check_ks(ks)
        self.hits = self.add_variable((len(self.ks),), "zeros", "float32", name="hits")
        self.count = self.add_variable((), "zeros", "float32", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ranks, valid = self._ranks(y_true, y_pred, sample_weight)
        within = ops.less_equal(ops.expand_dims(ranks, -1), ops.array(self.ks, "int32"))
        hits = ops.sum(ops.cast(within, "float32") * ops.expand_dims(valid, -1), axis=0)
        self.hits.assign_add(hits)
        self.count.assign_add(ops.sum(valid))

    def result(self):
        recall = ops.divide_no_nan(self.hits, self.count)
        return {f"{self.name}@{k}": recall[i] for i, k in enumerate(self.ks)}

    def get_config(self):
        return {**super().get_config(), "ks": list(self.ks)}


@keras.saving.register_keras_serializable(package="mmrep")
class MedianRank(_RetrievalMetric):
    """Within-batch median rank of cross-modal retrieval, accumulated over batches.

    Takes the same `update_state` arguments as `RecallAtK`. Ranks are accumulated in a
    histogram of `max_rank + 1` bins (the last one counts ranks above `max_rank`), from
    which the median is exact (the mean of the two middle ranks for an even count) as
    long as it is <= `max_rank`; otherwise the result is `max_rank + 1`, a lower bound.

    Args:
        query: str. The modality whose embeddings are the queries.
        gallery: str. The modality searched.
        max_rank: int. Largest rank held exactly; at least the largest gallery (the
            global batch) for an always exact median. Defaults to `1024`.
        ties: `"pessimistic"` or `"optimistic"`. Defaults to `"pessimistic"`.
        cross_replica: bool. Gather the gallery across replicas. Defaults to `True`.
        name: str. Defaults to `"{query}_to_{gallery}_median_rank"`.
        **kwargs: `keras.metrics.Metric` arguments (`dtype`).

    Returns (`result()`):
        A float scalar (0 before any valid query).
    """

    _suffix = "median_rank"

    def __init__(
        self,
        query,
        gallery,
        max_rank=1024,
        ties="pessimistic",
        cross_replica=True,
        name=None,
        **kwargs,
    ):
        super().__init__(query, gallery, ties, cross_replica, name, **kwargs)
        self.max_rank = check_int("max_rank", max_rank, minimum=1)
        self.histogram = self.add_variable(
            (self.max_rank + 1,), "zeros", "float32", name="histogram"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        ranks, valid = self._ranks(y_true, y_pred, sample_weight)
        bins = ops.minimum(ranks, self.max_rank + 1) - 1
        counts = ops.sum(ops.one_hot(bins, self.max_rank + 1) * ops.expand_dims(valid, -1), 0)
        self.histogram.assign_add(ops.cast(counts, "float32"))

    def result(self):
        cumulative = ops.cumsum(self.histogram)
        total = cumulative[-1]

        def rank_at(position):  # the rank of the `position`-th smallest (1-based)
            return 1.0 + ops.sum(ops.cast(cumulative < position, "float32"))

        lower, upper = ops.floor((total + 1.0) / 2.0), ops.floor(total / 2.0) + 1.0
        median = 0.5 * (rank_at(lower) + rank_at(upper))
        return ops.where(total > 0, median, 0.0)

    def get_config(self):
        return {**super().get_config(), "max_rank": self.max_rank}
