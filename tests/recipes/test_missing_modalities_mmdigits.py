"""recipes/missing_modalities_mmdigits.py: the model learns every modality and ignores
absent ones (their inputs hold misleading values), and survives a `.keras` round trip."""

import numpy as np
import pytest

from tests.recipes import load_recipe


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("missing_modalities_mmdigits.py")


def test_misleading_values_and_presence(recipe):
    features = {
        "image": np.zeros((2, 32, 32, 3), np.uint8),
        "text": np.array(["a one", "a two"], dtype=object),
        "audio": np.zeros((2, 16000), np.float32),
        "video": np.zeros((2, 16, 32, 32, 3), np.uint8),
        "label": np.array([1, 2]),
    }
    fed = recipe.feed(features, {"image", "video"})
    np.testing.assert_array_equal(fed["presence"], [[1, 0, 0, 1]] * 2)
    assert np.isnan(fed["audio"]).all()
    assert list(fed["text"].numpy()) == [b"a handwritten nine"] * 2
    np.testing.assert_array_equal(fed["image"], features["image"])


@pytest.mark.slow
def test_learns_every_modality_and_ignores_absent_ones(recipe, tmp_path, capsys):
    results = recipe.run(epochs=4, save=str(tmp_path / "fusion.keras"))
    assert results["all modalities"] > 0.95
    # Each missing modality's input holds junk (NaN audio, noise pixels, a caption naming
    # the wrong digit): the presence mask keeps it out, so accuracy stays high.
    for m in recipe.MODALITIES:
        assert results[f"{m} missing"] > 0.9, results
    # Not only the captions: the image and audio encoders learn on their own too.
    assert results["image only"] > 0.6 and results["audio only"] > 0.6, results
    assert "identical predictions" in capsys.readouterr().out
