"""NetVLAD, NetRVLAD and soft bag-of-words: learnable pooling of descriptor sets.

Three members of the LOUPE family (Miech, Laptev & Sivic 2017) built on the shared soft
assignment of `mmrep.heads.pooling.soft_assignment`: the residuals to learned centres (NetVLAD,
Arandjelović et al. 2016), the assignment-weighted descriptors without residuals (NetRVLAD)
and the soft cluster counts (soft bag-of-words).
"""

import keras
from keras import ops

from mmrep.heads.pooling.soft_assignment import NORMALIZATIONS, SoftAssignmentPooling
from mmrep.utils.power_normalization import l2_normalize

_BOW_NORMALIZATIONS = ("l2", "l1", None)

_SHARED_ARGS = """
        ghost_clusters: int >= 0. Clusters that take part in the soft assignment and are
            dropped from the output (Zhong et al., GhostVLAD, 2018). Defaults to `0`.
        output_dim: int or `None`. If set, a learned linear projection (kernel + bias, in
            the compute dtype) of the pooled vector to this width. Defaults to `None`.
        gating: bool. Whether to apply `ContextGating` (`units=None`) to the output, after
            the projection as in LOUPE. Defaults to `False`.
        assignment_initializer: Initializer of the assignment kernel `[D, K + G]` (the
            bias starts at zero). Defaults to `"glorot_uniform"`."""


def _check_normalization(normalization, allowed):
    if normalization not in allowed:
        raise ValueError(
            f"Expected `normalization` to be one of {allowed}. Received: {normalization!r}"
        )
    return normalization


def _normalize_blocks(v, normalization):
    """`[B, K, D]` -> `[B, K*D]` cluster-major, intra-normalised and/or globally L2'd."""
    if normalization == "intra_l2":
        v = l2_normalize(v, axis=-1)
    v = ops.reshape(v, (-1, v.shape[1] * v.shape[2]))
    if normalization is not None:
        v = l2_normalize(v, axis=-1)
    return v


@keras.saving.register_keras_serializable(package="mmrep")
class NetVLAD(SoftAssignmentPooling):
    """NetVLAD pooling of a descriptor set `[B, N, D]` into `[B, K*D]`.

    `V[k] = Σ_n a_k(x_n) (x_n - c_k)` with `a_k(x) = softmax_k(w_k^T x + b_k)` over the
    `K + G` clusters (ghost ones dropped afterwards) and learned centres `c_k`, over the
    real descriptors only (Arandjelović et al. 2016, eq. 4). Then, with
    `normalization="intra_l2"`, each `V[k]` is L2-normalised (intra-normalisation,
    Arandjelović & Zisserman, "All about VLAD", CVPR 2013) and the whole vector L2-normalised;
    `"l2"` skips the per-cluster step; `None` returns the raw residual sums. The output is
    laid out cluster-major, `out[k * D + d] = V[k, d]` (LOUPE flattens `[D, K]` instead: the
    same numbers in another order). See `mmrep.heads.pooling.soft_assignment` for the choices
    shared by the family (no batch-norm on the logits, float32 statistics, masking). An
    empty set gives zeros.

    Args:
        num_clusters: int > 0. The number `K` of clusters (and centres).{shared}
        normalization: `"intra_l2"`, `"l2"` or `None`. Defaults to `"intra_l2"`.
        centers_initializer: Initializer of the centres `[K, D]`, or `None` for a normal
            distribution of standard deviation `1 / sqrt(D)` (as LOUPE). Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: float tensor `[B, N, D]`.
        mask: optional `[B, N]` tensor, bool or numeric (non-zero = real descriptor).

    Returns:
        `[B, K * D]` (or `[B, output_dim]`) in the compute dtype.

    Raises:
        ValueError: for bad constructor arguments, inputs not of rank 3 with a known
            feature size (or of another size than at build), or a mask not `[B, N]`.
        TypeError: for non-floating inputs.

    Example:

    >>> pool = NetVLAD(num_clusters=4)
    >>> tuple(pool(np.ones((2, 5, 3), "float32")).shape)
    (2, 12)

    Reference:
        Arandjelović, Gronat, Torii, Pajdla & Sivic, "NetVLAD: CNN architecture for weakly
        supervised place recognition", CVPR 2016. Miech, Laptev & Sivic, "Learnable pooling
        with Context Gating for video classification", arXiv:1706.06905, 2017.
    """

    uses_centers = True
    residual = True

    def __init__(self, num_clusters, normalization="intra_l2", **kwargs):
        super().__init__(num_clusters, **kwargs)
        self.normalization = _check_normalization(normalization, NORMALIZATIONS)

    def _pooled_width(self, dim):
        return self.num_clusters * dim

    def _aggregate(self, x, a, count):
        v = ops.einsum("bnk,bnd->bkd", a, x)
        if self.residual:
            v = v - ops.sum(a, axis=1)[..., None] * self.centers
        return _normalize_blocks(v, self.normalization)

    def get_config(self):
        config = super().get_config()
        config["normalization"] = self.normalization
        return config


@keras.saving.register_keras_serializable(package="mmrep")
class NetRVLAD(NetVLAD):
    """NetRVLAD: NetVLAD without residuals, `V[k] = Σ_n a_k(x_n) x_n`, `[B, N, D] -> [B, K*D]`.

    The "residual-less" VLAD of Miech et al. 2017 (section 3.2): no centres are learned;
    the normalisation, layout, masking and options are NetVLAD's.

    Args:
        num_clusters: int > 0. The number `K` of clusters.{shared}
        normalization: `"intra_l2"`, `"l2"` or `None`. Defaults to `"intra_l2"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: float tensor `[B, N, D]`.
        mask: optional `[B, N]` tensor, bool or numeric (non-zero = real descriptor).

    Returns:
        `[B, K * D]` (or `[B, output_dim]`) in the compute dtype.

    Raises:
        ValueError: as `NetVLAD`.
        TypeError: for non-floating inputs.

    Example:

    >>> pool = NetRVLAD(num_clusters=4, output_dim=6, gating=True)
    >>> tuple(pool(np.ones((2, 5, 3), "float32")).shape)
    (2, 6)

    Reference:
        Miech, Laptev & Sivic, "Learnable pooling with Context Gating for video
        classification", arXiv:1706.06905, 2017.
    """

    uses_centers = False
    residual = False


@keras.saving.register_keras_serializable(package="mmrep")
class SoftBagOfWords(SoftAssignmentPooling):
    """Soft bag-of-words (LOUPE's soft-DBoW): the soft cluster counts of a set, `[B, K]`.

    `h[k] = Σ_n a_k(x_n)` over the real descriptors, then normalised: `"l2"` divides by
    `||h||` (as LOUPE), `"l1"` divides by the number of real descriptors (the mean
    assignment: a histogram summing to 1 when there are no ghost clusters; with ghost
    clusters the mass they took is left out), `None` keeps the counts. An empty set gives
    zeros.

    Args:
        num_clusters: int > 0. The number `K` of visual words.{shared}
        normalization: `"l2"`, `"l1"` or `None`. Defaults to `"l2"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: float tensor `[B, N, D]`.
        mask: optional `[B, N]` tensor, bool or numeric (non-zero = real descriptor).

    Returns:
        `[B, K]` (or `[B, output_dim]`) in the compute dtype.

    Raises:
        ValueError: as `NetVLAD`.
        TypeError: for non-floating inputs.

    Example:

    >>> pool = SoftBagOfWords(num_clusters=4)
    >>> tuple(pool(np.ones((2, 5, 3), "float32")).shape)
    (2, 4)

    Reference:
        Miech, Laptev & Sivic, "Learnable pooling with Context Gating for video
        classification", arXiv:1706.06905, 2017 (section 3.2, "Soft-DBoW").
    """

    def __init__(self, num_clusters, normalization="l2", **kwargs):
        super().__init__(num_clusters, **kwargs)
        self.normalization = _check_normalization(normalization, _BOW_NORMALIZATIONS)

    def _pooled_width(self, dim):
        return self.num_clusters

    def _aggregate(self, x, a, count):
        h = ops.sum(a, axis=1)
        if self.normalization == "l2":
            return l2_normalize(h)
        if self.normalization == "l1":
            return h / ops.maximum(count, 1.0)
        return h

    def get_config(self):
        config = super().get_config()
        config["normalization"] = self.normalization
        return config


for _cls in (NetVLAD, NetRVLAD, SoftBagOfWords):
    _cls.__doc__ = _cls.__doc__.replace("{shared}", _SHARED_ARGS)
