"""Writing uint8 RGB frames to a video file, and reading frames and timestamps back.

Both directions use PyAV (FFmpeg). `write_video` encodes H.264 with libx264 at CRF 10
(visually lossless), or MPEG-4 Part 2 at quantiser 2 where the PyAV build has no libx264.
`read_video` decodes the first video stream, stops as soon as it has `max_frames` frames,
and applies the stream's rotation metadata as FFmpeg's command-line tools do.
"""

import contextlib
import errno
import fractions
import numbers
import os
import uuid
import warnings

import av
import numpy as np

from mmrep.preprocessing.image_io import _check_size, resize_image

_CODECS = ("libx264", "mpeg4")


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
    old one.

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
                stream.options = {"crf": "10"}
            else:
                # A fixed quantiser of 2. FFmpeg's encoder ignores a `qscale` option and
                # `global_quality` (its command line copies that into every frame, which
                # PyAV does not); with the fixed-qscale flag, the quantiser is clipped
                # to [qmin, qmax], so pinning both sets it.
                stream.pix_fmt = "yuv420p"
                stream.codec_context.qscale = True
                stream.options = {"qmin": "2", "qmax": "2"}
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
        VideoDecodeError: if the file is not a media file or is corrupt, has no video
            stream, has no decodable frame, or changes frame size while `size` is
            `None`.
        ValueError: if `max_frames` or `size` is invalid.
    """
    if max_frames is not None and (
        isinstance(max_frames, bool)
        or not isinstance(max_frames, numbers.Integral)
        or max_frames < 1
    ):
        raise ValueError(
            f"Expected `max_frames` to be a positive int or None. Received: max_frames={max_frames!r}"
        )
    size = _check_size(size)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "No such video file", path)
    frames, timestamps = [], []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                kinds = [stream.type for stream in container.streams]
                raise VideoDecodeError(
                    f"Video file {path!r} has no video stream. Received streams: {kinds}"
                )
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                image = frame.to_ndarray(format="rgb24")
                quarter_turns = round(getattr(frame, "rotation", 0) / 90) % 4
                if quarter_turns:
                    # np.rot90 turns counterclockwise, the sense of PyAV's `rotation`.
                    image = np.rot90(image, quarter_turns)
                if size is not None:
                    image = resize_image(np.ascontiguousarray(image), size).numpy()
                frames.append(image)
                timestamps.append(_timestamp(frame, stream, len(timestamps)))
                if len(frames) == max_frames:
                    break
    except av.error.FFmpegError as error:
        if isinstance(error, OSError):
            raise
        raise VideoDecodeError(f"Could not decode video file {path!r}: {error}") from None
    if not frames:
        raise VideoDecodeError(f"Video file {path!r} has a video stream but no decodable frame.")
    shapes = sorted({image.shape for image in frames})
    if len(shapes) > 1:
        raise VideoDecodeError(
            f"Video file {path!r} changes frame size ({shapes}); pass `size` to resize every "
            "frame to one size."
        )
    return np.stack(frames), np.asarray(timestamps, np.float64)


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
