"""The soft-assignment core shared by the learnable pooling layers (NetVLAD family, NetFV).

Every layer of the LOUPE family (Miech, Laptev & Sivic, "Learnable pooling with Context
Gating for video classification", 2017) assigns each descriptor `x_n` of a set softly to `K`
clusters, `a_k(x_n) = softmax_k(w_k^T x_n + b_k)` (Arandjelović et al., "NetVLAD", CVPR 2016,
eq. 3), aggregates statistics weighted by those assignments, normalises them, and optionally
projects and context-gates the result. `SoftAssignmentPooling` holds the assignment, the
masking, the projection and the gating; subclasses say what they aggregate.

Design choices (documented once here, for every subclass):

- The assignment logits are the affine map of the NetVLAD paper (a 1x1 convolution). LOUPE
  batch-normalises the logits instead of adding a bias; that is not done here, because batch
  statistics would count the padded descriptors of masked sets and differ between replicas
  under `tf.distribute`. Normalise the descriptors before the layer if wanted.
- Ghost clusters (Zhong, Arandjelović & Zisserman, "GhostVLAD for set-based face
  recognition", ACCV 2018) take part in the softmax and are then dropped, so descriptors
  that fit no real cluster (noise, low quality) can give their mass away.
- Assignments and aggregates are computed in float32 whatever the compute dtype (sums over
  many descriptors can overflow float16); the projection and gating run in the compute dtype.
- Masked-out descriptors are replaced by zeros with `ops.where` before anything touches them
  and their assignments are set to zero, so their values (even NaN) reach neither the output
  nor the gradients. A set without descriptors aggregates to zeros, normalised to zeros.
"""

import keras
from keras import ops

from mmrep.heads.pooling.context_gating import ContextGating
from mmrep.utils.arguments import check_int
from mmrep.utils.masks import as_bool_mask

NORMALIZATIONS = ("intra_l2", "l2", None)


class SoftAssignmentPooling(keras.layers.Layer):
    """Base class: soft assignment of a masked set to clusters, projection, gating.

    Subclasses implement `_aggregate(x, a, count)` (float32 `[B, N, D]` descriptors with
    padding zeroed, float32 `[B, N, K]` assignments zero on padding, float32 `[B, 1]` number
    of real descriptors) returning float32 `[B, width]`, and `_pooled_width(dim)`. They may
    set `uses_centers = True` to get learned centres `centers` `[K, D]`.

    Args:
        num_clusters: int > 0. The number `K` of clusters kept in the output.
        ghost_clusters: int >= 0. Extra clusters that take part in the soft assignment
            and are dropped from the output (GhostVLAD). Defaults to `0`.
        output_dim: int or `None`. If set, a learned linear projection (kernel and bias)
            of the pooled vector to this width. Defaults to `None`.
        gating: bool. Whether to apply `ContextGating` to the output (after the
            projection, as in LOUPE). Defaults to `False`.
        assignment_initializer: Initializer of the assignment kernel `[D, K + G]`.
            Defaults to `"glorot_uniform"`; the assignment bias starts at zero.
        centers_initializer: Initializer of the centres `[K, D]`, or `None` for a normal
            distribution of standard deviation `1 / sqrt(D)` (as LOUPE).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Raises:
        ValueError: for a non-positive `num_clusters` or `output_dim`, a negative
            `ghost_clusters` or a non-bool `gating`.
    """

    uses_centers = False

    def __init__(
        self,
        num_clusters,
        ghost_clusters=0,
        output_dim=None,
        gating=False,
        assignment_initializer="glorot_uniform",
        centers_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_clusters = check_int("num_clusters", num_clusters, minimum=1)
        self.ghost_clusters = check_int("ghost_clusters", ghost_clusters, minimum=0)
        self.output_dim = None if output_dim is None else check_int("output_dim", output_dim, 1)
        if not isinstance(gating, bool):
            raise ValueError(f"Expected `gating` to be a bool. Received: {gating!r}")
        self.gating = gating
        self.assignment_initializer = keras.initializers.get(assignment_initializer)
        self.centers_initializer = keras.initializers.get(
            centers_initializer
            or keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_out", distribution="untruncated_normal"
            )
        )
        self.context_gating = (
            ContextGating(dtype=self.dtype_policy, name="context_gating") if gating else None
        )
        # The set mask is consumed here (a Keras mask from e.g. `Masking` is read as
        # `mask`); the pooled output carries none (see `compute_mask`).
        self.supports_masking = True

    def _check_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 3 or shape[-1] is None:
            raise ValueError(
                f"{self.name}: expected `inputs` of shape [batch, set, features] with a known "
                f"feature size. Received shape: {shape}"
            )
        if getattr(self, "_dim", None) is not None and shape[-1] != self._dim:
            raise ValueError(
                f"{self.name}: expected descriptors of size {self._dim} (the size the layer "
                f"was built for). Received shape: {shape}"
            )
        return shape[-1]

    def build(self, input_shape):
        dim = self._check_shape(input_shape)
        self._dim = dim
        total = self.num_clusters + self.ghost_clusters
        self.assignment_kernel = self.add_weight(
            name="assignment_kernel",
            shape=(dim, total),
            initializer=self.assignment_initializer,
            dtype="float32",
            autocast=False,
        )
        self.assignment_bias = self.add_weight(
            name="assignment_bias",
            shape=(total,),
            initializer="zeros",
            dtype="float32",
            autocast=False,
        )
        if self.uses_centers:
            self.centers = self.add_weight(
                name="centers",
                shape=(self.num_clusters, dim),
                initializer=self.centers_initializer,
                dtype="float32",
                autocast=False,
            )
        self._build_extra(dim)
        width = self._pooled_width(dim)
        if self.output_dim is not None:
            self.projection_kernel = self.add_weight(
                name="projection_kernel",
                shape=(width, self.output_dim),
                initializer="glorot_uniform",
            )
            self.projection_bias = self.add_weight(
                name="projection_bias", shape=(self.output_dim,), initializer="zeros"
            )
            width = self.output_dim
        if self.context_gating is not None:
            self.context_gating.build((input_shape[0], width))

    def _build_extra(self, dim):
        """Hook for subclass weights (NetFV's scales)."""

    def assignments(self, inputs, mask=None):
        """The soft assignments of every descriptor to the `K` kept clusters.

        Args:
            inputs: float tensor `[B, N, D]`.
            mask: optional `[B, N]` tensor, bool or numeric (non-zero = real descriptor).

        Returns:
            `(x, a, count)`: float32 descriptors `[B, N, D]` with padded rows replaced by
            zeros, float32 assignments `[B, N, K]` (zero on padded rows; summing to 1 over
            the clusters when there are no ghost clusters) and float32 `[B, 1]` numbers of
            real descriptors.
        """
        if not keras.backend.is_float_dtype(inputs.dtype):
            raise TypeError(
                f"{self.name}: expected floating `inputs`. Received dtype: {inputs.dtype}"
            )
        self._check_shape(inputs.shape)
        x = ops.cast(inputs, "float32")
        if mask is None:
            valid = ops.ones(ops.shape(x)[:2], dtype="bool")
        else:
            mask_shape = tuple(mask.shape)
            if len(mask_shape) != 2 or any(
                m is not None and s is not None and m != s
                for m, s in zip(mask_shape, tuple(inputs.shape)[:2], strict=True)
            ):
                raise ValueError(
                    f"{self.name}: expected `mask` of shape [batch, set] = "
                    f"{tuple(inputs.shape)[:2]}. Received shape: {mask_shape}"
                )
            valid = as_bool_mask(mask)
        valid = valid[..., None]
        # `where`, not a product with the mask: 0 * NaN would still be NaN.
        x = ops.where(valid, x, ops.zeros_like(x))
        logits = ops.matmul(x, self.assignment_kernel) + self.assignment_bias
        a = ops.softmax(logits, axis=-1)[..., : self.num_clusters]
        a = ops.where(valid, a, ops.zeros_like(a))
        count = ops.sum(ops.cast(valid, "float32"), axis=1)
        return x, a, count

    def call(self, inputs, mask=None):
        x, a, count = self.assignments(inputs, mask)
        pooled = ops.cast(self._aggregate(x, a, count), self.compute_dtype)
        if self.output_dim is not None:
            pooled = ops.matmul(pooled, self.projection_kernel) + self.projection_bias
        if self.context_gating is not None:
            pooled = self.context_gating(pooled)
        return pooled

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, inputs_shape, mask_shape=None):
        dim = self._check_shape(inputs_shape)
        width = self.output_dim if self.output_dim is not None else self._pooled_width(dim)
        return (inputs_shape[0], width)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_clusters": self.num_clusters,
                "ghost_clusters": self.ghost_clusters,
                "output_dim": self.output_dim,
                "gating": self.gating,
                "assignment_initializer": keras.initializers.serialize(self.assignment_initializer),
                "centers_initializer": keras.initializers.serialize(self.centers_initializer),
            }
        )
        return config
