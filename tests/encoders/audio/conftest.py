"""Shared VGGish fixtures: published-size random weights, written once per session."""

import pytest

from tests.encoders.audio import checkpoints
from tests.encoders.audio import reference as ref


@pytest.fixture(scope="session")
def published_weights():
    """Random weights with the published VGGish names and shapes (72.1 M parameters)."""
    return ref.random_weights(ref.tf1_shapes(), seed=3)


@pytest.fixture(scope="session")
def published_files(published_weights, tmp_path_factory):
    """`published_weights` as a V1 TF1 checkpoint and a TF Hub-style SavedModel."""
    folder = tmp_path_factory.mktemp("vggish")
    return {
        "tf1": checkpoints.write_tf1_checkpoint(published_weights, folder / "vggish_model.ckpt"),
        "saved_model": checkpoints.write_saved_model(published_weights, folder / "hub_vggish"),
    }
