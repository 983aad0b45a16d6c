"""Diagonal-GMM EM benchmark: `fit_diagonal_gmm` against sklearn's `GaussianMixture.fit`.

Same data (a synthetic overlapping mixture, float32 rows), same K, `max_iter`/`tol` and
variance floor (`reg_covar`). The two fits stop after different numbers of iterations (their
initialisations differ: k-means++ and Lloyd on a 20k-row sample here, sklearn's full KMeans
there), so besides the whole fit the work column reports the time of one EM iteration alone,
measured as `(t(12 iterations) - t(2 iterations)) / 10` with `tol=0` (nothing converges),
which removes the initialisation from both.

Run: `python -m tests.benchmarks gmm_adapt_vs_sklearn --repeats 3 --warmup 1` (a full-size
fit takes seconds: the default 20 repeats take long).
"""

import time

import numpy as np

from tests.benchmarks.runner import Comparison, benchmark

SIZES = {
    "full": {"rows": 100_000, "dim": 64, "components": 64},
    "smoke": {"rows": 300, "dim": 4, "components": 3},
}
MAX_ITER, TOL, FLOOR = 100, 1e-3, 1e-6


def _data(rows, dim, components):
    rng = np.random.default_rng(0)
    means = rng.normal(0.0, 2.0, (components, dim))
    stds = rng.uniform(0.5, 1.5, (components, dim))
    labels = rng.integers(components, size=rows)
    return (means[labels] + stds[labels] * rng.standard_normal((rows, dim))).astype(np.float32)


def _seconds(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@benchmark("gmm_adapt_vs_sklearn")
def gmm_adapt_vs_sklearn(size="full"):
    """fit_diagonal_gmm vs sklearn GaussianMixture(covariance_type='diag').fit, same data."""
    from sklearn.mixture import GaussianMixture

    from mmrep.heads import fit_diagonal_gmm

    s = SIZES[size]
    data, k = _data(s["rows"], s["dim"], s["components"]), s["components"]

    def ours(max_iterations=MAX_ITER, tolerance=TOL):
        return fit_diagonal_gmm(
            data, k, max_iterations=max_iterations, tolerance=tolerance,
            variance_floor=FLOOR, seed=0, progress=False,
        )  # fmt: skip

    def reference(max_iterations=MAX_ITER, tolerance=TOL):
        return GaussianMixture(
            k, covariance_type="diag", reg_covar=FLOOR, max_iter=max_iterations, tol=tolerance,
            n_init=1, random_state=0,
        ).fit(data)  # fmt: skip

    t_ours, fit = _seconds(ours)
    t_ref, gmm = _seconds(reference)
    per_iteration = []
    for fn in (ours, reference):
        short, _ = _seconds(lambda fn=fn: fn(2, 0.0))
        long, _ = _seconds(lambda fn=fn: fn(12, 0.0))
        per_iteration.append((long - short) / 10 * 1e3)
    return Comparison(
        mmrep=ours,
        reference=reference,
        reference_name="sklearn GaussianMixture(covariance_type='diag', n_init=1).fit",
        work=(
            f"N={s['rows']}, D={s['dim']}, K={k}, max_iter={MAX_ITER}, tol={TOL}; "
            f"iterations {fit.iterations} vs {gmm.n_iter_}; one EM iteration "
            f"{per_iteration[0]:.1f} ms vs {per_iteration[1]:.1f} ms "
            f"({per_iteration[0] / per_iteration[1]:.2f}x); mean log-likelihood "
            f"{fit.log_likelihood:.4f} vs {gmm.score(data):.4f}; first fits {t_ours:.2f} s "
            f"vs {t_ref:.2f} s"
        ),
        items=s["rows"],
    )
