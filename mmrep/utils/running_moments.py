"""Streaming float64 mean and variance of rows, merged batch by batch (Chan et al. 1979).

`AdversarialFisherVector.adapt` needs the per-coordinate mean and variance of the Fisher
scores of many generated samples, one batch of gradients at a time. The textbook
`E[g²] − E[g]²` loses every digit when the mean is large next to the spread; Chan, Golub
& LeVeque's pairwise update merges each batch's own mean and sum of squared deviations
(`M2`) into the running ones instead, in float64:

    δ = mean_b − mean,   mean += δ · n_b / n,   M2 += M2_b + δ² · n_a · n_b / n.
"""

import numpy as np


class RunningMoments:
    """Per-column count, mean and sum of squared deviations of streamed `[n, P]` batches.

    Example:

    >>> moments = RunningMoments()
    >>> moments.update(np.array([[1.0], [2.0]]))
    >>> moments.update(np.array([[3.0]]))
    >>> moments.mean, moments.variance
    (array([2.]), array([0.66666667]))

    Reference:
        Chan, Golub & LeVeque, "Updating Formulae and a Pairwise Algorithm for Computing
        Sample Variances", COMPSTAT 1982 (Stanford report STAN-CS-79-773, 1979).
    """

    def __init__(self):
        self.count = 0
        self.mean = None
        self.m2 = None

    def update(self, rows):
        """Merges a batch `[n, P]` (any float dtype; computed in float64).

        Raises:
            ValueError: rows not 2-D, or of another width than the earlier batches.
        """
        rows = np.asarray(rows, dtype="float64")
        if rows.ndim != 2 or (self.mean is not None and rows.shape[1] != self.mean.shape[0]):
            width = None if self.mean is None else self.mean.shape[0]
            raise ValueError(
                f"Expected a batch of rows [n, P] (P={width}). Received shape: {rows.shape}"
            )
        n = rows.shape[0]
        if n == 0:
            return
        batch_mean = rows.mean(axis=0)
        batch_m2 = np.square(rows - batch_mean).sum(axis=0)
        if self.count == 0:
            self.mean, self.m2 = batch_mean, batch_m2
        else:
            total = self.count + n
            delta = batch_mean - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + batch_m2 + np.square(delta) * (self.count * n / total)
        self.count += n

    @property
    def variance(self):
        """The population variance `M2 / count` (`None` before any row)."""
        return None if self.count == 0 else self.m2 / self.count
