"""Video benchmarks: frame sampling from a file, against decoding every frame with PyAV."""

import bisect
import fractions
import os
import tempfile

import av
import numpy as np

from mmrep.preprocessing.frame_sampling import sample_frames
from tests.benchmarks.runner import Comparison, benchmark

_FILES = {}


def synthetic_video(seconds, rate, height, width, gop=None):
    """An H.264 MP4 (libx264 defaults, so keyint 250 unless `gop`) of moving shapes.

    Written once per process and argument set, in a temporary folder.
    """
    key = (seconds, rate, height, width, gop)
    if key in _FILES:
        return _FILES[key]
    path = os.path.join(tempfile.mkdtemp(prefix="mmrep-bench-video-"), "clip.mp4")
    yy, xx = np.mgrid[:height, :width]
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for index in range(int(seconds * rate)):
            # A drifting colour field with a bright square crossing it: real motion for
            # the encoder, without scene cuts.
            phase = index / rate
            image = np.stack(
                [
                    128 + 100 * np.sin(xx / 23 + phase),
                    128 + 100 * np.sin(yy / 17 - 0.7 * phase),
                    128 + 100 * np.sin((xx + yy) / 31 + 0.3 * phase),
                ],
                -1,
            ).astype(np.uint8)
            left = int(index * 3) % max(width - height // 4, 1)
            image[height // 3 : height // 3 + height // 4, left : left + height // 4] = 250
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, fractions.Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    _FILES[key] = path
    return path


def decode_everything_then_pick(path, fps):
    """The reference: every frame to RGB with PyAV, then the frame displayed at each tick."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(frame.pts * frame.time_base)
        end = times[-1] + frame.duration * frame.time_base
    step = 1 / fractions.Fraction(fps)
    ticks = [k * step for k in range(int((end - times[0]) / step) + 1) if k * step < end]
    return np.stack([frames[bisect.bisect_right(times, t) - 1] for t in ticks])


@benchmark("sample_frames")
def sample_frames_benchmark(size="full", gop=None):
    """sample_frames(fps=1) on a 60 s H.264 file vs decoding all frames with PyAV, then picking."""
    seconds, rate, (height, width) = (60, 25, (240, 320)) if size == "full" else (2, 10, (48, 64))
    path = synthetic_video(seconds, rate, height, width, gop)
    ours = sample_frames(path, fps=1).frames
    theirs = decode_everything_then_pick(path, 1)
    if not np.array_equal(ours, theirs):
        raise AssertionError("sample_frames and the reference picked different frames")
    keyint = "libx264 default keyint 250" if gop is None else f"keyint {gop}"
    return Comparison(
        mmrep=lambda: sample_frames(path, fps=1).frames,
        reference=lambda: decode_everything_then_pick(path, 1),
        reference_name="PyAV: decode every frame to RGB, then pick",
        work=f"{seconds} s {width}x{height} {rate} fps H.264 ({keyint}) -> 1 fps; "
        "items = frames returned",
        items=len(ours),
    )
