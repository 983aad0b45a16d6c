"""Video writing and reading, checked against PyAV used directly and against the frames written."""

import fractions
import os
import pathlib
import struct

import av
import numpy as np
import pytest
from PIL import Image

from mmrep.preprocessing.video_io import VideoDecodeError, read_video, write_video
from tests.preprocessing.video_files import count_opens


def moving_square(num_frames=12, height=32, width=48):
    """A bright square moving 2 px a frame over a colour ramp."""
    yy, xx = np.mgrid[:height, :width]
    background = np.stack([xx * 160 // width + 20, yy * 160 // height + 20, 0 * xx + 60], -1)
    frames = np.repeat(background[None], num_frames, 0).astype(np.uint8)
    for t in range(num_frames):
        frames[t, 8:20, 2 + 2 * t : 14 + 2 * t] = 250
    return frames


def pyav_read(path):
    """The reference: every frame of the first video stream, decoded by PyAV directly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
        context, rate = stream.codec_context, stream.average_rate
        info = {"codec": context.name, "pix_fmt": context.pix_fmt, "average_rate": rate}
    frames = np.stack([frame.to_ndarray(format="rgb24") for frame in decoded])
    pts = [None if f.pts is None else float(f.pts * f.time_base) for f in decoded]
    return frames, pts, info


def pyav_write(path, frames, container_format=None):
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(
    ("name", "shape", "codec", "pix_fmt"),
    [
        ("clip.mp4", (32, 48), "libx264", "yuv420p"),
        ("clip.mp4", (31, 47), "libx264", "yuv444p"),  # odd sizes: kept exactly, in 4:4:4
        ("clip.mp4", (32, 48), "mpeg4", "yuv420p"),
        ("clip.mp4", (31, 47), "mpeg4", "yuv420p"),
        ("видео ü.mp4", (32, 48), "libx264", "yuv420p"),
    ],
)
def test_round_trip_matches_pyav_and_the_original(tmp_path, name, shape, codec, pix_fmt):
    frames = moving_square(12, *shape)
    path = tmp_path / name
    assert write_video(frames, path, fps=8, codec=codec) == str(path)
    reference, pts, info = pyav_read(path)
    assert info["codec"] == {"libx264": "h264", "mpeg4": "mpeg4"}[codec]
    assert info["pix_fmt"] == pix_fmt
    assert reference.shape == frames.shape
    # High quality: the decode is close to what was written (4:2:0 chroma costs most).
    assert np.abs(reference.astype(int) - frames).mean() < 3.0
    decoded, timestamps = read_video(path)
    np.testing.assert_array_equal(decoded, reference)
    assert timestamps.dtype == np.float64
    np.testing.assert_allclose(timestamps, pts)
    np.testing.assert_allclose(timestamps, np.arange(12) / 8, atol=1e-9)
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind


def test_ntsc_rate_timestamps(tmp_path):
    path = write_video(moving_square(5), tmp_path / "ntsc.mp4", fps=fractions.Fraction(30000, 1001))
    np.testing.assert_allclose(read_video(path)[1], np.arange(5) * 1001 / 30000, atol=1e-6)


def test_resize_matches_pil_bilinear_of_the_pyav_frames(tmp_path):
    path = write_video(moving_square(), tmp_path / "clip.mp4")
    reference, _, _ = pyav_read(path)
    decoded, _ = read_video(path, size=(16, 20))
    assert decoded.shape == (12, 16, 20, 3) and decoded.dtype == np.uint8
    for frame, full in zip(decoded, reference, strict=True):
        expected = np.asarray(Image.fromarray(full).resize((20, 16), Image.BILINEAR))
        assert np.abs(frame.astype(int) - expected).max() <= 1
    assert read_video(path, size=8)[0].shape == (12, 8, 8, 3)


def test_max_frames_stops_decoding_early(tmp_path, monkeypatch):
    path = write_video(moving_square(120), tmp_path / "long.mp4")
    reference, pts, _ = pyav_read(path)
    opened = count_opens(monkeypatch)
    decoded, timestamps = read_video(path, max_frames=5)
    np.testing.assert_array_equal(decoded, reference[:5])
    np.testing.assert_allclose(timestamps, pts[:5])
    assert [c.decoded for c in opened] == [5]
    decoded, _ = read_video(path, max_frames=None)
    assert len(decoded) == 120 and opened[-1].decoded == 120


def test_rotation_metadata_is_applied(tmp_path):
    frames = moving_square(3, 16, 32)
    frames[:, :4, :4] = (255, 0, 0)  # a red top-left corner
    plain = tmp_path / "plain.mp4"
    pyav_write(plain, frames)
    data = bytearray(plain.read_bytes())
    # The track header's matrix (QuickTime spec: a version-0 tkhd has 40 bytes before
    # it) set to a, b, c, d = 0, 1, -1, 0 in 16.16: "turn 90 degrees clockwise", as
    # phones record portrait video.
    offset = data.index(b"tkhd") + 4 + 4 + 20 + 16
    assert struct.unpack(">9i", data[offset : offset + 36])[0] == 0x10000
    data[offset : offset + 36] = struct.pack(
        ">9i", 0, 0x10000, 0, -0x10000, 0, 0, 16 << 16, 0, 1 << 30
    )
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(bytes(data))
    decoded, _ = read_video(rotated)
    expected = np.rot90(pyav_read(plain)[0], k=-1, axes=(1, 2))  # clockwise
    np.testing.assert_array_equal(decoded, expected)
    assert decoded.shape == (3, 32, 16, 3)
    assert decoded[0, 0, -1, 0] > 200 and decoded[0, 0, -1, 1] < 60  # red now top-right


def test_raw_stream_without_timestamps_uses_the_stream_rate(tmp_path):
    path = tmp_path / "raw.h264"
    pyav_write(path, moving_square(6), container_format="h264")
    reference, pts, info = pyav_read(path)
    assert pts == [None] * 6
    decoded, timestamps = read_video(path)
    np.testing.assert_array_equal(decoded, reference)
    np.testing.assert_allclose(timestamps, np.arange(6) / float(info["average_rate"]))


def test_frame_size_change_needs_size(tmp_path):
    # Two raw H.264 streams back to back: the second's parameter sets change the size.
    pyav_write(tmp_path / "a.h264", moving_square(3, 32, 48), container_format="h264")
    pyav_write(tmp_path / "b.h264", moving_square(3, 16, 24), container_format="h264")
    path = tmp_path / "ab.h264"
    path.write_bytes((tmp_path / "a.h264").read_bytes() + (tmp_path / "b.h264").read_bytes())
    with pytest.raises(VideoDecodeError, match=r"ab\.h264' changes frame size"):
        read_video(path)
    with av.open(str(path)) as container:
        reference = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert [frame.shape[:2] for frame in reference] == [(32, 48)] * 3 + [(16, 24)] * 3
    decoded, _ = read_video(path, size=8)
    for frame, full in zip(decoded, reference, strict=True):
        expected = np.asarray(Image.fromarray(full).resize((8, 8), Image.BILINEAR))
        assert np.abs(frame.astype(int) - expected).max() <= 1


def write_audio_only(path, codec):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=16000, layout="mono")
        sample_format = "fltp" if codec == "aac" else "s16"
        tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
        samples = tone.astype(np.float32) if codec == "aac" else (tone * 1e4).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples[None], format=sample_format, layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.mark.parametrize(("name", "codec"), [("speech.m4a", "aac"), ("speech.wav", "pcm_s16le")])
def test_audio_only_file_has_no_video_stream(tmp_path, name, codec):
    write_audio_only(tmp_path / name, codec)
    with pytest.raises(VideoDecodeError, match=f"{name}' has no video stream.*'audio'"):
        read_video(tmp_path / name)


def test_video_stream_without_frames(tmp_path):
    path = tmp_path / "empty.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoDecodeError, match=r"empty\.avi' has a video stream but no decodable"):
        read_video(path)


def test_corrupt_and_missing_files_are_named(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match=r"junk\.mp4.*Invalid data"):
        read_video(junk)
    whole = write_video(moving_square(), tmp_path / "whole.mp4")
    half = tmp_path / "half.mp4"
    data = pathlib.Path(whole).read_bytes()
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match=r"half\.mp4"):
        read_video(half)
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        read_video(tmp_path / "missing.mp4")


def test_libx264_falls_back_to_mpeg4(tmp_path, monkeypatch):
    real_codec = av.Codec

    def codec_without_libx264(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real_codec(name, mode)

    monkeypatch.setattr(av, "Codec", codec_without_libx264)
    with pytest.warns(RuntimeWarning, match="no libx264 encoder"):
        path = write_video(moving_square(), tmp_path / "clip.mp4")
    assert pyav_read(path)[2]["codec"] == "mpeg4"


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"old")
    real_from_ndarray, calls = av.VideoFrame.from_ndarray, []

    def failing_from_ndarray(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real_from_ndarray(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", failing_from_ndarray)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_video(moving_square(), path)
    assert os.listdir(tmp_path) == ["clip.mp4"] and path.read_bytes() == b"old"


@pytest.mark.parametrize(
    ("frames", "kwargs", "match"),
    [
        (moving_square().astype(np.float32), {}, "dtype=float32"),
        (moving_square()[0], {}, r"shape=\(32, 48, 3\)"),
        (np.zeros((2, 8, 8, 4), np.uint8), {}, r"shape=\(2, 8, 8, 4\)"),
        (np.zeros((0, 8, 8, 3), np.uint8), {}, r"shape=\(0, 8, 8, 3\)"),
        (moving_square(), {"fps": 0}, "fps=0"),
        (moving_square(), {"codec": "vp9"}, "codec='vp9'"),
    ],
)
def test_bad_write_arguments_are_named(tmp_path, frames, kwargs, match):
    with pytest.raises(ValueError, match=f"^Expected .*Received: .*{match}"):
        write_video(frames, tmp_path / "clip.mp4", **kwargs)
    assert os.listdir(tmp_path) == []


def test_unknown_extension_and_missing_folder_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"container extension.*clip\.xyz"):
        write_video(moving_square(), tmp_path / "clip.xyz")
    with pytest.raises(FileNotFoundError, match=r"no_folder/clip\.mp4"):
        write_video(moving_square(), tmp_path / "no_folder" / "clip.mp4")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_frames": 0}, "max_frames=0"),
        ({"max_frames": 2.5}, "max_frames=2.5"),
        ({"size": 0}, "size=0"),
    ],
)
def test_bad_read_arguments_are_named(tmp_path, kwargs, match):
    path = write_video(moving_square(2), tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match=f"^Expected .*Received: {match}"):
        read_video(path, **kwargs)
