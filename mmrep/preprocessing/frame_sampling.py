"""Sampling frames from a video file at chosen times, decoding as little as possible.

`sample_frames` turns a strategy into target times on the video's timeline and returns,
for each target time `t`, the frame being displayed at `t`: the last frame whose
presentation time is at most `t`. That rule needs no frame rate, so variable-frame-rate
video is sampled correctly. All time arithmetic is exact (`fractions.Fraction` against
`pts * time_base`), so a target that falls exactly on a frame's timestamp gets that frame.

Rules at the edges:

- Two targets on one frame (`fps` above the video's rate, or more uniform targets than
  frames) repeat the frame, as a player would show it: row `i` always belongs to target
  `i`, so rows stay evenly spaced in time. Such rows are real frames (mask `True`).
- A target at or after the end of the last decoded frame (its timestamp plus its
  duration) has no frame: its row is zeros, timestamp 0, mask `False`. With
  `strategy="interval"` and `num_frames`, rows past the end of the video are padding.
- A target before the first frame (a stream whose declared start precedes its first
  timestamp) gets the first frame.

Speed. A frame is converted to an RGB array only when it is returned, and once however
many targets share it; decoding stops as soon as the last target is resolved. When the
next target is more than 8 frames ahead and the demuxer's index holds a keyframe in
between, the container seeks to that keyframe (`container.seek(ts, backward=True,
stream=...)`, in the stream's time base) instead of decoding through the gap; where the
seek lands is checked, with fallbacks down to decoding from the start without seeking
(see `mmrep.preprocessing.video_io.FrameSource`). Without an index (MPEG-TS, raw
streams) or without timestamps, nothing is skipped.

Duration. The timeline starts at the stream's `start_time` and ends at the later of the
header's end (`start_time + duration`) and the largest `pts + duration` among the packets
after a seek to the end of the file (read, not decoded). Both are needed: MP4 computes
its duration from decoding times, which with B-frames and a variable frame rate can end
well before the last frame; Matroska/WebM give no stream duration at all. Where neither
works (raw streams, or no start time), every packet is read once without decoding: the
timeline spans their `pts + duration`, or, without timestamps, `packets / average_rate`.

Reference: L. Wang et al., "Temporal Segment Networks: Towards Good Practices for Deep
Action Recognition", ECCV 2016 (segment-based sampling: one random snippet per segment
in training, the segment centres at test time).
"""

import fractions
import math
import numbers
import os
import typing

import av
import numpy as np

from mmrep.preprocessing.image_io import _check_size, resize_image
from mmrep.preprocessing.regular_file import check_regular
from mmrep.preprocessing.video_io import (
    FrameSource,
    VideoDecodeError,
    check_count,
    decode_errors,
    frame_to_rgb,
)

STRATEGIES = ("interval", "uniform", "random")
_FAR = 1 << 40  # a timestamp past the end of any stream, in its time base


class SampledFrames(typing.NamedTuple):
    """Frames sampled from a video, one row per target time.

    Attributes:
        frames: uint8 array `[T, height, width, 3]`, RGB; padding rows are zeros.
        timestamps: float64 array `[T]`, the presentation time in seconds of each
            returned frame (`pts * time_base`, as stored); 0 for padding rows.
        mask: bool array `[T]`, `True` where the row holds a frame.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    mask: np.ndarray


def sample_frames(path, *, fps=None, num_frames=None, strategy=None, size=None, seed=None):
    """Decodes the frames of a video file displayed at the times a strategy picks.

    Target times lie on the timeline `[start, end)` of the first video stream (see the
    module docstring for how its end is found, and for the rules on repeated frames,
    padding and seeking):

    - `"interval"`: `start, start + 1/fps, start + 2/fps, ...` while before `end`. With
      `num_frames=T`, exactly `T` rows: the first `T` targets, or all of them followed
      by padding (mask `False`) when the video is shorter.
    - `"uniform"`: the centres of `num_frames` equal segments of the timeline,
      `start + (i + 1/2) * duration / T`, as Temporal Segment Networks test.
    - `"random"`: one uniformly random time in each of `num_frames` equal segments
      (TSN's training-time sampling); the picks are sorted by construction.

    Args:
        path: str or `os.PathLike`. The video file.
        fps: positive float, int or `fractions.Fraction`, or `None`. Targets per second
            for `"interval"`; a float is read as the nearest fraction with a
            denominator up to 10**6 (`0.2` is exactly 1/5). Defaults to `None`.
        num_frames: positive int or `None`. Number of rows: required by `"uniform"`
            and `"random"`; with `"interval"`, truncates or pads to it. Defaults to
            `None`.
        strategy: `"interval"`, `"uniform"`, `"random"` or `None`. `None` means
            `"interval"` when `fps` is given, else `"uniform"`. Defaults to `None`.
        size: int, `(height, width)`, or `None`. Resize every returned frame by
            antialiased bilinear interpolation (`resize_image`), after rotation.
            Defaults to `None`.
        seed: int, `None`, or a `numpy.random.Generator`, used by `"random"` (ignored
            otherwise); the same int gives the same picks. Defaults to `None`.

    Returns:
        `SampledFrames(frames, timestamps, mask)`: uint8 `[T, height, width, 3]`,
        float64 `[T]` and bool `[T]`.

    Raises:
        FileNotFoundError: if the file does not exist.
        VideoDecodeError: if the path is not a regular file (a FIFO, device, socket or
            folder), or the file is not a media file or is corrupt, has no video
            stream, has no decodable frame, or changes frame size while `size` is
            `None`.
        ValueError: if an argument is invalid or the arguments do not fit `strategy`.

    Example:
        >>> sampled = sample_frames("clip.mp4", fps=1.0)  # doctest: +SKIP
        >>> sampled.frames.shape  # doctest: +SKIP
        (10, 240, 320, 3)
    """
    strategy = _check_arguments(fps, num_frames, strategy)
    size = _check_size(size)
    rng = _generator(seed) if strategy == "random" else None
    path = os.fspath(path)
    # A FIFO would block FFmpeg's open forever; a device never ends.
    check_regular(path, VideoDecodeError, "Video file")
    with decode_errors(path):
        source = FrameSource(path)
        try:
            need_end = strategy != "interval" or num_frames is None
            start, end = _timeline(path, source.stream, need_end)
            targets, rows = _targets(strategy, start, end, fps, num_frames, rng)
            picks = _select(source, targets)
        finally:
            source.close()
    if source.decoded == 0:
        raise VideoDecodeError(f"Video file {path!r} has a video stream but no decodable frame.")
    return _assemble(picks, rows, size, path)


def _check_arguments(fps, num_frames, strategy):
    if strategy is None:
        strategy = "interval" if fps is not None else "uniform"
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Expected `strategy` to be one of {STRATEGIES} or None. Received: strategy={strategy!r}"
        )
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < math.inf
    ):
        raise ValueError(f"Expected `fps` to be a positive number. Received: fps={fps!r}")
    check_count("num_frames", num_frames)
    if strategy == "interval" and fps is None:
        raise ValueError("Expected `fps` to be given with strategy='interval'. Received: fps=None")
    if strategy != "interval" and fps is not None:
        raise ValueError(
            f"Expected `fps` to be None with strategy={strategy!r} (only 'interval' uses it). "
            f"Received: fps={fps!r}"
        )
    if strategy != "interval" and num_frames is None:
        raise ValueError(
            f"Expected `num_frames` to be given with strategy={strategy!r}. Received: num_frames=None"
        )
    return strategy


def _generator(seed):
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise ValueError(
            "Expected `seed` to be an int, None or a numpy.random.Generator. "
            f"Received: seed={seed!r}"
        ) from None


def _timeline(path, stream, need_end):
    """`(start, end)` of the stream in seconds (`end` may be `None` if not `need_end`)."""
    base = stream.time_base
    if stream.start_time is None or base is None:
        return _scan_timeline(path)
    start = stream.start_time * base
    if not need_end:
        return start, None
    ends = [] if not stream.duration else [start + stream.duration * base]
    tail = _tail_end(path, stream.start_time + (stream.duration or _FAR))
    if tail is not None:
        ends.append(tail)
    return (start, max(ends)) if ends else _scan_timeline(path)


def _tail_end(path, far):
    """The largest `pts + duration` among the packets after a seek to `far` (or `None`)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        try:
            container.seek(far, stream=stream, backward=True)
        except av.error.FFmpegError:
            return None
        ends = [
            (packet.pts + (packet.duration or 0)) * packet.time_base
            for packet in container.demux(stream)
            if packet.size and packet.pts is not None and packet.time_base is not None
        ]
    return max(ends, default=None)


def _scan_timeline(path):
    """`(start, end)` in seconds from the packets of the first video stream, not decoded."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        first = last = None
        count = 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet at the end
            count += 1
            if packet.pts is None or packet.time_base is None:
                continue
            begin = packet.pts * packet.time_base
            finish = begin + (packet.duration or 0) * packet.time_base
            first = begin if first is None else min(first, begin)
            last = finish if last is None else max(last, finish)
        rate = stream.average_rate or stream.guessed_rate
    if first is not None:
        return first, last
    if rate:
        return fractions.Fraction(0), count / fractions.Fraction(rate)
    return fractions.Fraction(0), None


def _targets(strategy, start, end, fps, num_frames, rng):
    """The sorted target times (Fractions) and the number of rows to return."""
    if strategy == "interval":
        if not isinstance(fps, fractions.Fraction):
            # A float means the decimal written: 0.2 is 1/5, not the double below it.
            fps = fractions.Fraction(fps).limit_denominator(1_000_000)
        step = 1 / fps
        if end is None:
            count = num_frames or 1
        else:
            count = max(1, math.ceil((end - start) / step))
            count = count if num_frames is None else min(count, num_frames)
        return [start + k * step for k in range(count)], num_frames or count
    if end is None:
        # A stream with neither timestamps nor a frame rate: no timeline to spread over.
        end = start
    segment = (end - start) / num_frames
    if strategy == "uniform":
        offsets = [fractions.Fraction(1, 2)] * num_frames
    else:
        offsets = [fractions.Fraction(float(u)) for u in rng.random(num_frames)]
    return [start + (i + offset) * segment for i, offset in enumerate(offsets)], num_frames


class _Pick:
    """A decoded frame and its time; converted to RGB at most once, when returned."""

    __slots__ = ("_duration", "_frame", "_image", "time")

    def __init__(self, frame, time):
        self._frame, self._image, self.time = frame, None, time
        self._duration = (frame.duration, frame.time_base)

    def image(self):
        if self._image is None:
            self._image = frame_to_rgb(self._frame)
            self._frame = None  # let the decoder reuse its buffer
        return self._image

    def end(self, stream):
        """When the frame stops being displayed: its time plus its duration."""
        duration, base = self._duration
        if duration and base is not None:
            return self.time + duration * base
        rate = stream.average_rate or stream.guessed_rate
        return self.time + (1 / fractions.Fraction(rate) if rate else 0)


def _select(source, targets):
    """The `_Pick` displayed at each target time (`None` past the end of the video)."""
    picks, j, previous = [None] * len(targets), 0, None
    while j < len(targets):
        item = source.next()
        if item is None:
            break
        current = _Pick(*item)
        while j < len(targets) and targets[j] <= current.time:
            # Before the first frame, the first frame is the one displayed.
            exact = targets[j] == current.time or previous is None
            picks[j] = current if exact else previous
            picks[j].image()  # now, so that the decoder's buffer is let go
            j += 1
        previous = current
        if j < len(targets) and targets[j] - current.time > source.min_gap:
            source.seek_towards(targets[j], current.time)
    if previous is not None and j < len(targets):
        end = previous.end(source.stream)
        for k in range(j, len(targets)):
            if targets[k] < end:
                picks[k] = previous
                previous.image()
    return picks


def _assemble(picks, rows, size, path):
    images = {}  # one array per distinct pick, in the order first returned
    for pick in picks:
        if pick is not None and id(pick) not in images:
            images[id(pick)] = pick.image()
    shapes = sorted({image.shape for image in images.values()})
    if size is None and len(shapes) > 1:
        raise VideoDecodeError(
            f"Video file {path!r} changes frame size ({shapes}); pass `size` to resize every "
            "frame to one size."
        )
    if size is not None and images:
        if len(shapes) == 1:
            resized = resize_image(np.stack(list(images.values())), size).numpy()
        else:
            resized = [resize_image(np.ascontiguousarray(i), size).numpy() for i in images.values()]
        images = dict(zip(images, resized, strict=True))
    shape = next(iter(images.values())).shape if images else (*(size or (0, 0)), 3)
    frames = np.zeros((rows, *shape), np.uint8)
    timestamps = np.zeros(rows, np.float64)
    mask = np.zeros(rows, bool)
    for row, pick in enumerate(picks):
        if pick is not None:
            frames[row] = images[id(pick)]
            timestamps[row] = float(pick.time)
            mask[row] = True
    return SampledFrames(frames, timestamps, mask)
