"""Small real video files for the frame-sampling tests, written with PyAV.

Every frame shows its own index in binary as 12 large black or white blocks (3 rows
of 4), which survives lossy coding and resizing, so a test can read back which frame it
was given without trusting any timestamp.
"""

import fractions

import av
import numpy as np

BITS = 12


def index_frame(index, height=96, width=128):
    """A uint8 RGB frame whose blocks spell `index` (bit b at row b // 4, column b % 4)."""
    image = np.zeros((height, width, 3), np.uint8)
    block_h, block_w = height // 3, width // 4
    for bit in range(BITS):
        if (index >> bit) & 1:
            row, col = divmod(bit, 4)
            image[row * block_h : (row + 1) * block_h, col * block_w : (col + 1) * block_w] = 255
    return image


def read_index(image):
    """The index spelt by a frame from `index_frame` (any size), from the block centres."""
    height, width = image.shape[:2]
    block_h, block_w = height / 3, width / 4
    index = 0
    for bit in range(BITS):
        row, col = divmod(bit, 4)
        centre = image[
            int((row + 0.25) * block_h) : int((row + 0.75) * block_h),
            int((col + 0.25) * block_w) : int((col + 0.75) * block_w),
        ]
        if centre.mean() > 127:
            index |= 1 << bit
    return index


def write_indexed(
    path,
    num_frames,
    rate=10,
    *,
    pts=None,
    time_base=None,
    gop=None,
    codec="libx264",
    container_format=None,
    rotation=None,
    options=None,
    height=96,
    width=128,
):
    """Writes frames `index_frame(0..num_frames-1)` with PyAV.

    Args:
        path: the file; its extension picks the container unless `container_format`.
        num_frames: int. Number of frames.
        rate: the stream's nominal frame rate.
        pts: optional list of int timestamps in `time_base` (variable frame rate);
            by default frame `i` has pts `i` in `1 / rate`.
        time_base: `fractions.Fraction`, the time base of `pts`.
        gop: optional int, the encoder's keyframe interval (libx264: `keyint`).
        codec: encoder name.
        container_format: optional FFmpeg format name (e.g. "h264" for a raw stream).
        rotation: optional counterclockwise degrees for the display matrix.
        options: optional dict of encoder options (e.g. `{"x264-params": "scenecut=0"}`).
    """
    if pts is None:
        pts, time_base = list(range(num_frames)), fractions.Fraction(1, rate)
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if options is not None:
            stream.options = options
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(index, height, width), format="rgb24")
            frame.pts, frame.time_base = pts[index], time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def decode_all(path):
    """The reference: every frame of the first video stream as RGB, and pts in seconds."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    images = np.stack([frame.to_ndarray(format="rgb24") for frame in frames])
    times = [None if f.pts is None else f.pts * f.time_base for f in frames]
    return images, times


def write_audio_only(path):
    """One second of a 440 Hz tone in AAC, and no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


class CountingContainer:
    """Wraps a PyAV input container; counts decoded frames and seeks.

    `seek_hook(container, offset, **kwargs)`, when given, replaces the real seek.
    """

    def __init__(self, container, seek_hook=None):
        self._container = container
        self._seek_hook = seek_hook
        self.decoded = 0
        self.seeks = []

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        self._container.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self._container.__exit__(*exc_info)

    def decode(self, *args, **kwargs):
        for frame in self._container.decode(*args, **kwargs):
            self.decoded += 1
            yield frame

    def seek(self, offset, **kwargs):
        self.seeks.append(offset)
        if self._seek_hook is not None:
            return self._seek_hook(self._container, offset, **kwargs)
        return self._container.seek(offset, **kwargs)


def count_opens(monkeypatch, seek_hook=None):
    """Makes `av.open` return `CountingContainer`s; returns the list they are added to."""
    opened, real_open = [], av.open

    def counting_open(*args, **kwargs):
        opened.append(CountingContainer(real_open(*args, **kwargs), seek_hook))
        return opened[-1]

    monkeypatch.setattr(av, "open", counting_open)
    return opened
