"""mmdigits: splits, and each modality checked against its source material."""

import re

import numpy as np
import pytest
import soundfile
from sklearn.datasets import load_digits

from mmrep.data.captions import WORDS, number_forms
from mmrep.data.mmdigits import (
    AUDIO_DIR,
    SPLITS,
    audio_clips,
    load_mmdigits,
    split_indices,
    split_summary,
)

DIGITS = load_digits()


def test_splits_partition_the_images_stratified():
    parts = [split_indices(s) for s in SPLITS]
    everything = np.concatenate(parts)
    assert len(everything) == len(set(everything.tolist())) == len(DIGITS.images) == 1797
    flat = DIGITS.images.reshape(len(DIGITS.images), -1)
    seen = {}
    for split, part in zip(SPLITS, parts, strict=True):
        for row in flat[part]:
            assert seen.setdefault(row.tobytes(), split) == split, "an image appears in two splits"
    summary = split_summary()
    assert [summary[s]["size"] for s in SPLITS] == [len(p) for p in parts]
    for split, fraction in zip(SPLITS, (0.70, 0.15, 0.15), strict=True):
        per_class = np.array(summary[split]["per_class"])
        np.testing.assert_allclose(per_class, fraction * np.bincount(DIGITS.target), atol=1.0)


def test_splits_are_fixed():
    # The published sizes; a change here moves examples between splits for every user.
    assert [len(split_indices(s)) for s in SPLITS] == [1258, 269, 270]


def test_images_are_the_upsampled_digits():
    data = load_mmdigits("validation", modalities=("image",), image_size=32, as_numpy=True)
    images, labels = data["image"], data["label"]
    assert images.shape == (269, 32, 32, 3) and images.dtype == np.uint8
    assert np.all(images[..., 0] == images[..., 2])
    np.testing.assert_array_equal(labels, DIGITS.target[split_indices("validation")])
    # Block means of the 32x32 image recover the 8x8 source (independent of the resampler).
    source = DIGITS.images[split_indices("validation")] / 16.0
    blocks = images[..., 0].reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4)) / 255.0
    assert np.abs(blocks - source).mean() < 0.06  # cubic overshoot is clipped: ~0.045
    assert np.corrcoef(blocks.ravel(), source.ravel())[0, 1] > 0.97


def test_captions_name_their_digit_and_vary():
    data = load_mmdigits("train", modalities=("text",), as_numpy=True)
    captions = [c.decode() for c in data["text"]]
    for caption, label in zip(captions, data["label"], strict=True):
        tokens = set(re.findall(r"[A-Za-z]+|\d", caption.lower()))
        own = {f.lower() for f in number_forms(int(label))}
        others = {w for d, w in enumerate(WORDS) if d != label} | {
            str(d) for d in range(10) if d != label
        }
        assert tokens & own or any(f in caption.lower() for f in own), caption
        assert not tokens & others, f"caption {caption!r} of {label} names another digit"
    for digit in range(10):
        assert len({c for c, y in zip(captions, data["label"], strict=True) if y == digit}) >= 25


def test_audio_is_a_clip_of_its_digit_from_its_split():
    data = load_mmdigits("test", modalities=("audio",), as_numpy=True)
    audio, labels = data["audio"], data["label"]
    assert audio.shape == (270, 16000) and audio.dtype == np.float32
    pools = audio_clips("test")
    for waveform, label in list(zip(audio, labels, strict=True))[:40]:
        nonzero = np.flatnonzero(waveform)
        segment = waveform[nonzero[0] : nonzero[-1] + 1]
        matches = []
        for file in pools[int(label)]:
            clip, _ = soundfile.read(f"{AUDIO_DIR}/{file}", dtype="float32")
            clip = clip[np.flatnonzero(clip)[0] : np.flatnonzero(clip)[-1] + 1]
            matches.append(len(clip) == len(segment) and np.array_equal(clip, segment))
        assert any(matches), f"test audio of digit {label} matches none of its clips"


def test_audio_variants_do_not_cross_splits():
    pools = {s: audio_clips(s) for s in SPLITS}
    for digit in range(10):
        files = [set(pools[s][digit]) for s in SPLITS]
        assert all(files), f"digit {digit} lacks clips in some split"
        assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])


def test_training_augmentation_is_reproducible_and_new_each_pass():
    clean = load_mmdigits("train", modalities=("audio",), augment=False, as_numpy=True)["audio"][
        :16
    ]
    noisy = load_mmdigits("train", modalities=("audio",), seed=0).take(16)
    first = np.stack([e["audio"].numpy() for e in noisy])
    second = np.stack([e["audio"].numpy() for e in noisy])
    again = np.stack(
        [e["audio"].numpy() for e in load_mmdigits("train", modalities=("audio",), seed=0).take(16)]
    )
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, second)
    assert np.all(np.abs(first) <= 1.0)
    # Augmentation placed clips at random offsets; compare waveforms aligned by correlation.
    for x, y in zip(first, clean, strict=True):
        shift = np.argmax(np.correlate(x, y, "full")) - (len(y) - 1)
        aligned = np.roll(y, shift)
        r = np.corrcoef(x, aligned)[0, 1]
        # SNR between 10 and 40 dB inside the clip, plus noise-only padding: clearly noisy,
        # clearly the same clip.
        assert 0.6 < r < 0.99999


def test_video_moves_the_digit_within_the_canvas():
    from mmrep.data.mmdigits import _arrays

    arrays = _arrays("validation", ("video",), 32, 16, 32, 1.0, 0, False)
    video, motions = arrays["video"], arrays["motion"]
    assert video.shape == (269, 16, 32, 32, 3) and video.dtype == np.uint8
    assert set(motions) == {"translate", "rotate", "translate+rotate"}
    ink = video[..., 0].astype("float64")
    mass = ink.sum(axis=(2, 3))
    assert np.all(mass > 0.2 * mass.max(axis=1, keepdims=True)), "a frame lost the digit"
    # Translation and rotation keep the digit's area: ink is nearly constant over time.
    spread = mass.std(axis=1) / mass.mean(axis=1)
    assert np.median(spread) < 0.05
    # Every clip moves, and rotation alone keeps the centre of mass near the canvas centre.
    assert np.all(np.abs(np.diff(ink, axis=1)).sum(axis=(1, 2, 3)) > 0)
    grid = np.arange(32)
    rows = (ink.sum(axis=3) * grid).sum(axis=2) / mass
    cols = (ink.sum(axis=2) * grid).sum(axis=2) / mass
    rotate = motions == "rotate"
    assert np.abs(rows[rotate] - 15.5).max() < 4 and np.abs(cols[rotate] - 15.5).max() < 4
    translate = motions == "translate"
    assert np.median(np.hypot(np.ptp(rows[translate], 1), np.ptp(cols[translate], 1))) > 5


def test_same_seed_same_data_other_seed_other_pairing():
    a = load_mmdigits("test", modalities=("text", "video"), seed=3, as_numpy=True)
    b = load_mmdigits("test", modalities=("text", "video"), seed=3, as_numpy=True)
    c = load_mmdigits("test", modalities=("text", "video"), seed=4, as_numpy=True)
    np.testing.assert_array_equal(a["video"], b["video"])
    np.testing.assert_array_equal(a["text"], b["text"])
    assert not np.array_equal(a["video"], c["video"]) and not np.array_equal(a["text"], c["text"])


def test_dataset_yields_all_modalities():
    example = next(iter(load_mmdigits("validation", image_size=48, video_size=40, video_frames=8)))
    assert set(example) == {"image", "text", "audio", "video", "label"}
    assert example["image"].shape == (48, 48, 3)
    assert example["video"].shape == (8, 40, 40, 3)
    assert example["audio"].shape == (16000,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "dev"}, "split"),
        ({"modalities": ("image", "smell")}, "modalities"),
        ({"image_size": 4}, "image_size"),
        ({"audio_seconds": 0.1}, "audio_seconds"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_mmdigits(**kwargs)
