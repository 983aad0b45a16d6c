"""The "own data" test set of `tests/job/own_data.py`, checked file by file and through
`mmrep.data.from_manifest`: formats, manifests, determinism, and that every modality
shows its class (images and frames the class colour, audio the whole recording).
"""

import csv
import json
import math
import os

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

from mmrep.data import ManifestError, from_manifest
from mmrep.preprocessing import load_audio, load_image, read_video, sample_frames
from tests.job.own_data import CHANNEL, write_own_data

MODALITIES = ("image", "text", "audio", "video")
AUDIO_SECONDS = 2.0
CROP = 32000  # AUDIO_SECONDS at 16 kHz
IMAGE_SIZE = VIDEO_SIZE = 32
VIDEO_FRAMES = 8
LOAD = dict(
    ignore=["source"],
    image_size=IMAGE_SIZE,
    audio_seconds=AUDIO_SECONDS,
    video_size=VIDEO_SIZE,
    video_frames=VIDEO_FRAMES,
    video_sampling="uniform",
)


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return write_own_data(tmp_path_factory.mktemp("own"))


def files(own, sub):
    folder = os.path.join(own["data"], sub)
    return sorted(os.path.join(folder, name) for name in os.listdir(folder))


def samples_at_16k(path):
    """The length a 16 kHz decode of the file has: `ceil(frames * 16000 / rate)`."""
    info = soundfile.info(path)
    return math.ceil(info.frames * 16000 / info.samplerate)


def dominated(pixels, channel, margin=60):
    """Where `channel` exceeds both other channels by `margin`."""
    pixels = pixels.astype(np.int32)
    others = np.delete(pixels, channel, axis=-1).max(axis=-1)
    return pixels[..., channel] - others > margin


def test_images_are_png_and_jpeg_of_several_sizes_and_modes(own):
    opened = {}
    for path in files(own, "images"):
        with Image.open(path) as image:
            opened[os.path.relpath(path, own["data"])] = (image.format, image.size, image.mode)
    assert {f for f, _, _ in opened.values()} == {"PNG", "JPEG"}
    assert len({s for _, s, _ in opened.values()}) >= 3
    assert opened[own["special"]["rgba_png"]][::2] == ("PNG", "RGBA")
    assert opened[own["special"]["grayscale_jpeg"]][::2] == ("JPEG", "L")
    assert sorted(m for _, _, m in opened.values() if m != "RGB") == ["L", "RGBA"]


def test_audio_is_flac_and_wav_at_several_rates(own):
    infos = {os.path.relpath(p, own["data"]): soundfile.info(p) for p in files(own, "audio")}
    assert {i.format for i in infos.values()} == {"FLAC", "WAV"}
    assert {i.samplerate for i in infos.values()} == {16000, 22050, 44100}
    assert [name for name, i in infos.items() if i.channels != 1] == [own["special"]["stereo_wav"]]
    durations = [i.duration for i in infos.values()]
    assert min(durations) < 1.0, "the shipped recordings, copied, are short"
    assert any(1.5 <= d <= AUDIO_SECONDS for d in durations), "padded, shorter than the crop"
    assert any(AUDIO_SECONDS < d <= 3.0 for d in durations), "padded, longer than the crop"


def test_videos_are_short_h264_clips(own):
    for path in files(own, "video"):
        with av.open(path) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264", path
            assert stream.codec_context.pix_fmt == "yuv420p", path
            assert stream.width == stream.height and stream.width in (48, 64), path
            rate = stream.average_rate
            frames = sum(1 for _ in container.decode(stream))
        assert 8 <= rate <= 12 and 1.0 <= frames / rate <= 2.0, (path, rate, frames)


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_manifests_hold_the_rows_returned(own):
    assert own["classes"] == ["red", "green", "blue"]
    assert own["counts"] == {"train": 18, "val": 9, "test": 9}
    for split, path in own["manifests"].items():
        header, rows = read_csv(path)
        assert header == ["image", "text", "audio", "video", "label", "source"]
        assert len(rows) == own["counts"][split]
        assert [r["label"] for r in rows] == own["labels"][split]
        for k, (row, cells) in enumerate(zip(rows, own["rows"][split], strict=True)):
            assert row == {c: "" if v is None else v for c, v in cells.items()}
            empty = tuple(m for m in MODALITIES if not row[m])
            assert empty == own["missing"][split].get(k, ()), (split, k)
            assert len(empty) < len(MODALITIES)
            for m in ("image", "audio", "video"):
                if row[m]:
                    assert os.path.isfile(os.path.join(own["data"], row[m])), row[m]
        assert own["missing"][split], f"{split}: some row should miss a modality"
        for label in own["classes"]:
            assert own["labels"][split].count(label) == own["counts"][split] // 3
    _, test_rows = read_csv(own["manifests"]["test"])
    with open(own["jsonl"]["test"], encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [{c: r.get(c) or "" for c in test_rows[0]} for r in records] == test_rows
    assert any(None in r.values() for r in records), "a missing modality as null"
    assert any(len(r) < 6 for r in records), "a missing modality as an absent key"


def test_captions_name_the_colour_and_hold_unicode(own):
    rows = [r for split in own["rows"].values() for r in split if r["text"]]
    named = [r for r in rows if r["label"] in r["text"].lower()]
    assert len(named) > len(rows) / 2
    assert not all(r["text"].isascii() for r in rows)


def tree(folder):
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def test_same_seed_writes_the_same_bytes(own, tmp_path):
    """Every file byte for byte, but the MP4s: x264 here now and then encodes the same frames
    (checked equal) to other bytes, so clips are compared by their decoded frames."""
    again = write_own_data(tmp_path / "again")
    first, second = tree(own["root"]), tree(again["root"])
    assert sorted(first) == sorted(second)
    clips = [name for name in first if name.endswith(".mp4")]
    assert clips and all(first[n] == second[n] for n in first if n not in clips)
    for name in clips:
        a, _ = read_video(os.path.join(own["root"], name))
        b, _ = read_video(os.path.join(again["root"], name))
        assert a.shape == b.shape, name
        assert np.abs(a.astype(int) - b).mean() < 3.0, name  # re-encoding: ~1.5
    other = write_own_data(tmp_path / "other", seed=1, rows_per_class=(2, 1, 1))
    assert other["counts"] == {"train": 6, "val": 3, "test": 3}
    assert all(other["missing"][split] for split in other["counts"])


def test_rows_per_class_is_checked(tmp_path):
    with pytest.raises(ValueError, match="rows_per_class"):
        write_own_data(tmp_path, rows_per_class=(6, 3))
    with pytest.raises(ValueError, match="at least 1"):
        write_own_data(tmp_path, rows_per_class=(6, 3, 0))


def examples(path):
    return list(from_manifest(path, **LOAD).as_numpy_iterator())


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_from_manifest_reads_every_row_as_written(own, split):
    got = examples(own["manifests"][split])
    rows = own["rows"][split]
    assert len(got) == own["counts"][split]
    assert [e["label"].decode() for e in got] == own["labels"][split]
    for k, (example, row) in enumerate(zip(got, rows, strict=True)):
        where = f"{split} row {k}: {row}"
        assert example["presence"].tolist() == [float(row[m] is not None) for m in MODALITIES]
        channel = CHANNEL[row["label"]]

        image = example["image"]
        assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
        if row["image"] is None:
            assert not image.any(), where
        elif row["image"] == own["special"]["grayscale_jpeg"]:
            assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        else:
            centre = image[12:20, 12:20].reshape(-1, 3).mean(axis=0)
            others = np.delete(centre, channel)
            assert centre[channel] > others.max() + 60, (where, centre)

        assert example["text"].decode() == (row["text"] or ""), where

        audio, length = example["audio"], int(example["audio_length"])
        assert audio.shape == (CROP,) and audio.dtype == np.float32
        if row["audio"] is None:
            assert length == 0 and not audio.any(), where
        else:
            expected = min(samples_at_16k(os.path.join(own["data"], row["audio"])), CROP)
            assert length == expected, where
            assert not audio[length:].any(), where
            assert np.abs(audio[:length]).max() > 0.1, where  # the spoken word is in it

        video, mask = example["video"], example["video_frame_mask"]
        assert video.shape == (VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SIZE, 3)
        assert mask.tolist() == [row["video"] is not None] * VIDEO_FRAMES, where
        if row["video"] is None:
            assert not video.any(), where
        else:
            share = dominated(video, channel).mean(axis=(1, 2))
            assert share.min() > 0.05, (where, share)  # the square, in every frame
            for other in set(range(3)) - {channel}:
                assert dominated(video, other).mean() < 0.01, where


def test_jsonl_gives_the_examples_of_the_csv(own):
    from_csv = examples(own["manifests"]["test"])
    from_jsonl = examples(own["jsonl"]["test"])
    assert len(from_jsonl) == len(from_csv)
    for a, b in zip(from_csv, from_jsonl, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_the_source_column_must_be_ignored(own):
    with pytest.raises(ManifestError, match="source"):
        from_manifest(own["manifests"]["val"])


def test_preprocessing_reads_every_file(own):
    for path in files(own, "images"):
        image = load_image(path)
        with Image.open(path) as original:
            assert image.shape == (original.height, original.width, 3), path
    for path in files(own, "audio"):
        waveform = load_audio(path)
        assert waveform.shape == (samples_at_16k(path),) and np.isfinite(waveform).all(), path
    for path in files(own, "video"):
        frames, times = read_video(path)
        with av.open(path) as container:
            size = container.streams.video[0].width
        assert frames.shape[1:] == (size, size, 3) and len(times) == len(frames), path
        sampled = sample_frames(path, num_frames=VIDEO_FRAMES, strategy="uniform")
        assert sampled.mask.all(), path
