"""Seeded ways to bound the dimension of Fisher vectors: a coordinate subset, a count sketch.

An AFV has one coordinate per discriminator parameter (hundreds of thousands). Zhai et al.
(NeurIPS 2019) keep a random subset of them; a count sketch (Charikar, Chen &
Farach-Colton, ICALP 2002; Weinberger et al., "Feature Hashing for Large Scale Multitask
Learning", ICML 2009) mixes all of them instead: coordinate `j` goes to bucket `h(j)`
with sign `s(j)`, so `⟨Sx, Sy⟩ = Σ_j x_j y_j + Σ_{i≠j, h(i)=h(j)} s(i) s(j) x_i y_j`,
whose second sum has zero mean over the random signs: inner products are preserved in
expectation. Both are drawn once from a seed with NumPy's PCG64, so they are the same on
every machine and in every process for the same `(size, seed)`.
"""

import numpy as np


def random_subset(full_dim, subset_size, seed):
    """`subset_size` distinct coordinates of `range(full_dim)`, sorted, as int32.

    Raises:
        ValueError: `subset_size` larger than `full_dim`.
    """
    if subset_size > full_dim:
        raise ValueError(
            f"Expected `subset_size` <= {full_dim} (the number of coordinates). "
            f"Received: {subset_size}"
        )
    chosen = np.random.default_rng(seed).choice(full_dim, subset_size, replace=False)
    return np.sort(chosen).astype("int32")


def count_sketch(full_dim, projection_dim, seed):
    """The buckets `h` (int32 `[full_dim]`, uniform in `[0, projection_dim)`) and the
    signs `s` (float32 `[full_dim]`, ±1 with equal probability) of a count sketch."""
    rng = np.random.default_rng(seed)
    buckets = rng.integers(0, projection_dim, full_dim).astype("int32")
    signs = rng.choice(np.array([-1.0, 1.0], "float32"), full_dim)
    return buckets, signs
