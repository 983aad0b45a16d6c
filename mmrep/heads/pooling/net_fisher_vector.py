"""NetFV: the learnable Fisher-vector pooling of LOUPE (Miech, Laptev & Sivic 2017)."""

import keras
from keras import ops

from mmrep.heads.pooling.soft_assignment import NORMALIZATIONS, SoftAssignmentPooling
from mmrep.utils.power_normalization import l2_normalize


@keras.saving.register_keras_serializable(package="mmrep")
class NetFV(SoftAssignmentPooling):
    """NetFV pooling of a descriptor set `[B, N, D]` into `[B, 2*K*D]`.

    With soft assignments `a_k(x) = softmax_k(w_k^T x + b_k)` (a learned affine map, as
    NetVLAD, not the GMM posterior), learned centres `c_k` and learned positive scales
    `σ_k = exp(s_k)` (`[K, D]`, starting at 1), over the real descriptors only:

        FV1[k, d] = Σ_n a_k(x_n) (x_nd - c_kd) / σ_kd
        FV2[k, d] = Σ_n a_k(x_n) ((x_nd - c_kd)^2 / σ_kd^2 - 1)

    This is eq. (5)-(6) of Miech et al. 2017, the Fisher vector of Perronnin et al. with
    the GMM replaced by free parameters and its constants `1/(N sqrt(π_k))` and
    `1/(N sqrt(2 π_k))` dropped (the normalisation that follows absorbs the `1/N`).
    Normalisation, as the LOUPE code: with `normalization="intra_l2"` each `FV1[k]` is
    L2-normalised, then `FV1` is L2-normalised as a whole, and `FV2` is L2-normalised as a
    whole (LOUPE does not intra-normalise the second-order block); `"l2"` skips the
    per-cluster step; `None` returns the raw sums. The output is
    `[FV1 (K x D, cluster-major), FV2 (K x D)]`, so its norm is `sqrt(2)` when normalised.
    Differences from LOUPE: LOUPE parameterises `σ = w^2 + 1e-6` and flattens `[D, K]`;
    here `σ = exp(s)` (positive, no dead zone at `w = 0`) and the layout is cluster-major
    like `FisherVector`. The second-order sums use the expansion
    `Σ a x^2 - 2 c Σ a x + c^2 Σ a` (two GEMMs), in float32. An empty set gives zeros.

    Args:
        num_clusters: int > 0. The number `K` of clusters.
        ghost_clusters: int >= 0. Clusters that take part in the soft assignment and are
            dropped from the output. Defaults to `0`.
        output_dim: int or `None`. If set, a learned linear projection (kernel + bias, in
            the compute dtype) of the pooled vector to this width. Defaults to `None`.
        gating: bool. Whether to apply `ContextGating` to the output, after the projection.
            Defaults to `False`.
        normalization: `"intra_l2"`, `"l2"` or `None`. Defaults to `"intra_l2"`.
        assignment_initializer: Initializer of the assignment kernel `[D, K + G]`.
            Defaults to `"glorot_uniform"`.
        centers_initializer: Initializer of the centres `[K, D]`, or `None` for a normal
            distribution of standard deviation `1 / sqrt(D)`. Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: float tensor `[B, N, D]`.
        mask: optional `[B, N]` tensor, bool or numeric (non-zero = real descriptor).

    Returns:
        `[B, 2 * K * D]` (or `[B, output_dim]`) in the compute dtype.

    Raises:
        ValueError: for bad constructor arguments, inputs not of rank 3 with a known
            feature size (or of another size than at build), or a mask not `[B, N]`.
        TypeError: for non-floating inputs.

    Example:

    >>> pool = NetFV(num_clusters=4)
    >>> tuple(pool(np.ones((2, 5, 3), "float32")).shape)
    (2, 24)

    Reference:
        Miech, Laptev & Sivic, "Learnable pooling with Context Gating for video
        classification", arXiv:1706.06905, 2017. Perronnin, Sánchez & Mensink, "Improving
        the Fisher kernel for large-scale image classification", ECCV 2010.
    """

    uses_centers = True

    def __init__(self, num_clusters, normalization="intra_l2", **kwargs):
        super().__init__(num_clusters, **kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"Expected `normalization` to be one of {NORMALIZATIONS}. "
                f"Received: {normalization!r}"
            )
        self.normalization = normalization

    def _build_extra(self, dim):
        self.log_scales = self.add_weight(
            name="log_scales",
            shape=(self.num_clusters, dim),
            initializer="zeros",
            dtype="float32",
            autocast=False,
        )

    def _pooled_width(self, dim):
        return 2 * self.num_clusters * dim

    def _aggregate(self, x, a, count):
        mass = ops.sum(a, axis=1)[..., None]  # [B, K, 1]
        first = ops.einsum("bnk,bnd->bkd", a, x)
        second = ops.einsum("bnk,bnd->bkd", a, ops.square(x))
        centers = self.centers
        inv_scales = ops.exp(-self.log_scales)
        fv1 = (first - mass * centers) * inv_scales
        spread = second - 2.0 * centers * first + mass * ops.square(centers)
        fv2 = spread * ops.square(inv_scales) - mass
        width = self.num_clusters * fv1.shape[-1]
        if self.normalization == "intra_l2":
            fv1 = l2_normalize(fv1, axis=-1)
        fv1, fv2 = ops.reshape(fv1, (-1, width)), ops.reshape(fv2, (-1, width))
        if self.normalization is not None:
            fv1, fv2 = l2_normalize(fv1), l2_normalize(fv2)
        return ops.concatenate([fv1, fv2], axis=-1)

    def get_config(self):
        config = super().get_config()
        config["normalization"] = self.normalization
        return config
