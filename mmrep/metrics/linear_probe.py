"""Linear-probe accuracy: how linearly separable the classes are in a representation.

The standard evaluation of unsupervised representations (e.g. Chen et al., "A Simple
Framework for Contrastive Learning of Visual Representations", ICML 2020, section 4): the
encoder is frozen, a multinomial logistic regression is trained on the training split's
features and its accuracy on the test split is reported. Features are standardised with the
training split's statistics first, so that the regularisation weighs every feature alike.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def linear_probe_accuracy(
    train_features, train_labels, test_features, test_labels, *, C=1.0, max_iter=2000
):
    """Trains a logistic-regression probe on train features, returns its test accuracy.

    Args:
        train_features: array `[N, F]`. Frozen features of the training split.
        train_labels: int array `[N]`.
        test_features: array `[M, F]`.
        test_labels: int array `[M]`.
        C: float. Inverse L2 regularisation strength (scikit-learn's). Defaults to `1.0`.
        max_iter: int. L-BFGS iterations. Defaults to `2000`.

    Returns:
        float: the fraction of test examples the probe classifies correctly.

    Raises:
        ValueError: for features that are not 2-D, disagree in width, hold non-finite
            values, or labels that do not match the number of rows.

    Example:

    >>> x = np.concatenate([np.zeros((5, 2)), np.ones((5, 2))])
    >>> y = np.array([0] * 5 + [1] * 5)
    >>> linear_probe_accuracy(x, y, x, y)
    1.0
    """
    splits = {}
    for split, features, labels in (
        ("train", train_features, train_labels),
        ("test", test_features, test_labels),
    ):
        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels)
        if features.ndim != 2 or labels.shape != (features.shape[0],):
            raise ValueError(
                f"Expected {split} features [N, F] and labels [N]. Received shapes: "
                f"features={features.shape}, labels={labels.shape}"
            )
        if not np.all(np.isfinite(features)):
            raise ValueError(f"Expected finite {split} features. Received NaN or inf values")
        splits[split] = (features, labels)
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            "Expected train and test features of the same width. "
            f"Received: {train_x.shape[1]} and {test_x.shape[1]}"
        )
    scaler = StandardScaler().fit(train_x)
    probe = LogisticRegression(C=C, max_iter=max_iter)
    probe.fit(scaler.transform(train_x), train_y)
    return float(np.mean(probe.predict(scaler.transform(test_x)) == test_y))
