"""Diagonal-covariance Gaussian-mixture EM in TensorFlow, streamed over a `tf.data` pipeline.

`fit_diagonal_gmm` fits the mixture a `FisherVector` layer needs (Perronnin & Dance 2007;
Sánchez et al., "Image Classification with the Fisher Vector", IJCV 2013) on descriptors
that need not fit in memory. Every pass over the data is a `Dataset.reduce` inside one
`tf.function` that accumulates the sufficient statistics `Σγ`, `Σγx`, `Σγx²` and the
log-likelihood per batch (E-step with `component_log_densities` and a log-sum-exp in
float32, or float64 on request; batch sums added up in float64); the M-step is float64 numpy on those `K x D` statistics
(Dempster, Laird & Rubin 1977). In-memory arrays are batched into the same pipeline.

A first pass checks the data and draws the k-means++ sample (Arthur & Vassilvitskii,
"k-means++: The Advantages of Careful Seeding", SODA 2007), a uniform random sample of the
real rows: each row gets a uniform key from the seeded generator, in stream order, and the
rows with the smallest keys are kept (a reservoir), so the sample does not depend on how the
rows are batched or padded.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from mmrep.heads.gmm.mixture import check_gmm, component_log_densities
from mmrep.utils.arguments import check_int

# A component with less total responsibility (in rows) keeps its previous mean and variance.
EMPTY_COMPONENT_ROWS = 1e-6
# Added to every count before the weights are taken (as sklearn): no weight is exactly zero.
_COUNT_EPSILON = 10 * np.finfo(np.float64).eps
_LLOYD_ITERATIONS = 20
_ARRAY_BATCH_SIZE = 8192


@dataclasses.dataclass
class GMMFit:
    """A fitted diagonal Gaussian mixture and how the fit went.

    Attributes:
        weights: float64 array `[K]`, positive, summing to 1.
        means: float64 array `[K, D]`.
        variances: float64 array `[K, D]`, each including the variance floor.
        log_likelihood: float. Mean per-row log-likelihood of the data under the returned
            parameters (what sklearn's `GaussianMixture.score` reports).
        history: list of float. The mean log-likelihood before each M-step, then that of
            the returned parameters (its last entry is `log_likelihood`).
        iterations: int. Number of M-steps taken.
        converged: bool. Whether the last change of the log-likelihood was < `tolerance`.
    """

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    log_likelihood: float
    history: list
    iterations: int
    converged: bool


def fit_diagonal_gmm(
    data,
    num_components,
    *,
    max_iterations=100,
    tolerance=1e-3,
    variance_floor=1e-6,
    seed=None,
    init="kmeans++",
    init_sample_size=20_000,
    batch_size=None,
    dtype="float32",
    progress=True,
):
    """Fits a diagonal-covariance Gaussian mixture by EM, streaming over the data.

    Each EM iteration is one pass over the data. The variances of every M-step (and of the
    initialisation) are the maximum-likelihood variances plus `variance_floor`, exactly
    as sklearn adds `reg_covar`, so `GaussianMixture(covariance_type="diag",
    reg_covar=variance_floor)` fits the same model. A component left with less than
    `EMPTY_COMPONENT_ROWS` of total responsibility keeps its previous mean and variance;
    its weight is its count plus `10 * eps` (as sklearn), so it stays positive.

    The loop computes the mean log-likelihood `L` of the current parameters in each pass;
    it stops when `|L - L_previous| < tolerance` (sklearn's `tol` rule) and returns the
    parameters that `L` was computed for, or after `max_iterations` M-steps and one last
    pass that scores the final parameters. So `log_likelihood` is always exactly the
    score of the returned mixture.

    Args:
        data: the rows to fit. A numpy array `[..., D]` (all axes but the last are rows),
            or a finite `tf.data.Dataset` whose elements are tensors `[..., D]` or pairs
            `(descriptors [..., D], mask [...])`, where rows with mask 0 are ignored (their
            values may be NaN). A dataset must yield the same rows on every pass (the order
            may change); batch it yourself, each element is processed as one batch.
        num_components: int. K, the number of mixture components.
        max_iterations: int. The most M-steps. Defaults to `100`.
        tolerance: float. Convergence threshold on the change of the mean per-row
            log-likelihood. Defaults to `1e-3` (sklearn's `tol`).
        variance_floor: float. Non-negative; added to every variance (sklearn's
            `reg_covar`). Defaults to `1e-6`.
        seed: int or `None`. Seeds the sample and the k-means++ initialisation.
        init: `"kmeans++"` (greedy k-means++ seeding, up to 20 Lloyd iterations on the
            sample, then, as sklearn does from k-means labels, the weights, means and
            variances plus the floor of the hard assignment), or a tuple `(weights [K],
            means [K, D], variances [K, D])` to start EM from.
        init_sample_size: int. The most rows (a uniform random sample of the real rows)
            the k-means++ initialisation sees. Defaults to `20_000`.
        batch_size: int or `None`. Rows per batch for a numpy `data` (default 8192). Not
            accepted with a dataset, which is consumed in its own batches.
        dtype: `"float32"` (default: `component_log_densities`, fast) or `"float64"` for
            the E-step and the batch statistics. Float32 loses the log-density of a row
            when a variance is tiny next to the squared values (a feature constant within
            a component, its variance at the floor: e.g. raw image pixels); use float64
            there, at roughly twice the time.
        progress: bool. Whether to show a progress bar over the iterations with the mean
            log-likelihood. Defaults to `True`.

    Returns:
        A `GMMFit`.

    Raises:
        ValueError: a bad argument (`num_components` not a positive int, ...); `data` of
            rank < 2; a mask not of the descriptors' shape without the last axis; D
            differing between batches; NaN or inf in real rows (naming how many); an
            empty dataset; fewer real rows than `num_components`.
        TypeError: `data` neither an array nor a `tf.data.Dataset` of tensors or pairs.

    Example:

    >>> rows = np.random.default_rng(0).normal(size=(1000, 4))
    >>> fit = fit_diagonal_gmm(rows, 3, seed=0, progress=False)
    >>> fit.means.shape, fit.converged
    ((3, 4), True)
    """
    num_components, max_iterations, init_sample_size = _check_arguments(
        num_components, max_iterations, tolerance, variance_floor, init_sample_size
    )
    if dtype not in ("float32", "float64"):
        raise ValueError(f"Expected `dtype` 'float32' or 'float64'. Received: dtype={dtype!r}")
    if not (init == "kmeans++" or (isinstance(init, (tuple, list)) and len(init) == 3)):
        raise ValueError(
            "Expected `init` to be 'kmeans++' or a tuple (weights, means, variances). "
            f"Received: init={init!r}"
        )
    dataset = _as_dataset(data, batch_size)
    count, dim, sample, rng = _scan(dataset, num_components, init_sample_size, seed)
    # The statistics (not the E-step) are taken about the sample mean, so that the variance
    # Σγx²/Σγ - mean² cancels less; the E-step sees the rows as they are, which keeps
    # exact values exact (a feature constant at 0 in a component, with a floored variance).
    shift = sample.mean(axis=0)
    if isinstance(init, str):
        weights, means, variances = _kmeans_init(sample, num_components, variance_floor, rng)
    else:
        weights, means, variances = check_gmm(*init, num_components=num_components, dim=dim)
    accumulate = _accumulator(dataset, dim, dtype)
    bar = progress and keras.utils.Progbar(
        max_iterations + 1, unit_name="pass", stateful_metrics=["log_likelihood"]
    )
    history, iterations, converged = [], 0, False
    while True:
        stats = accumulate(*(tf.constant(a, dtype) for a in (weights, means, variances, shift)))
        nk, sx, sxx, total = (s.numpy() for s in stats)
        history.append(float(total / count))
        if bar:
            bar.update(len(history), values=[("log_likelihood", history[-1])])
        if len(history) > 1 and abs(history[-1] - history[-2]) < tolerance:
            converged = True
            break
        if iterations == max_iterations:
            break
        weights, means, variances = _m_step(nk, sx, sxx, shift, variance_floor, (means, variances))
        iterations += 1
    if bar:
        bar.update(len(history), values=[("log_likelihood", history[-1])], finalize=True)
    return GMMFit(weights, means, variances, history[-1], history, iterations, converged)


def _check_arguments(k, max_iterations, tolerance, variance_floor, init_sample_size):
    """Checks the arguments; returns the three counts as Python ints."""
    k = check_int("num_components", k, minimum=1)
    max_iterations = check_int("max_iterations", max_iterations, minimum=0)
    init_sample_size = check_int("init_sample_size", init_sample_size, minimum=1)
    if init_sample_size < k:
        raise ValueError(
            f"Expected `init_sample_size` >= num_components={k}. "
            f"Received: init_sample_size={init_sample_size}"
        )
    for name, value in (("tolerance", tolerance), ("variance_floor", variance_floor)):
        if not np.isscalar(value) or not np.isfinite(value) or value < 0:
            raise ValueError(
                f"Expected `{name}` to be a finite number >= 0. Received: {name}={value!r}"
            )
    return k, max_iterations, init_sample_size


def _as_dataset(data, batch_size):
    """`data` as a dataset of `(descriptors, mask)` pairs, mask float32 (nonzero = real)."""
    if isinstance(data, tf.data.Dataset):
        if batch_size is not None:
            raise ValueError(
                "Expected `batch_size=None` with a tf.data.Dataset (batch the dataset "
                f"itself). Received: batch_size={batch_size!r}"
            )
        spec = data.element_spec
        if isinstance(spec, tf.TensorSpec):
            return data.map(lambda x: (x, tf.ones(tf.shape(x)[:-1], tf.float32)))
        if (
            isinstance(spec, (tuple, list))
            and len(spec) == 2
            and all(isinstance(s, tf.TensorSpec) for s in spec)
        ):
            return data.map(lambda x, mask: (x, tf.cast(tf.not_equal(mask, 0), tf.float32)))
        raise TypeError(
            "Expected `data` elements to be a tensor [..., D] or a pair (descriptors "
            f"[..., D], mask [...]). Received element_spec: {spec}"
        )
    if batch_size is None:
        batch_size = _ARRAY_BATCH_SIZE
    batch_size = check_int("batch_size", batch_size, minimum=1)
    try:
        array = np.asarray(data)
    except (TypeError, ValueError) as error:
        raise TypeError(f"Expected `data` to be an array or a tf.data.Dataset: {error}") from None
    if array.dtype.kind not in "fiub":
        raise TypeError(
            "Expected `data` to be a numeric array or a tf.data.Dataset. "
            f"Received: {type(data).__name__} of dtype {array.dtype}"
        )
    if array.ndim < 2:
        raise ValueError(
            f"Expected `data` of rank >= 2 (rows [..., D]). Received shape: {array.shape}"
        )
    rows = array.reshape(-1, array.shape[-1]).astype(np.float32, copy=False)
    mask = np.ones(rows.shape[0], np.float32)
    return tf.data.Dataset.from_tensor_slices((rows, mask)).batch(batch_size)


def _scan(dataset, k, sample_size, seed):
    """One pass: validates every batch and draws the uniform sample of real rows.

    Returns:
        `(count, dim, sample [n, D] float64, rng)`; `rng` continues after the sample keys.
    """
    rng = np.random.default_rng(seed)
    dim, count, bad, batches = None, 0, 0, 0
    pool_rows, pool_keys, pooled, threshold = [], [], 0, np.inf
    for x, mask in dataset.as_numpy_iterator():
        batches += 1
        if x.ndim < 1 or x.shape[:-1] != mask.shape or x.shape[-1] != (dim or x.shape[-1]):
            raise ValueError(
                f"Expected descriptors [..., D{'=' + str(dim) if dim else ''}] (D as in the "
                "first batch) and a mask of their shape without the last axis. Received in "
                f"batch {batches}: descriptors {x.shape}, mask {mask.shape}"
            )
        dim = x.shape[-1]
        rows = x.reshape(-1, dim)[mask.reshape(-1) != 0]
        finite = np.all(np.isfinite(rows), axis=1)
        bad += int(rows.shape[0] - finite.sum())
        rows = rows[finite]
        count += rows.shape[0]
        # Random keys in stream order; the rows with the `sample_size` smallest keys are a
        # uniform sample. Only keys under the current threshold can still enter.
        keys = rng.random(rows.shape[0])
        enter = keys < threshold
        pool_rows.append(rows[enter])
        pool_keys.append(keys[enter])
        pooled += int(enter.sum())
        if pooled > 2 * sample_size:
            pool_rows, pool_keys = _smallest(pool_rows, pool_keys, sample_size)
            pooled, threshold = sample_size, pool_keys[0][-1]
    if batches == 0:
        raise ValueError("Expected a non-empty `data` dataset. Received: a dataset with no batches")
    if bad:
        raise ValueError(
            f"Expected finite descriptors in the real (unmasked) rows of `data`. Received "
            f"{bad} row(s) with NaN or inf (mask them out or clean them)"
        )
    if count < k:
        raise ValueError(
            f"Expected at least num_components={k} real rows in `data`. Received: {count}"
        )
    sample = _smallest(pool_rows, pool_keys, sample_size)[0][0]
    return count, dim, sample.astype(np.float64), rng


def _smallest(rows, keys, n):
    """The `n` rows with the smallest keys, in key order, as one-element lists."""
    rows, keys = np.concatenate(rows), np.concatenate(keys)
    order = np.argsort(keys, kind="stable")[:n]
    return [rows[order]], [keys[order]]


def _kmeans_init(sample, k, floor, rng):
    """k-means++ seeding (greedy, 2 + log k trials) and Lloyd iterations on `sample`."""
    n = sample.shape[0]
    norms = np.sum(sample**2, axis=1)

    def sq_dist(centres):
        d = norms[:, None] - 2.0 * sample @ centres.T + np.sum(centres**2, axis=1)
        return np.maximum(d, 0.0)

    trials = 2 + int(np.log(k))
    chosen = [rng.integers(n)]
    closest = sq_dist(sample[chosen])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct rows than components: any row will do
            candidates = rng.integers(n, size=trials)
        else:
            candidates = np.searchsorted(np.cumsum(closest), rng.random(trials) * total)
            candidates = np.minimum(candidates, n - 1)
        # Greedy k-means++ (as sklearn): keep the candidate that lowers the potential most.
        updated = np.minimum(closest[:, None], sq_dist(sample[candidates]))
        best = int(np.argmin(updated.sum(axis=0)))
        chosen.append(candidates[best])
        closest = updated[:, best]
    centres = sample[chosen].copy()
    for _ in range(_LLOYD_ITERATIONS + 1):  # the last pass only assigns
        labels = np.argmin(sq_dist(centres), axis=1)
        onehot = (labels[:, None] == np.arange(k)).astype(np.float64)
        counts, filled = onehot.sum(axis=0), onehot.any(axis=0)
        means = onehot.T @ sample / np.maximum(counts, 1.0)[:, None]
        if np.allclose(means[filled], centres[filled], rtol=0.0, atol=0.0):
            break
        centres[filled] = means[filled]
    variances = onehot.T @ sample**2 / np.maximum(counts, 1.0)[:, None] - means**2
    # An empty cluster keeps its centre, takes the sample's variances and one row's weight.
    means[~filled], variances[~filled] = centres[~filled], sample.var(axis=0)
    counts = np.maximum(counts, 1.0)
    return counts / counts.sum(), means, np.maximum(variances, 0.0) + floor


def _accumulator(dataset, dim, dtype):
    """A function of the mixture returning float64 `(Σγ [K], Σγx [K,D], Σγx² [K,D], Σ log p)`.

    One traced step per batch, summed in a Python loop: inside `Dataset.reduce` the ops
    ran on one thread (an EM pass took 1.3x as long on two cores)."""

    @tf.function(reduce_retracing=True)  # batches of a stream may differ in size
    def batch_statistics(x, mask, weights, means, variances, shift):
        valid = tf.reshape(mask, [-1]) > 0
        x = tf.reshape(tf.cast(x, dtype), [-1, dim])
        # Masked rows (even NaN) are replaced before any arithmetic touches them.
        x = tf.where(valid[:, None], x, tf.zeros_like(x))
        centred = x - shift
        log_joint = component_log_densities(x, weights, means, variances, dtype)
        log_norm = tf.reduce_logsumexp(log_joint, axis=1)
        gamma = tf.exp(log_joint - log_norm[:, None])
        gamma = tf.where(valid[:, None], gamma, tf.zeros_like(gamma))
        batch = (
            tf.reduce_sum(gamma, axis=0),
            tf.matmul(gamma, centred, transpose_a=True),
            tf.matmul(gamma, tf.square(centred), transpose_a=True),
            tf.reduce_sum(tf.where(valid, log_norm, tf.zeros_like(log_norm))),
        )
        return tuple(tf.cast(b, tf.float64) for b in batch)

    def accumulate(weights, means, variances, shift):
        totals = None
        for x, mask in dataset:
            batch = batch_statistics(x, mask, weights, means, variances, shift)
            totals = (
                batch
                if totals is None
                else tuple(t + b for t, b in zip(totals, batch, strict=True))
            )
        return totals

    return accumulate


def _m_step(nk, sx, sxx, shift, floor, previous):
    """Float64 M-step from statistics accumulated about `shift`."""
    counts = nk + _COUNT_EPSILON
    weights = counts / counts.sum()
    centred_means = sx / counts[:, None]
    variances = np.maximum(sxx / counts[:, None] - centred_means**2, 0.0) + floor
    means = centred_means + shift
    empty = nk < EMPTY_COMPONENT_ROWS
    means[empty], variances[empty] = previous[0][empty], previous[1][empty]
    return weights, means, variances
