"""Writing uint8 RGB frames to a video file, and reading frames and timestamps back.

Both directions use PyAV (FFmpeg). `write_video` encodes H.264 with libx264 at CRF 10
(visually lossless), or MPEG-4 Part 2 at quantiser 2 where the PyAV build has no libx264.
`read_video` decodes the first video stream, stops as soon as it has `max_frames` frames,
and applies the stream's rotation metadata as FFmpeg's command-line tools do.
`FrameSource` (frames with exact times, and seeking through the demuxer's index) and the
helpers `decode_errors`, `first_video_stream` and `frame_to_rgb` serve
`mmrep.preprocessing.frame_sampling` too.
"""

import contextlib
import errno
import fractions
import math
import numbers
import os
import uuid
import warnings

import av
import numpy as np

from mmrep.preprocessing.image_io import _check_size, resize_image
from mmrep.preprocessing.regular_file import check_regular
from mmrep.utils.arguments import is_int

_CODECS = ("libx264", "mpeg4")
# A seek costs a decoder flush and refill: below this many frames of gap, decode through.
_SEEK_MIN_FRAMES = 8
_DEFAULT_GAP = fractions.Fraction(1, 3)  # seconds, for streams that report no frame rate


class VideoDecodeError(ValueError):
    """Raised when a file cannot be read as a video."""


def write_video(frames, path, fps=8, codec="libx264"):
    """Encodes uint8 RGB frames into a video file, atomically.

    The container follows the extension of `path` (`.mp4` is the usual choice). With
    libx264, even frame sizes are stored as yuv420p, the pixel format every player
    handles; odd sizes, which 4:2:0 chroma cannot represent, are stored as yuv444p so
    that the frames read back have exactly the size written (no padding or cropping).
    If this PyAV build has no libx264 encoder, MPEG-4 Part 2 (yuv420p, any size) is
    written instead, with a `RuntimeWarning`.

    The file is written under a temporary name next to `path` and moved into place
    only once complete, so a failed write leaves neither a partial file nor a changed
    old one. The encoder runs on one thread, so the same frames give the same bytes.

    Args:
        frames: uint8 array `[time, height, width, 3]` (RGB), with at least one frame.
        path: str or `os.PathLike`. The output file; its extension picks the container.
        fps: int, float or `fractions.Fraction`. Frames per second. Defaults to `8`.
        codec: `"libx264"` (H.264) or `"mpeg4"` (MPEG-4 Part 2). Defaults to
            `"libx264"`.

    Returns:
        `path`, as a str.

    Raises:
        ValueError: if `frames`, `fps`, `codec` or the extension of `path` is invalid.
        FileNotFoundError: if the folder of `path` does not exist.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            "Expected `frames` to be a uint8 array [time, height, width, 3]. "
            f"Received: dtype={frames.dtype}, shape={frames.shape}"
        )
    if 0 in frames.shape:
        raise ValueError(f"Expected at least one non-empty frame. Received: shape={frames.shape}")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < 1e6:
        raise ValueError(f"Expected `fps` to be a positive number. Received: fps={fps!r}")
    if codec not in _CODECS:
        raise ValueError(f"Expected `codec` to be one of {_CODECS}. Received: codec={codec!r}")
    if codec == "libx264" and not _has_encoder("libx264"):
        warnings.warn(
            "This PyAV build has no libx264 encoder; writing MPEG-4 Part 2 instead.",
            RuntimeWarning,
            stacklevel=2,
        )
        codec = "mpeg4"
    path = os.fspath(path)
    if not os.path.isdir(os.path.dirname(path) or "."):
        # FFmpeg would only fail at the first packet, without naming the file.
        raise FileNotFoundError(errno.ENOENT, "No such folder for the video file", path)
    root, extension = os.path.splitext(path)
    # The temporary name keeps the extension, from which FFmpeg picks the container.
    temporary = f"{root}.{uuid.uuid4().hex[:12]}.tmp{extension}"
    rate = fractions.Fraction(fps).limit_denominator(1_000_000)
    try:
        try:
            container = av.open(temporary, "w")
        except ValueError as error:
            raise ValueError(
                "Expected `path` to end in a video container extension such as .mp4. "
                f"Received: path={path!r} ({error})"
            ) from None
        with container:
            stream = container.add_stream(codec, rate=rate)
            _, height, width, _ = frames.shape
            stream.width, stream.height = width, height
            if codec == "libx264":
                stream.pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
                # One encoder thread: x264's frame threads make the bytes vary run to run.
                stream.options = {"crf": "10", "threads": "1"}
            else:
                # A fixed quantiser of 2. FFmpeg's encoder ignores a `qscale` option and
                # `global_quality` (its command line copies that into every frame, which
                # PyAV does not); with the fixed-qscale flag, the quantiser is clipped
                # to [qmin, qmax], so pinning both sets it.
                stream.pix_fmt = "yuv420p"
                stream.codec_context.qscale = True
                stream.options = {"qmin": "2", "qmax": "2", "threads": "1"}
            for index, frame in enumerate(frames):
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = index
                video_frame.time_base = 1 / rate
                container.mux(stream.encode(video_frame))
            container.mux(stream.encode())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    return path


def read_video(path, max_frames=256, size=None):
    """Decodes the frames of a video file into uint8 RGB arrays with their timestamps.

    Reads the first video stream and stops decoding as soon as `max_frames` frames are
    read, so the start of a long file costs no more than a short one. A rotation in the
    stream's display matrix (as phones record portrait video; read from PyAV's
    `VideoFrame.rotation`) is applied, rounded to a quarter turn, so frames come out
    the way players show them; flips in the matrix are not applied.

    Args:
        path: str or `os.PathLike`. The video file.
        max_frames: int or `None`. Most frames to decode; `None` decodes them all.
            Defaults to `256`.
        size: int, `(height, width)`, or `None`. Resize every frame by antialiased
            bilinear interpolation, as `decode_image` does. Defaults to `None`.

    Returns:
        A tuple `(frames, timestamps)`: uint8 `[time, height, width, 3]` and float64
        `[time]`, the presentation time of each frame in seconds (`pts * time_base`, as
        stored, so a stream that starts late starts late). Frames without a timestamp,
        as in a raw H.264 stream, get `index / average_rate` of the stream.

    Raises:
        FileNotFoundError: if the file does not exist.
        VideoDecodeError: if the path is not a regular file (a FIFO, device, socket or
            folder, refused before FFmpeg opens it), or the file is not a media file or
            is corrupt, has no video stream, has no decodable frame, or changes frame
            size while `size` is `None`.
        ValueError: if `max_frames` or `size` is invalid.
    """
    max_frames = check_count("max_frames", max_frames)
    size = _check_size(size)
    path = os.fspath(path)
    check_regular(path, VideoDecodeError, "Video file")
    frames, timestamps = [], []
    with decode_errors(path), av.open(path) as container:
        stream = first_video_stream(container, path)
        for frame in container.decode(stream):
            image = frame_to_rgb(frame)
            if size is not None:
                image = resize_image(np.ascontiguousarray(image), size).numpy()
            frames.append(image)
            timestamps.append(_timestamp(frame, stream, len(timestamps)))
            if len(frames) == max_frames:
                break
    if not frames:
        raise VideoDecodeError(f"Video file {path!r} has a video stream but no decodable frame.")
    shapes = sorted({image.shape for image in frames})
    if len(shapes) > 1:
        raise VideoDecodeError(
            f"Video file {path!r} changes frame size ({shapes}); pass `size` to resize every "
            "frame to one size."
        )
    return np.stack(frames), np.asarray(timestamps, np.float64)


@contextlib.contextmanager
def decode_errors(path):
    """Turns FFmpeg's errors inside the block into `VideoDecodeError` naming `path`.

    FFmpeg errors that are also `OSError`s (a missing file, a permission problem) pass
    through unchanged.
    """
    try:
        yield
    except av.error.FFmpegError as error:
        if isinstance(error, OSError):
            raise
        raise VideoDecodeError(f"Could not decode video file {path!r}: {error}") from None


def first_video_stream(container, path):
    """The first video stream of an open PyAV container, set up for threaded decoding.

    Raises:
        VideoDecodeError: if the container has no video stream.
    """
    if not container.streams.video:
        kinds = [stream.type for stream in container.streams]
        raise VideoDecodeError(
            f"Video file {path!r} has no video stream. Received streams: {kinds}"
        )
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def frame_to_rgb(frame):
    """A decoded PyAV video frame as uint8 RGB `[height, width, 3]`, turned upright.

    The rotation of the stream's display matrix (PyAV's `VideoFrame.rotation`,
    counterclockwise degrees) is applied rounded to a quarter turn, as FFmpeg's
    command-line tools do; flips are not applied. The result may be a view.
    """
    image = frame.to_ndarray(format="rgb24")
    quarter_turns = round(getattr(frame, "rotation", 0) / 90) % 4
    if quarter_turns:
        # np.rot90 turns counterclockwise, the sense of PyAV's `rotation`.
        image = np.rot90(image, quarter_turns)
    return image


class FrameSource:
    """Decoded frames of a file's first video stream, in order, with exact times.

    `next()` gives `(frame, time)`, `time` a `fractions.Fraction` in seconds:
    `pts * time_base`, or for frames without a timestamp `index / average_rate`.
    `seek_towards(target, position)` skips ahead when the demuxer's index
    (`Stream.index_entries`) holds a keyframe more than `min_gap` seconds (8 frames)
    after `position` and at or before `target`; the next frame is then checked: if it is
    already past `target` (the seek landed one keyframe late), the source seeks back to
    `position`, and if that also lands late, reopens the file and decodes from the start
    without seeking. A failed seek reopens the file the same way. Each seek aims at a
    later keyframe than the one before, so a demuxer that lands short cannot loop.
    Streams without timestamps or without an index are never sought. Matroska reads its
    index only on the first seek, so a Matroska file is sought to its start when opened.
    `decoded` counts the frames decoded so far, reopenings included.

    Args:
        path: str. The video file (opened at once; call `close()`).

    Raises:
        VideoDecodeError: if the file has no video stream.
        av.error.FFmpegError: if FFmpeg cannot open or read the file (wrap the use in
            `decode_errors(path)`).
    """

    def __init__(self, path):
        self._path = path
        self.decoded = 0
        self._open(seeking=True)

    def _open(self, seeking):
        self.container = av.open(self._path)
        try:
            self.stream = first_video_stream(self.container, self._path)
        except VideoDecodeError:
            self.container.close()
            raise
        stream = self.stream
        rate = stream.average_rate or stream.guessed_rate
        self.min_gap = _SEEK_MIN_FRAMES / fractions.Fraction(rate) if rate else _DEFAULT_GAP
        self.seeking = seeking and stream.time_base is not None
        if self.seeking and "matroska" in self.container.format.name:
            # Matroska parses its cues (the index) on the first seek.
            try:
                self.container.seek(stream.start_time or 0, stream=stream, backward=True)
            except av.error.FFmpegError:
                self.close()
                self._open(seeking=False)
                return
        self._frames = self.container.decode(stream)
        self._count = 0  # frames since opening: the clock of frames without timestamps
        self._first_pts = None
        self._sought = None  # the last keyframe time sought
        self._landing = None  # (target, position, retried) to check after a seek

    def close(self):
        self.container.close()

    def next(self):
        """The next `(frame, time)`, or `None` at the end of the stream."""
        frame = next(self._frames, None)
        if frame is None:
            return None
        self.decoded += 1
        time = self._time(frame)
        if self._landing is not None:
            target, position, retried = self._landing
            self._landing = None
            if time > target:
                # Landed past the frame displayed at `target`: start further back.
                if retried:
                    self._restart()
                else:
                    self._seek(position, target, position, retried=True)
                return self.next()
        return frame, time

    def _time(self, frame):
        self._count += 1
        if frame.pts is not None and frame.time_base is not None:
            if self._count == 1:
                self._first_pts = frame.pts
            return frame.pts * frame.time_base
        self.seeking = False  # positions after a seek could not be counted
        rate = self.stream.average_rate or self.stream.guessed_rate
        if not rate:
            raise VideoDecodeError(
                f"Video file {self._path!r} has frames without timestamps and no frame rate."
            )
        return (self._count - 1) / fractions.Fraction(rate)

    def seek_towards(self, target, position):
        """Seeks to the keyframe before `target` if the index has one well past `position`."""
        entries = self.stream.index_entries
        if not self.seeking or self._first_pts is None or not len(entries):
            return
        # Some demuxers (MP4, FLV) index decoding times, which run a constant delay ahead
        # of presentation times with B-frames: shift the index onto the first frame's pts.
        shift = self._first_pts - entries[0].timestamp
        base = self.stream.time_base
        found = entries.search_timestamp(math.floor(target / base) - shift, backward=True)
        if found < 0:
            return
        keyframe = (entries[found].timestamp + shift) * base
        if keyframe > position + self.min_gap and (self._sought is None or keyframe > self._sought):
            self._sought = keyframe
            self._seek(keyframe, target, position, retried=False)

    def _seek(self, time, target, position, retried):
        try:
            self.container.seek(
                math.floor(time / self.stream.time_base), stream=self.stream, backward=True
            )
        except av.error.FFmpegError:
            self._restart()  # where a failed seek left the demuxer is unknown
            return
        self._frames = self.container.decode(self.stream)
        self._landing = (target, position, retried)

    def _restart(self):
        self.close()
        self._open(seeking=False)


def check_count(name, value):
    """Returns `value` (`None` or a positive int) as `None` or a Python int.

    Raises:
        ValueError: naming the argument, for anything else.
    """
    if value is not None and not is_int(value, 1):
        raise ValueError(
            f"Expected `{name}` to be a positive int or None. Received: {name}={value!r}"
        )
    return None if value is None else int(value)


def _has_encoder(name):
    try:
        av.Codec(name, "w")
    except ValueError:
        return False
    return True


def _timestamp(frame, stream, index):
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    rate = stream.average_rate
    return index / float(rate) if rate else float("nan")
