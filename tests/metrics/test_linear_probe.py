"""linear_probe_accuracy: separable and label-free features, standardisation, bad input."""

import numpy as np
import pytest

from mmrep.metrics import linear_probe_accuracy


def _blobs(rng, n, offset):
    labels = rng.integers(0, 3, n)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    features = centres[labels] + rng.normal(0, 0.5, (n, 2)) + offset
    return features, labels


def test_separable_classes_are_found_and_noise_is_at_chance():
    rng = np.random.default_rng(0)
    train = _blobs(rng, 300, 0.0)
    test = _blobs(rng, 300, 0.0)
    assert linear_probe_accuracy(*train, *test) > 0.97
    noise_train = (rng.normal(size=(300, 5)), train[1])
    noise_test = (rng.normal(size=(300, 5)), test[1])
    assert linear_probe_accuracy(*noise_train, *noise_test) < 0.45


def test_accuracy_is_the_fraction_correct():
    # One test example per class moved onto another class's centre: exactly 3 of 30 wrong.
    rng = np.random.default_rng(1)
    train = _blobs(rng, 300, 0.0)
    labels = np.repeat([0, 1, 2], 10)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    features = centres[labels].copy()
    features[[0, 10, 20]] = centres[[1, 2, 0]]
    assert linear_probe_accuracy(*train, features, labels) == pytest.approx(27 / 30)


def test_features_are_standardised_with_train_statistics():
    # Shrinking the feature that separates classes 0 and 1 by 1e-6 would leave it to the L2
    # penalty unstandardised (about 2/3 accuracy); standardised, nothing changes.
    rng = np.random.default_rng(2)
    train, test = _blobs(rng, 200, 0.0), _blobs(rng, 200, 0.0)
    scale = np.array([1e-6, 1.0])
    scaled = linear_probe_accuracy(train[0] * scale, train[1], test[0] * scale, test[1])
    assert scaled == linear_probe_accuracy(*train, *test)


@pytest.mark.parametrize(
    "train_x, train_y, test_x, message",
    [
        (np.zeros((4, 2, 1)), np.zeros(4), np.zeros((4, 2)), "train features"),
        (np.zeros((4, 2)), np.zeros(3), np.zeros((4, 2)), "labels"),
        (np.zeros((4, 2)), np.zeros(4), np.zeros((4, 3)), "same width"),
        (np.full((4, 2), np.nan), np.zeros(4), np.zeros((4, 2)), "finite train"),
    ],
)
def test_bad_input(train_x, train_y, test_x, message):
    with pytest.raises(ValueError, match=message):
        linear_probe_accuracy(train_x, train_y, test_x, np.zeros(len(test_x)))
