"""VaDE on mmdigits images (a small run of recipes/vade_mmdigits.py): the pretrain -> GMM
initialisation -> fine-tune sequence clusters the test split far above chance and the
fine-tuning raises the (Monte Carlo) ELBO on held-out images."""

import numpy as np
import pytest

from mmrep.metrics import clustering_accuracy
from tests.recipes import load_recipe

# The slow tier (--run-slow): convergence on mmdigits.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("vade_mmdigits.py")


@pytest.fixture(scope="module")
def results(recipe):
    return recipe.run(pretrain_epochs=20, epochs=10, hidden_units=(128, 64), batch_size=128, seed=0)


def test_chance_level_of_the_metric(recipe):
    # The reference point of "above chance": random clusters of the test labels score ~0.1.
    _, labels = recipe.load_pixels("test")
    rng = np.random.default_rng(0)
    chance = max(clustering_accuracy(labels, rng.integers(0, 10, len(labels))) for _ in range(5))
    assert chance < 0.2


def test_vade_clusters_digits_far_above_chance(results):
    # Random assignments score < 0.2 (above); k-means on pixels scores ~0.75 on this split.
    accuracy = results["VaDE (argmax responsibilities)"]
    assert accuracy > 0.5, results
    assert accuracy > results["k-means on pixels"] - 0.25, results


def test_fine_tuning_raises_the_test_elbo(results):
    assert results["test -ELBO after fine-tuning"] < results["test -ELBO at init"], results
