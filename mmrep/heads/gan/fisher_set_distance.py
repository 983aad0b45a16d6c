"""The Fisher distance and similarity between two sets of Adversarial Fisher Vectors.

Zhai et al. (NeurIPS 2019) compare two sets of examples by the Euclidean
distance between their mean Fisher vectors, `d(A, B) = ||mean_a V_a − mean_b V_b||`, and
monitor GAN training with it. The authors' code (apple/ml-afv, `utils.fisher_sim`) reports
the similarity `exp(−10 · mean_p((mean_real_p − mean_fake_p)² / (var_p + 1e-12)))` of raw
scores, which for Fisher-normalised vectors (`V = U / sqrt(var)`) is `exp(−10 · d² / P)`,
`P` the dimension; `fisher_similarity` computes that, with the 10 as `scale`.

The sets are NumPy-sized arrays of features already computed, so the math is float64
NumPy (exact to round-off, no tracing), and the results are Python floats.

The module is not named `fisher_distance`: `mmrep.heads` exports the function lazily
under that name, and a submodule of the same name would shadow it once imported.
"""

import numpy as np
from keras import ops


def fisher_distance(afv_a, afv_b):
    """Euclidean distance between the mean AFVs of two sets.

    Symmetric, zero for identical sets (or any two sets with the same mean).

    Args:
        afv_a: array-like or tensor `[Na, P]`, the AFVs of the first set.
        afv_b: array-like or tensor `[Nb, P]`, the AFVs of the second set.

    Returns:
        float. `||mean(afv_a, axis=0) − mean(afv_b, axis=0)||₂`, in float64.

    Raises:
        ValueError: a set not 2-D, empty, with NaN/Inf, or of another `P` than the other.

    Example:

    >>> fisher_distance([[0.0, 0.0], [2.0, 0.0]], [[1.0, 3.0]])
    3.0

    Reference:
        Zhai, Talbott, Guestrin & Susskind, "Adversarial Fisher Vectors for Unsupervised
        Representation Learning", NeurIPS 2019.
    """
    a, b = _as_sets(afv_a, afv_b)
    return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)))


def fisher_similarity(afv_a, afv_b, scale=10.0):
    """`exp(−scale · d² / P)`, the Fisher similarity of the authors' code, in (0, 1].

    `d` is `fisher_distance(afv_a, afv_b)` and `P` the AFV dimension: with `scale=10`
    this is `utils.fisher_sim` of apple/ml-afv for Fisher-normalised vectors. 1 for
    identical sets, decreasing as the mean AFVs move apart.

    Args:
        afv_a: array-like or tensor `[Na, P]`.
        afv_b: array-like or tensor `[Nb, P]`.
        scale: positive float. Defaults to `10.0`, the authors' value.

    Returns:
        float in (0, 1] (it underflows to 0.0 only for enormous distances).

    Raises:
        ValueError: as `fisher_distance`; `scale` not a positive finite number.

    Example:

    >>> fisher_similarity([[1.0, 2.0]], [[1.0, 2.0]])
    1.0
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < np.inf:
        raise ValueError(f"Expected `scale` to be a positive finite number. Received: {scale!r}")
    a, b = _as_sets(afv_a, afv_b)
    d2 = float(np.sum(np.square(a.mean(axis=0) - b.mean(axis=0))))
    return float(np.exp(-scale * d2 / a.shape[1]))


def _as_sets(afv_a, afv_b):
    a, b = _as_set(afv_a, "afv_a"), _as_set(afv_b, "afv_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            "Expected AFVs of the same dimension P. Received: afv_a of shape "
            f"{a.shape} and afv_b of shape {b.shape}"
        )
    return a, b


def _as_set(afv, name):
    x = np.asarray(ops.convert_to_numpy(afv) if hasattr(afv, "shape") else afv)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"Expected `{name}` to be numeric. Received dtype: {x.dtype}")
    x = x.astype("float64")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"Expected `{name}` to be a non-empty set of AFVs of shape [N, P]. "
            f"Received shape: {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"Expected `{name}` to be finite. Received NaN or Inf values")
    return x
