"""mmdigits written as PNG / FLAC / MP4 files reads back through the manifest loader."""

import csv

import numpy as np

from mmrep.data import export_mmdigits, from_manifest, load_mmdigits


def test_export_round_trips_through_from_manifest(tmp_path):
    path = export_mmdigits(str(tmp_path), "validation", limit=6, progress=False, video_frames=8)
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == [f"image/{i:05d}.png" for i in range(6)]
    assert all((tmp_path / r["video"]).stat().st_size > 0 for r in rows)

    original = load_mmdigits("validation", augment=False, video_frames=8, as_numpy=True)
    loaded = list(
        from_manifest(path, image_size=32, audio_seconds=1.0, video_size=32, video_frames=8)
    )
    assert len(loaded) == 6
    for i, example in enumerate(loaded):
        np.testing.assert_array_equal(example["image"], original["image"][i])  # PNG: lossless
        assert example["text"].numpy() == original["text"][i]
        assert int(example["label"]) == original["label"][i]
        # FLAC stores 16-bit PCM: within one quantisation step.
        np.testing.assert_allclose(example["audio"], original["audio"][i], atol=1.0 / 32768 + 1e-7)
        # H.264 at CRF 10: a few grey levels on average.
        error = np.abs(example["video"].numpy().astype(float) - original["video"][i]).mean()
        assert error < 3.0, error
        np.testing.assert_array_equal(example["presence"], [1, 1, 1, 1])
