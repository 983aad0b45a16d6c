"""Fisher-vector benchmarks: `FisherVector` against scikit-image's `fisher_vector`.

Same work on both sides: a batch of 16 descriptor sets `[16, N, D]` encoded as improved
Fisher vectors under the same diagonal GMM of K components. mmrep runs one traced
`tf.function` over the batch in float32; scikit-image (float64, as it computes) is
called once per set in a Python loop on a `sklearn.mixture.GaussianMixture` holding the
same parameters (assigned, not fitted, so that setting up the benchmark stays cheap).

The work per set is dominated by four `[N, D] x [D, K]`-sized matrix products (the log
densities need `X² · (1/σ²)ᵀ` and `X · (μ/σ²)ᵀ`; the statistics `γᵀX` and `γᵀX²`),
`8 N K D` floating-point operations in all; `work` reports the GFLOP/s both sides reach.

Run: `python -m tests.benchmarks fisher_vector_vs_skimage_k64 fisher_vector_vs_skimage_k256`.
"""

import time

import numpy as np

from tests.benchmarks.runner import Comparison, benchmark

BATCH = 16
SIZES = {
    "k64": {"full": (64, 64, 1000), "smoke": (4, 8, 50)},
    "k256": {"full": (256, 128, 5000), "smoke": (8, 4, 60)},
}


def _mixture(k, d, seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 5.0))
    means = rng.normal(0, 2, (k, d))
    variances = rng.uniform(0.5, 2.0, (k, d))
    return weights, means, variances


def _sklearn_gmm(weights, means, variances):
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(len(weights), covariance_type="diag")
    gmm.weights_, gmm.means_, gmm.covariances_ = weights, means, variances
    gmm.precisions_cholesky_ = 1.0 / np.sqrt(variances)
    gmm.precisions_ = 1.0 / variances
    gmm.converged_, gmm.n_iter_, gmm.lower_bound_ = True, 0, 0.0
    return gmm


def fisher_comparison(key, size):
    """A `Comparison` of `FisherVector` and scikit-image for the sizes `SIZES[key][size]`."""
    import tensorflow as tf
    from skimage.feature import fisher_vector

    from mmrep.heads import FisherVector

    k, d, n = SIZES[key][size]
    weights, means, variances = _mixture(k, d)
    rng = np.random.default_rng(1)
    centres = rng.integers(0, k, (BATCH, n))
    sets = means[centres] + rng.normal(0, 1, (BATCH, n, d)) * np.sqrt(variances[centres])

    layer = FisherVector(k)
    layer.set_gmm(weights, means, variances)
    batch = tf.constant(sets, "float32")
    ours = tf.function(lambda: layer(batch))
    ours()  # trace

    gmm = _sklearn_gmm(weights, means, variances)

    def reference():
        return [fisher_vector(x, gmm) for x in sets]

    flops = 8.0 * n * k * d * BATCH

    def gflops(fn):
        start = time.perf_counter()
        for _ in range(3):
            result = fn()
        if hasattr(result, "numpy"):
            result.numpy()
        return flops * 3 / (time.perf_counter() - start) / 1e9

    return Comparison(
        mmrep=ours,
        reference=reference,
        reference_name="skimage.feature.fisher_vector (float64), looped over the batch",
        work=(
            f"batch {BATCH}, K={k}, D={d}, N={n}, improved; {flops / 1e9:.2f} GFLOP "
            f"(8NKD per set); ~{gflops(ours):.1f} GFLOP/s mmrep, "
            f"~{gflops(reference):.1f} GFLOP/s skimage (3 calls each, before timing)"
        ),
        items=BATCH,
    )


@benchmark("fisher_vector_vs_skimage_k64")
def fisher_k64(size="full"):
    """FisherVector vs skimage fisher_vector, K=64, D=64, N=1000, batch of 16."""
    return fisher_comparison("k64", size)


@benchmark("fisher_vector_vs_skimage_k256")
def fisher_k256(size="full"):
    """FisherVector vs skimage fisher_vector, K=256, D=128, N=5000, batch of 16."""
    return fisher_comparison("k256", size)
