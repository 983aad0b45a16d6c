"""Manifests of users' own files: decoding against librosa / PIL, missing modalities, bad rows."""

import csv
import json

import av
import librosa
import numpy as np
import pytest
import soundfile
from PIL import Image

from mmrep.data.manifest import ManifestError, from_manifest

RNG = np.random.default_rng(0)


def write_png(path, size=(20, 30), mode="RGB"):
    pixels = RNG.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return pixels


def write_wav_44k_stereo(path, seconds=0.5):
    t = np.arange(int(44100 * seconds)) / 44100
    stereo = np.stack(
        [0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 1000 * t)], axis=1
    )
    soundfile.write(path, stereo, 44100, subtype="PCM_16")
    return path


def write_mp4(path, frames=6, size=(32, 48)):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            image = np.zeros((*size, 3), np.uint8)
            image[:, 4 * t : 4 * t + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_csv(path, rows, columns):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def files(tmp_path):
    write_png(tmp_path / "a.png")
    write_wav_44k_stereo(tmp_path / "a.wav")
    write_mp4(tmp_path / "a.mp4")
    return tmp_path


def test_decodes_every_modality_and_resamples_like_librosa(files):
    path = write_csv(
        files / "m.csv",
        [
            {
                "image": "a.png",
                "text": "héllo wörld",
                "audio": "a.wav",
                "video": "a.mp4",
                "label": "3",
            }
        ],
        ["image", "text", "audio", "video", "label"],
    )
    (example,) = list(from_manifest(path, image_size=16, video_size=24, video_frames=8))
    assert example["image"].shape == (16, 16, 3) and example["image"].dtype == "uint8"
    assert example["text"].numpy().decode() == "héllo wörld"
    assert int(example["label"]) == 3
    np.testing.assert_array_equal(example["presence"], [1, 1, 1, 1])
    stereo, rate = soundfile.read(files / "a.wav", dtype="float32")
    expected = librosa.resample(
        stereo.mean(axis=1), orig_sr=rate, target_sr=16000, res_type="soxr_hq"
    )
    np.testing.assert_allclose(example["audio"].numpy(), expected, atol=1e-5)
    video = example["video"].numpy()
    assert video.shape == (8, 24, 24, 3)
    assert video[:6].max() > 200 and not video[6:].any(), "6 decoded frames, then zero padding"


def test_missing_modalities_give_placeholders_and_presence(files):
    path = write_csv(
        files / "m.csv",
        [
            {"image": "a.png", "text": "", "audio": ""},
            {"image": "", "text": "only text", "audio": "a.wav"},
        ],
        ["image", "text", "audio"],
    )
    first, second = list(from_manifest(path, image_size=8, audio_seconds=1.0))
    np.testing.assert_array_equal(first["presence"], [1, 0, 0])
    np.testing.assert_array_equal(second["presence"], [0, 1, 1])
    assert not second["image"].numpy().any() and first["text"].numpy() == b""
    assert first["audio"].shape == second["audio"].shape == (16000,)
    assert not first["audio"].numpy().any()


def test_json_lines_with_unicode_paths_and_string_labels(tmp_path):
    folder = tmp_path / "données"
    folder.mkdir()
    pixels = write_png(folder / "картинка.png", size=(8, 8))
    manifest = tmp_path / "m.jsonl"
    lines = [
        {"image": "données/картинка.png", "text": "猫", "label": "cat"},
        {"text": "dog only", "label": "dog"},
    ]
    manifest.write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8"
    )
    first, second = list(from_manifest(str(manifest), image_size=8))
    np.testing.assert_array_equal(first["image"], pixels)
    assert first["text"].numpy().decode() == "猫" and first["label"].numpy() == b"cat"
    np.testing.assert_array_equal(second["presence"], [0, 1])


def test_batches_with_fixed_shapes(files):
    rows = [{"image": "a.png", "audio": "a.wav"}] * 5
    path = write_csv(files / "m.csv", rows, ["image", "audio"])
    batch = next(iter(from_manifest(path, image_size=8, audio_seconds=0.25).batch(5)))
    assert batch["image"].shape == (5, 8, 8, 3) and batch["audio"].shape == (5, 4000)


def _bad_row_manifest(tmp_path):
    write_png(tmp_path / "good.png")
    (tmp_path / "text.png").write_bytes(b"this is not an image")
    write_wav_44k_stereo(tmp_path / "full.wav")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    soundfile.write(tmp_path / "empty.wav", np.zeros((0,), "float32"), 16000)
    rows = [
        {"image": "good.png", "audio": "", "label": 0},
        {"image": "missing.png", "audio": "", "label": 1},
        {"image": "text.png", "audio": "", "label": 2},
        {"image": "", "audio": "cut.wav", "label": 3},
        {"image": "", "audio": "empty.wav", "label": 4},
        {"image": "", "audio": "", "label": 5},
        {"image": "good.png", "audio": "full.wav", "label": 6},
    ]
    return write_csv(tmp_path / "m.csv", rows, ["image", "audio", "label"])


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (2, r"row 2: image file 'missing.png'"),
        (3, r"row 3: image file 'text.png'"),
        (4, r"row 4: audio file 'cut.wav'.*(truncated|cut short)"),
        (5, r"row 5: audio file 'empty.wav'.*no samples"),
        (6, r"row 6: no modality present"),
    ],
)
def test_bad_row_raises_naming_row_and_file(tmp_path, row, match):
    path = _bad_row_manifest(tmp_path)
    # Keep only the good first row and the bad one, so the error is that row's.
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    (tmp_path / "one.csv").write_text(
        "\n".join([lines[0], lines[1], lines[row]]) + "\n", encoding="utf-8"
    )
    with pytest.raises(Exception, match=match.replace(f"row {row}", "row 2")) as info:
        list(from_manifest(str(tmp_path / "one.csv"), image_size=8))
    assert "one.csv" in str(info.value)


def test_skip_reports_how_many_and_which(tmp_path, capsys):
    path = _bad_row_manifest(tmp_path)
    with pytest.warns(UserWarning, match="skipped 5 of 7 rows"):
        examples = list(from_manifest(path, image_size=8, on_error="skip"))
    assert [int(e["label"]) for e in examples] == [0, 6]
    report = capsys.readouterr().err
    for row in (2, 3, 4, 5, 6):
        assert f"row {row}:" in report


def test_manifest_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        from_manifest(str(tmp_path / "nope.csv"))
    path = write_csv(tmp_path / "m.csv", [{"image": "a.png", "caption": "x"}], ["image", "caption"])
    with pytest.raises(ManifestError, match=r"columns \['caption'\]"):
        from_manifest(path)
    assert (
        from_manifest(path, modalities={"image": "image", "caption": "text"})
        .element_spec["caption"]
        .dtype
        == "string"
    )
    assert "caption" not in from_manifest(path, ignore=["caption"]).element_spec
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{not json}\n')
    with pytest.raises(ManifestError, match="line 2 is not JSON"):
        from_manifest(str(tmp_path / "bad.jsonl"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="header"):
        from_manifest(str(tmp_path / "empty.csv"))
    with pytest.raises(ValueError, match="on_error"):
        from_manifest(path, on_error="ignore")


def test_image_corrupt_inside_still_fails_loudly(tmp_path):
    import io

    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()
    middle = len(data) // 2
    (tmp_path / "bad.png").write_bytes(data[: middle - 40] + bytes(80) + data[middle + 40 :])
    path = write_csv(tmp_path / "m.csv", [{"image": "bad.png"}], ["image"])
    with pytest.raises(Exception, match="PNG"):
        list(from_manifest(path, image_size=8))


def test_jpeg_rows_decode_like_pil(tmp_path):
    pixels = np.clip(np.add.outer(np.arange(24), np.arange(40))[..., None] * [3, 2, 1], 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "a.jpg", quality=95)
    reference = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB")).astype(int)
    path = write_csv(tmp_path / "m.csv", [{"image": "a.jpg", "label": 1}], ["image", "label"])
    # image_size equal to neither side: resized; compare against PIL's own bilinear resize.
    (example,) = list(from_manifest(path, image_size=24))
    resized = np.asarray(
        Image.open(tmp_path / "a.jpg").convert("RGB").resize((24, 24), Image.BILINEAR)
    )
    assert np.abs(example["image"].numpy().astype(int) - resized.astype(int)).max() <= 2
    assert reference.shape == (24, 40, 3)


def test_padding_comes_with_lengths_and_frame_masks(files):
    """Zero padding is marked: audio by its sample count before padding (VGGish's
    `lengths`), video by a frame mask (`VideoEncoder`'s `frame_mask`); a missing clip has
    length 0 and an all-False mask. The references: the 0.5 s file resampled by librosa
    (8,000 samples at 16 kHz) and the 6 frames written to the MP4."""
    stereo, rate = soundfile.read(files / "a.wav", dtype="float32")
    samples = len(librosa.resample(stereo.mean(axis=1), orig_sr=rate, target_sr=16000))
    rows = [{"audio": "a.wav", "video": "a.mp4"}, {"audio": "", "video": "a.mp4"}]
    rows.append({"audio": "a.wav", "video": ""})
    path = write_csv(files / "m.csv", rows, ["video", "audio"])
    fixed = list(from_manifest(path, audio_seconds=1.0, video_size=8, video_frames=10))
    assert [int(e["audio_length"]) for e in fixed] == [samples, 0, samples]
    assert not fixed[0]["audio"].numpy()[samples:].any()
    for example, frames in zip(fixed, (6, 6, 0), strict=True):
        np.testing.assert_array_equal(example["video_frame_mask"], np.arange(10) < frames)
    # A crop is a crop: no padding, the whole window is real.
    (short,) = list(
        from_manifest(
            write_csv(files / "c.csv", [{"audio": "a.wav"}], ["audio"]), audio_seconds=0.25
        )
    )
    assert int(short["audio_length"]) == 4000

    # Variable lengths: `padded_batch` pads the frames with zeros and the masks with False.
    loose = from_manifest(path, video_size=8).padded_batch(3)
    batch = next(iter(loose))
    np.testing.assert_array_equal(batch["audio_length"], [samples, 0, samples])
    np.testing.assert_array_equal(batch["video_frame_mask"].numpy().sum(axis=1), [6, 6, 0])
    assert batch["video"].shape[1] == 6 and not batch["video"].numpy()[2].any()


def test_masked_video_pooling_ignores_the_padding(files):
    """Through `VideoEncoder(pooling="mean")` with the manifest's frame mask, a clip padded
    to 10 frames encodes as the mean over its 6 decoded frames only (float64 reference)."""
    import keras

    from mmrep.encoders import VideoEncoder

    path = write_csv(files / "m.csv", [{"video": "a.mp4"}], ["video"])
    batch = next(iter(from_manifest(path, video_size=8, video_frames=10).batch(1)))
    frame_encoder = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    encoder = VideoEncoder(frame_encoder, pooling="mean")
    got = encoder(batch["video"], frame_mask=batch["video_frame_mask"]).numpy()
    kernel, bias = (w.numpy().astype("float64") for w in frame_encoder.layers[-1].weights)
    frames = batch["video"].numpy()[0, :6].reshape(6, -1).astype("float64")
    np.testing.assert_allclose(got[0], (frames @ kernel + bias).mean(axis=0), rtol=1e-4, atol=1e-3)


def test_a_column_named_like_a_padding_key_is_refused(files):
    path = write_csv(
        files / "m.csv", [{"audio": "a.wav", "audio_length": "a.wav"}], ["audio", "audio_length"]
    )
    with pytest.raises(ManifestError, match=r"\['audio_length'\] collide with the padding keys"):
        from_manifest(path, modalities={"audio": "audio", "audio_length": "audio"})


def _bar_frame_index(frame):
    """Which frame of `write_mp4` this is: frame t has a white bar at columns 4t..4t+8."""
    columns = frame.astype("float64").mean(axis=(0, 2))
    bright = np.flatnonzero(columns > 128)
    return round((bright.mean() - 3.5) / 4)


def test_video_sampling_picks_frames_by_time(files):
    """The MP4 holds frames 0..5 at 8 fps (0.75 s). Uniform sampling of 3 segments takes
    the frames shown at the segments' centres (0.125, 0.375, 0.625 s: frames 1, 3, 5);
    interval sampling at 4 fps takes 0, 0.25, 0.5 s (frames 0, 2, 4), then pads."""
    path = write_csv(files / "m.csv", [{"video": "a.mp4"}], ["video"])
    (uniform,) = from_manifest(path, video_size=48, video_frames=3, video_sampling="uniform")
    assert [_bar_frame_index(f) for f in uniform["video"].numpy()] == [1, 3, 5]
    np.testing.assert_array_equal(uniform["video_frame_mask"], [True] * 3)
    (interval,) = from_manifest(
        path, video_size=48, video_frames=5, video_sampling="interval", video_fps=4
    )
    frames = interval["video"].numpy()
    assert [_bar_frame_index(f) for f in frames[:3]] == [0, 2, 4] and not frames[3:].any()
    np.testing.assert_array_equal(interval["video_frame_mask"], [True] * 3 + [False] * 2)
    (first,) = from_manifest(path, video_size=48, video_frames=3)
    assert [_bar_frame_index(f) for f in first["video"].numpy()] == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"video_sampling": "middle"}, "'first', 'uniform' or 'interval'"),
        ({"video_sampling": "interval"}, "`video_fps` with video_sampling='interval'"),
        ({"video_fps": 2}, "`video_fps` with video_sampling='interval' and only there"),
        ({"video_sampling": "uniform"}, "`video_frames` .* with video_sampling='uniform'"),
    ],
)
def test_video_sampling_arguments_are_checked(files, kwargs, message):
    path = write_csv(files / "m.csv", [{"video": "a.mp4"}], ["video"])
    with pytest.raises(ValueError, match=message):
        from_manifest(path, **kwargs)


def test_audio_is_decoded_only_as_far_as_it_is_kept(tmp_path, monkeypatch):
    """A long recording is read up to `audio_seconds`, not whole and then cropped."""
    import mmrep.data.manifest as manifest

    rate, seconds = 16000, 30
    wave = (0.1 * np.sin(np.arange(rate * seconds) / 7.0)).astype("float32")
    soundfile.write(tmp_path / "long.flac", wave, rate)
    (tmp_path / "m.csv").write_text("audio,text\nlong.flac,a long one\n")
    calls = []
    real = manifest.load_audio

    def spy(path, sample_rate, **kwargs):
        out = real(path, sample_rate, **kwargs)
        calls.append((kwargs.get("max_seconds"), len(out)))
        return out

    monkeypatch.setattr(manifest, "load_audio", spy)
    (example,) = from_manifest(tmp_path / "m.csv", audio_seconds=1.5)
    assert calls == [(1.5, 24000)]
    np.testing.assert_allclose(example["audio"].numpy(), wave[:24000], atol=1e-4)
    assert int(example["audio_length"]) == 24000


def test_a_csv_with_a_byte_order_mark_reads(tmp_path):
    (tmp_path / "m.csv").write_bytes("\ufefftext,label\nhello,1\n".encode())
    (example,) = from_manifest(tmp_path / "m.csv")
    assert example["text"].numpy() == b"hello" and int(example["label"]) == 1
