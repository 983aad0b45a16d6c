"""Bounded reads (issue 23): only regular files are opened, and an image whose header
declares more pixels than `max_image_pixels` is refused before anything is decoded."""

import io
import os
import re
import socket
import struct
import tempfile
import threading
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from mmrep.data.manifest import from_manifest
from mmrep.preprocessing import load_audio, load_image, read_video, sample_frames
from mmrep.preprocessing.image_io import (
    MAX_IMAGE_PIXELS,
    ImageDecodeError,
    image_dimensions,
    read_image_file,
)

READERS = {
    "image": read_image_file,
    "audio": load_audio,
    "video": read_video,
    "frames": lambda path: sample_frames(path, num_frames=2),
}
# Peak Python memory a refusal may use: far below what decoding the declared image takes.
MEMORY_LIMIT = 50 * 2**20


def call_briefly(function, path, seconds=20):
    """`function(path)`'s exception, from a thread; fails the test if it blocks.

    A reader blocked opening a FIFO is released by opening the FIFO for writing, so a
    failing test does not hang the session.
    """
    outcome = {}

    def run():
        try:
            outcome["value"] = function(path)
        except BaseException as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if os.path.exists(path) and not os.path.isfile(path):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(seconds)
        pytest.fail(f"reading {path} blocked for {seconds} s")
    if "error" not in outcome:
        pytest.fail(f"reading {path} was not refused")
    return outcome["error"]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return str(path)


@pytest.fixture
def unix_socket():
    # A short folder: socket paths are limited to about 100 bytes.
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        path = os.path.join(folder, "s.png")
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        try:
            yield path
        finally:
            server.close()


@pytest.mark.parametrize("reader", READERS)
def test_a_fifo_is_refused_without_blocking(fifo, reader):
    error = call_briefly(READERS[reader], fifo)
    assert isinstance(error, ValueError), repr(error)
    assert "named pipe (FIFO), not a regular file" in str(error) and "pipe.png" in str(error)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused(reader, device):
    error = call_briefly(READERS[reader], device)
    assert isinstance(error, ValueError), repr(error)
    assert f"'{device}' is a character device, not a regular file" in str(error)


@pytest.mark.parametrize("reader", READERS)
def test_a_folder_is_refused(tmp_path, reader):
    error = call_briefly(READERS[reader], str(tmp_path))
    assert isinstance(error, ValueError), repr(error)
    assert "is a folder, not a regular file" in str(error)


@pytest.mark.parametrize("reader", READERS)
def test_a_socket_is_refused(unix_socket, reader):
    error = call_briefly(READERS[reader], unix_socket)
    assert isinstance(error, ValueError), repr(error)
    assert "is a socket, not a regular file" in str(error)


@pytest.mark.parametrize("reader", READERS)
def test_a_missing_file_is_still_file_not_found(tmp_path, reader):
    error = call_briefly(READERS[reader], str(tmp_path / "absent.png"))
    assert isinstance(error, FileNotFoundError) and "absent.png" in str(error)


def test_a_manifest_naming_a_fifo_or_a_device_names_the_row_and_what_it_is(tmp_path, fifo):
    (tmp_path / "m.csv").write_text("image,audio\npipe.png,\n,/dev/zero\n")
    error = call_briefly(lambda _: list(from_manifest(tmp_path / "m.csv", rows=[1])), fifo)
    assert re.search(r"m\.csv: row 1: image file 'pipe\.png'.*named pipe", str(error))
    with pytest.raises(Exception, match=r"row 2: audio file '/dev/zero'.*character device"):
        list(from_manifest(tmp_path / "m.csv", image_size=4, rows=[2], allow_outside=True))


# --- Declared image sizes ----------------------------------------------------------------


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png(width=100_000, height=100_000):
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + bytes(30))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def huge_jpeg(width=65_000, height=65_000):
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    return b"\xff\xd8" + app0 + sof + sos + bytes(64) + b"\xff\xd9"


def huge_gif(screen=(65_000, 65_000), image=None):
    image = image or screen
    data = b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0)
    data += b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # graphic control extension
    data += b"\x2c" + struct.pack("<HHHHB", 0, 0, *image, 0)
    data += b"\x02\x02\x44\x01\x00"  # LZW minimum code size, one sub-block, terminator
    return data + b";"


def huge_bmp(width=100_000, height=-100_000):
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = bytes(64)
    size = 14 + len(info) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(info)) + info + pixels


def _riff(chunk, body):
    payload = b"WEBP" + chunk + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def huge_webp(kind):
    if kind == "VP8":  # lossy: 14-bit sizes
        body = b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", 16383, 16383) + bytes(20)
        return _riff(b"VP8 ", body)
    if kind == "VP8L":  # lossless: 14-bit sizes minus one, after the signature byte
        bits = (16383) | (16383 << 14)
        return _riff(b"VP8L", b"\x2f" + struct.pack("<I", bits) + bytes(20))
    # VP8X: 24-bit canvas sizes minus one
    canvas = (2**24 - 1).to_bytes(3, "little") * 2
    return _riff(b"VP8X", b"\x00\x00\x00\x00" + canvas)


HUGE = {
    "png": huge_png(),
    "jpeg": huge_jpeg(),
    "gif": huge_gif(),
    "gif_first_image": huge_gif(screen=(1, 1), image=(65_000, 65_000)),
    "bmp": huge_bmp(),
    "bmp_core": b"BM"
    + struct.pack("<IHHI", 14 + 12 + 16, 0, 0, 26)
    + struct.pack("<IHHHH", 12, 65_000, 65_000, 1, 24)
    + bytes(16),
    "webp_vp8": huge_webp("VP8"),
    "webp_vp8l": huge_webp("VP8L"),
    "webp_vp8x": huge_webp("VP8X"),
}


@pytest.mark.parametrize("name", HUGE)
def test_a_huge_declared_image_is_refused_before_decoding(tmp_path, name):
    path = tmp_path / f"huge.{name}"
    path.write_bytes(HUGE[name])
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match=r"huge\..*declares \d+×\d+ pixels") as info:
            read_image_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT
    assert f"max_image_pixels={MAX_IMAGE_PIXELS}" in str(info.value)
    assert MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS == 89_478_485
    assert read_image_file(path, max_image_pixels=None) == HUGE[name]


def test_load_image_and_the_manifest_refuse_a_huge_png(tmp_path):
    (tmp_path / "huge.png").write_bytes(HUGE["png"])
    with pytest.raises(ImageDecodeError, match=r"100000×100000"):
        load_image(tmp_path / "huge.png")
    (tmp_path / "m.csv").write_text("image\nhuge.png\n")
    with pytest.raises(Exception, match=r"m\.csv: row 1: image file 'huge\.png'.*100000×100000"):
        list(from_manifest(tmp_path / "m.csv", image_size=4))
    with pytest.raises(Exception, match=r"row 1: image file 'huge\.png'.*max_image_pixels=9"):
        next(iter(from_manifest(tmp_path / "m.csv", image_size=4, max_image_pixels=9)))


def _pil(fmt, mode="RGB", **kwargs):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 4), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").convert(mode).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _animated_gif():
    frames = [Image.new("RGB", (30, 20), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


REAL = {
    "png": _pil("PNG"),
    "png_rgba": _pil("PNG", mode="RGBA"),
    "jpeg": _pil("JPEG"),
    "jpeg_progressive_exif": _pil(
        "JPEG", progressive=True, exif=Image.Exif().tobytes(), icc_profile=b"\x00" * 5000
    ),
    "gif": _pil("GIF"),
    "gif_animated": _animated_gif(),
    "bmp": _pil("BMP"),
    "webp_lossy": _pil("WEBP"),
    "webp_lossless": _pil("WEBP", lossless=True),
    # Extended (VP8X), as metadata makes it. (TensorFlow cannot decode a WebP with alpha
    # to 3 channels, so none is used here.)
    "webp_extended": _pil("WEBP", exif=Image.Exif().tobytes()),
}


@pytest.mark.parametrize("name", REAL)
def test_an_image_right_at_the_limit_is_read_and_one_pixel_over_is_refused(tmp_path, name):
    # PIL wrote these 30×20 files: the dimensions read from each header are PIL's.
    data = REAL[name]
    assert Image.open(io.BytesIO(data)).size == (30, 20)
    assert name != "webp_extended" or data[12:16] == b"VP8X"
    assert image_dimensions(data) == (30, 20)
    path = tmp_path / f"at_limit.{name}"
    path.write_bytes(data)
    assert read_image_file(path, max_image_pixels=600) == data
    assert load_image(path, max_image_pixels=600).shape == (20, 30, 3)
    with pytest.raises(ImageDecodeError, match=r"declares 30×20 pixels.*max_image_pixels=599"):
        read_image_file(path, max_image_pixels=599)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "many"])
def test_max_image_pixels_is_checked(tmp_path, bad):
    path = tmp_path / "a.png"
    path.write_bytes(REAL["png"])
    with pytest.raises(ValueError, match=r"Expected `max_image_pixels`.*Received"):
        read_image_file(path, max_image_pixels=bad)
    (tmp_path / "m.csv").write_text("image\na.png\n")
    with pytest.raises(ValueError, match=r"max_image_pixels"):
        from_manifest(tmp_path / "m.csv", max_image_pixels=bad)
