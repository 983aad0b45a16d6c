"""VGGish's PCA whitening and 8-bit quantisation, as in the AudioSet embedding release."""

import keras
import numpy as np
from keras import ops

from mmrep.utils.arguments import check_int

QUANTIZE_MIN = -2.0
QUANTIZE_MAX = 2.0


@keras.saving.register_keras_serializable(package="mmrep")
class VGGishPostprocess(keras.layers.Layer):
    """PCA-whitens VGGish embeddings and quantises them to 8 bits, as AudioSet released them.

    `pca = pca_eigen_vectors @ (embedding - pca_means)` (the published parameters
    `pca_eigen_vectors` `[128, 128]` and `pca_means` `[128, 1]`), then, with
    `quantize=True`, clipping to [-2, 2] and `trunc((pca + 2) * 255 / 4)`, an integer in
    0..255. Computed in float32 whatever the dtype policy.

    The quantised values are returned as floats (exact in float32, float16 and
    bfloat16), not uint8, so that the layer composes with floating layers; cast with
    `keras.ops.cast(x, "uint8")` to get the released bytes. The quantisation has no
    useful gradient (zero almost everywhere); train on `quantize=False` output.

    The parameters are non-trainable weights, an identity and zeros until set with
    `set_pca_params` or loaded with `load_pca_params` / `from_pretrained`.

    Args:
        quantize: bool. Whether to clip and quantise after the PCA. Defaults to `True`.
        embedding_dim: int. Embedding width. Defaults to `128`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: `[..., embedding_dim]` VGGish embeddings.

    Returns:
        `[..., embedding_dim]` in the compute dtype: whitened embeddings, or integers in
        0..255 with `quantize=True`.

    Example:

    >>> post = VGGishPostprocess()
    >>> post.set_pca_params(np.eye(128), np.zeros(128))
    >>> post(np.full((1, 128), 1.0, "float32")).numpy()[0, :2].tolist()
    [191.0, 191.0]

    Reference:
        Hershey et al., "CNN Architectures for Large-Scale Audio Classification",
        ICASSP 2017; Gemmeke et al., "Audio Set", ICASSP 2017 (the embedding release).
    """

    def __init__(self, quantize=True, embedding_dim=128, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(quantize, bool):
            raise ValueError(f"Expected `quantize` to be a bool. Received: quantize={quantize!r}")
        self.quantize = quantize
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        self.autocast = False

    def build(self, input_shape):
        if input_shape[-1] != self.embedding_dim:
            raise ValueError(
                f"{self.name}: expected embeddings [..., {self.embedding_dim}]. "
                f"Received: shape={tuple(input_shape)}"
            )
        self.pca_eigen_vectors = self.add_weight(
            shape=(self.embedding_dim, self.embedding_dim),
            initializer="identity",
            trainable=False,
            dtype="float32",
            autocast=False,  # read in float32 under mixed precision too
            name="pca_eigen_vectors",
        )
        self.pca_means = self.add_weight(
            shape=(self.embedding_dim,),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            autocast=False,
            name="pca_means",
        )

    def call(self, inputs):
        x = ops.cast(inputs, "float32") - ops.cast(self.pca_means, "float32")
        # (E @ (x^T - m)).T, one row per embedding.
        x = ops.matmul(x, ops.transpose(ops.cast(self.pca_eigen_vectors, "float32")))
        if self.quantize:
            x = ops.clip(x, QUANTIZE_MIN, QUANTIZE_MAX)
            x = ops.floor((x - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def set_pca_params(self, pca_eigen_vectors, pca_means):
        """Sets the PCA matrix `[D, D]` (rows are components) and means `[D]` or `[D, 1]`."""
        dim = self.embedding_dim
        eigen = np.asarray(pca_eigen_vectors, dtype="float64")
        means = np.asarray(pca_means, dtype="float64")
        if eigen.shape != (dim, dim) or means.shape not in ((dim,), (dim, 1), (1, dim)):
            raise ValueError(
                f"{self.name}: expected pca_eigen_vectors [{dim}, {dim}] and pca_means [{dim}] "
                f"or [{dim}, 1]. Received: shapes {eigen.shape} and {means.shape}"
            )
        if not (np.all(np.isfinite(eigen)) and np.all(np.isfinite(means))):
            raise ValueError(f"{self.name}: PCA parameters hold NaN or infinite values")
        if not self.built:
            self.build((None, dim))
        self.pca_eigen_vectors.assign(eigen.astype("float32"))
        self.pca_means.assign(means.reshape(dim).astype("float32"))

    def load_pca_params(self, path, *, allow_pickle=False):
        """Loads `vggish_pca_params.npz`, or a torchvggish `.pth` (needs `allow_pickle`)."""
        from mmrep.encoders.audio.vggish_weights import read_pca_params

        self.set_pca_params(*read_pca_params(path, allow_pickle=allow_pickle))
        return self

    @classmethod
    def from_pretrained(cls, path, *, allow_pickle=False, **kwargs):
        """A `VGGishPostprocess(**kwargs)` with the PCA parameters of `path`."""
        return cls(**kwargs).load_pca_params(path, allow_pickle=allow_pickle)

    def get_config(self):
        config = super().get_config()
        config.update({"quantize": self.quantize, "embedding_dim": self.embedding_dim})
        return config
