"""Frame sampling, checked against frames that spell their own index and PyAV used directly.

Expected frame indices are computed here from the known frame times of each file (the
frame displayed at `t` is the last one whose pts is at most `t`), and the returned pixels
are compared with a full decode of the file by PyAV.
"""

import bisect
import fractions
import math

import av
import numpy as np
import pytest
from PIL import Image

from mmrep.preprocessing.frame_sampling import SampledFrames, sample_frames
from mmrep.preprocessing.video_io import VideoDecodeError
from tests.preprocessing.video_files import (
    count_opens,
    decode_all,
    read_index,
    write_audio_only,
    write_indexed,
)

F = fractions.Fraction


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """73 frames at 10 fps (7.3 s), a keyframe at least every 10 frames."""
    path = write_indexed(tmp_path_factory.mktemp("clip") / "clip.mp4", 73, rate=10, gop=10)
    return path, decode_all(path)[0]


def indices(sampled):
    return [read_index(frame) if real else None for frame, real in zip(*sampled[::2], strict=True)]


def check_rows(sampled, expected, reference, rate=10):
    """Rows hold exactly the `expected` frames (None: padding), pixel for pixel."""
    assert isinstance(sampled, SampledFrames)
    assert sampled.frames.dtype == np.uint8 and sampled.timestamps.dtype == np.float64
    assert sampled.mask.dtype == bool
    assert indices(sampled) == expected
    for row, index in enumerate(expected):
        if index is None:
            assert not sampled.frames[row].any() and sampled.timestamps[row] == 0
        else:
            np.testing.assert_array_equal(sampled.frames[row], reference[index])
            assert sampled.timestamps[row] == pytest.approx(index / rate, abs=1e-9)
    np.testing.assert_array_equal(sampled.mask, [i is not None for i in expected])


def displayed(times, t):
    """The index of the last frame whose time is at most `t` (exact Fractions)."""
    return max(bisect.bisect_right(times, t) - 1, 0)


@pytest.mark.parametrize("fps", [1, 3, 2.5, F(10, 3), 25])
def test_interval_picks_the_frame_displayed_at_each_tick(clip, fps):
    path, reference = clip
    step = 1 / F(fps)
    ticks = [k * step for k in range(math.ceil(F(73, 10) / step))]
    expected = [math.floor(t * 10) for t in ticks]  # frame i is shown during [i/10, (i+1)/10)
    check_rows(sample_frames(path, fps=fps), expected, reference)
    if fps == 1:
        assert expected == [0, 10, 20, 30, 40, 50, 60, 70]
    if fps == 25:  # faster than the video: frames repeat, one row per tick
        assert expected[:6] == [0, 0, 0, 1, 1, 2] and len(expected) == 183


def test_interval_with_num_frames_truncates_or_pads(clip):
    path, reference = clip
    check_rows(sample_frames(path, fps=2, num_frames=4), [0, 5, 10, 15], reference)
    expected = [5 * k for k in range(15)] + [None] * 5  # 7.3 s at 2 per second: 15 ticks
    check_rows(sample_frames(path, fps=2, num_frames=20), expected, reference)


@pytest.mark.parametrize("num_frames", [1, 8, 100])
def test_uniform_picks_segment_centres(clip, num_frames):
    path, reference = clip
    duration = F(73, 10)
    centres = [(i + F(1, 2)) * duration / num_frames for i in range(num_frames)]
    expected = [math.floor(t * 10) for t in centres]
    sampled = sample_frames(path, num_frames=num_frames)
    check_rows(sampled, expected, reference)
    assert sample_frames(path, num_frames=num_frames, strategy="uniform").frames.tobytes() == (
        sampled.frames.tobytes()
    )
    if num_frames == 8:
        assert expected == [4, 13, 22, 31, 41, 50, 59, 68]


def test_random_segments_are_reproducible_and_inside_their_segment(clip):
    path, reference = clip
    num_frames, duration = 6, F(73, 10)
    runs = [
        sample_frames(path, num_frames=num_frames, strategy="random", seed=s) for s in range(12)
    ]
    for sampled in runs:
        picks = indices(sampled)
        check_rows(sampled, picks, reference)
        for segment, index in enumerate(picks):
            # The frame is on screen during [index/10, (index+1)/10): that must meet the segment.
            low, high = segment * duration / num_frames, (segment + 1) * duration / num_frames
            assert F(index, 10) < high and F(index + 1, 10) > low
    again = sample_frames(path, num_frames=num_frames, strategy="random", seed=3)
    np.testing.assert_array_equal(again.frames, runs[3].frames)
    assert len({tuple(indices(s)) for s in runs}) > 6  # different seeds, different picks
    per_segment = {segment: {indices(s)[segment] for s in runs} for segment in range(6)}
    assert all(len(picked) >= 3 for picked in per_segment.values())
    generator = sample_frames(
        path, num_frames=num_frames, strategy="random", seed=np.random.default_rng(3)
    )
    assert indices(generator) == indices(again)


def test_variable_frame_rate_uses_the_last_pts_before_each_target(tmp_path):
    pts_ms = [0, 40, 80, 200, 210, 500, 540, 900, 1000, 1040, 1300, 1310, 1320, 1900, 2000]
    path = write_indexed(
        tmp_path / "vfr.mp4", len(pts_ms), rate=25, pts=pts_ms, time_base=F(1, 1000)
    )
    reference, times = decode_all(path)
    assert times == [F(p, 1000) for p in pts_ms]  # the file keeps the irregular timestamps
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        header = stream.duration * stream.time_base
        packets = [p for p in container.demux(stream) if p.size]
        end = max((p.pts + p.duration) * p.time_base for p in packets)
    # MP4 derives its duration from decoding times, which B-frames with irregular pts drag
    # below the last frame's time: the sampler must not stop there.
    assert header < times[-1] < end
    duration = end  # when the last frame stops being shown
    sampled = sample_frames(path, fps=10, num_frames=24)
    ticks = [F(k, 10) for k in range(24) if F(k, 10) < duration]
    expected = [displayed(times, t) for t in ticks]
    assert expected[:6] == [0, 2, 3, 4, 4, 5]
    assert indices(sampled) == expected + [None] * (24 - len(ticks))
    for row, index in enumerate(expected):
        np.testing.assert_array_equal(sampled.frames[row], reference[index])
        assert sampled.timestamps[row] == float(times[index])
    centres = [(i + F(1, 2)) * duration / 7 for i in range(7)]
    assert indices(sample_frames(path, num_frames=7)) == [displayed(times, t) for t in centres]


def test_rotation_metadata_is_applied(tmp_path):
    plain = write_indexed(tmp_path / "plain.mp4", 20, rate=10)
    rotated = write_indexed(tmp_path / "rotated.mp4", 20, rate=10, rotation=-90)  # clockwise
    sampled = sample_frames(rotated, fps=2)
    assert sampled.frames.shape == (4, 128, 96, 3)
    expected = np.rot90(decode_all(plain)[0][[0, 5, 10, 15]], k=-1, axes=(1, 2))
    np.testing.assert_array_equal(sampled.frames, expected)
    upright = np.rot90(sampled.frames, k=1, axes=(1, 2))
    assert [read_index(frame) for frame in upright] == [0, 5, 10, 15]
    resized = sample_frames(rotated, fps=2, size=(32, 16))
    assert resized.frames.shape == (4, 32, 16, 3)


def test_size_resizes_like_pil_bilinear(clip):
    path, reference = clip
    sampled = sample_frames(path, fps=2, num_frames=16, size=(32, 48))
    assert sampled.frames.shape == (16, 32, 48, 3)
    expected = [5 * k for k in range(15)] + [None]
    assert indices(sampled) == expected
    for row, index in enumerate(expected[:-1]):
        pil = np.asarray(Image.fromarray(reference[index]).resize((48, 32), Image.BILINEAR))
        assert np.abs(sampled.frames[row].astype(int) - pil).max() <= 1
    assert not sampled.frames[-1].any() and not sampled.mask[-1]
    assert sample_frames(path, num_frames=2, size=8).frames.shape == (2, 8, 8, 3)


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("clip.mkv", "libx264"),  # no stream duration: the packets give it
        ("clip.avi", "mpeg4"),
        ("clip.ts", "libx264"),  # no index: nothing is skipped; starts at 0.2 s
        ("clip.flv", "libx264"),  # indexes decoding times
        ("clip.webm", "libvpx-vp9"),
    ],
)
def test_other_containers(tmp_path, name, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = write_indexed(tmp_path / name, 150, rate=10, gop=10, codec=codec)
    reference, times = decode_all(path)
    start = times[0]
    end = times[-1] + F(1, 10)
    for kwargs, targets in [
        ({"fps": 0.5}, [start + 2 * k for k in range(8)]),
        ({"num_frames": 4}, [start + (i + F(1, 2)) * (end - start) / 4 for i in range(4)]),
    ]:
        sampled = sample_frames(path, **kwargs)
        expected = [displayed(times, t) for t in targets]
        assert indices(sampled) == expected, kwargs
        np.testing.assert_array_equal(sampled.frames, reference[expected])
        np.testing.assert_allclose(sampled.timestamps, [float(times[i]) for i in expected])


def test_raw_stream_without_timestamps_counts_frames(tmp_path):
    path = write_indexed(tmp_path / "raw.h264", 30, rate=10, container_format="h264")
    reference, times = decode_all(path)
    assert times == [None] * 30
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    sampled = sample_frames(path, fps=rate / 4)  # every 4th frame, timed index / rate
    assert indices(sampled) == list(range(0, 30, 4))
    np.testing.assert_allclose(sampled.timestamps, np.arange(0, 30, 4) / float(rate))
    np.testing.assert_array_equal(sampled.frames, reference[::4])


def test_seeks_over_gaps_and_stops_after_the_last_target(tmp_path, monkeypatch):
    path = write_indexed(tmp_path / "long.mp4", 300, rate=10, gop=10)
    reference = decode_all(path)[0]
    opened = count_opens(monkeypatch)
    sampled = sample_frames(path, fps=0.25)  # one frame every 40
    assert indices(sampled) == list(range(0, 300, 40))
    np.testing.assert_array_equal(sampled.frames, reference[::40])
    source = opened[0]  # then the look at the end of the file, which decodes nothing
    assert len(source.seeks) >= 6 and sum(c.decoded for c in opened[1:]) == 0
    assert source.decoded <= 8 * 12  # about a keyframe interval per target, not 300
    opened.clear()
    assert indices(sample_frames(path, fps=1, num_frames=3)) == [0, 10, 20]
    # Frame 20 is at exactly 2 s, so nothing after it is needed (fewer with seeks).
    assert len(opened) == 1 and opened[0].decoded <= 21


def test_no_seek_without_a_keyframe_in_the_gap(tmp_path, monkeypatch):
    path = write_indexed(
        tmp_path / "one_gop.mp4", 120, gop=1000, options={"x264-params": "scenecut=0"}
    )
    with av.open(str(path)) as container:
        keyframes = [f.pts for f in container.decode(video=0) if f.key_frame]
    assert keyframes == [0]
    opened = count_opens(monkeypatch)
    assert indices(sample_frames(path, fps=0.5)) == list(range(0, 120, 20))
    # Frame 100 is at exactly 10 s, the last target: decoding stops there.
    assert (opened[0].decoded, opened[0].seeks) == (101, [])


def test_a_failed_seek_falls_back_to_decoding_from_the_start(tmp_path, monkeypatch):
    path = write_indexed(tmp_path / "long.mp4", 120, rate=10, gop=10)
    reference = decode_all(path)[0]

    def failing_seek(container, offset, **kwargs):
        raise av.error.PermissionError(1, "seeking refused by the test")

    opened = count_opens(monkeypatch, failing_seek)
    sampled = sample_frames(path, fps=0.25)
    assert indices(sampled) == [0, 40, 80]
    np.testing.assert_array_equal(sampled.frames, reference[::40])
    decoders = [c for c in opened if c.decoded]  # not the look at the end of the file
    assert len(decoders) == 2 and len(decoders[0].seeks) == 1 and decoders[1].seeks == []


def test_a_seek_that_lands_late_is_caught(tmp_path, monkeypatch):
    path = write_indexed(tmp_path / "long.mp4", 200, rate=10, gop=10)
    reference = decode_all(path)[0]
    late = []

    def late_seek(container, offset, **kwargs):
        # The first seek while decoding lands 3 s after where it was asked to.
        stream = kwargs["stream"]
        shift = int(3 / stream.time_base) if not late else 0
        late.append(shift)
        return container.seek(offset + shift, **kwargs)

    opened = count_opens(monkeypatch, late_seek)
    sampled = sample_frames(path, fps=0.2, num_frames=4)  # no look at the end of the file
    assert indices(sampled) == list(range(0, 200, 50))
    np.testing.assert_array_equal(sampled.frames, reference[::50])
    assert late[0] > 0 and len(opened) == 1  # recovered by seeking back, not by reopening
    assert len(opened[0].seeks) >= 4


def test_audio_only_corrupt_and_missing_files_are_named(tmp_path):
    write_audio_only(tmp_path / "speech.m4a")
    with pytest.raises(VideoDecodeError, match=r"speech\.m4a' has no video stream.*'audio'"):
        sample_frames(tmp_path / "speech.m4a", fps=1)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match=r"junk\.mp4"):
        sample_frames(junk, num_frames=4)
    whole = write_indexed(tmp_path / "whole.mp4", 30)
    half = tmp_path / "half.mp4"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(VideoDecodeError, match=r"half\.mp4"):
        sample_frames(half, fps=1)
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        sample_frames(tmp_path / "missing.mp4", fps=1)


def test_frame_size_change_needs_size(tmp_path):
    # Two raw H.264 streams back to back: the second's parameter sets change the size.
    first = write_indexed(tmp_path / "a.h264", 3, container_format="h264")
    second = write_indexed(tmp_path / "b.h264", 3, container_format="h264", height=48, width=64)
    path = tmp_path / "ab.h264"
    path.write_bytes(first.read_bytes() + second.read_bytes())
    with pytest.raises(VideoDecodeError, match=r"ab\.h264' changes frame size"):
        sample_frames(path, num_frames=6)
    sampled = sample_frames(path, num_frames=6, size=(48, 64))
    assert indices(sampled) == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "num_frames=None"),
        ({"fps": 0}, "fps=0"),
        ({"fps": -1.0}, r"fps=-1\.0"),
        ({"fps": float("nan")}, "fps=nan"),
        ({"fps": True}, "fps=True"),
        ({"fps": "1"}, "fps='1'"),
        ({"num_frames": 0}, "num_frames=0"),
        ({"num_frames": 2.0}, r"num_frames=2\.0"),
        ({"strategy": "dense", "num_frames": 2}, "strategy='dense'"),
        ({"strategy": "interval", "num_frames": 2}, "fps=None"),
        ({"strategy": "uniform", "fps": 1, "num_frames": 2}, "fps=1"),
        ({"strategy": "random", "num_frames": 2, "seed": "abc"}, "seed='abc'"),
        ({"num_frames": 2, "size": 0}, "size=0"),
    ],
)
def test_bad_arguments_are_named(clip, kwargs, match):
    with pytest.raises(ValueError, match=f"^Expected .*Received: .*{match}"):
        sample_frames(clip[0], **kwargs)


def test_a_seek_that_lands_short_cannot_loop(tmp_path, monkeypatch):
    path = write_indexed(tmp_path / "long.mp4", 200, rate=10, gop=10)
    reference = decode_all(path)[0]
    sent = []

    def short_seek(container, offset, **kwargs):
        # Every seek while decoding goes back to the start of the file.
        sent.append(offset)
        assert len(sent) < 100, "seeking in circles"
        return container.seek(0, **kwargs)

    opened = count_opens(monkeypatch, short_seek)
    sampled = sample_frames(path, fps=0.2, num_frames=4)
    assert indices(sampled) == list(range(0, 200, 50))
    np.testing.assert_array_equal(sampled.frames, reference[::50])
    assert sent == sorted(set(sent))  # each seek aims at a later keyframe than the last
    assert len(opened) == 1


def test_only_returned_frames_are_converted_once_each(clip, monkeypatch):
    import mmrep.preprocessing.frame_sampling as frame_sampling

    path, reference = clip
    converted, real = [], frame_sampling.frame_to_rgb

    def counting(frame):
        converted.append(frame.pts)
        return real(frame)

    monkeypatch.setattr(frame_sampling, "frame_to_rgb", counting)
    sampled = sample_frames(path, fps=25, num_frames=30)  # 2.5 rows per frame
    expected = [math.floor(F(k, 25) * 10) for k in range(30)]
    check_rows(sampled, expected, reference)
    assert len(converted) == len(set(converted)) == len(set(expected)) == 12
