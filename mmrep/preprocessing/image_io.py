"""Decoding image bytes and files into uint8 arrays, optionally resized.

`decode_image` is a TensorFlow function (it also runs inside a `tf.data` map);
`load_image` reads a file and reports any failure with the file's name.

Truncated files. TensorFlow 2.21's decoders are strict (checked for every truncation
length of test images): a PNG (even one missing only its IEND chunk), GIF or BMP cut
short, or a JPEG (baseline or progressive) cut short where pixel data is lost, fails to
decode ("jpeg::Uncompress failed", "Invalid PNG data") instead of coming back partly
grey; only `decode_jpeg(try_recover_truncated=True)` would do that, and it is not used.
What TensorFlow may accept is a JPEG that lost only its final end-of-image marker byte
(whether it does depends on the image), or a GIF that lost its trailer byte: every pixel
is still there. `load_image` refuses such a JPEG too when no end-of-image marker is left
in the file, so that a partly copied file is reported as one.

Bounded reads. `read_image_file` opens only regular files (a FIFO, device, socket or
folder is refused before it is opened: `mmrep.preprocessing.regular_file`), and reads
the width and height the file's header declares (PNG IHDR, JPEG SOFn, GIF logical
screen and every image descriptor, BMP, WebP VP8/VP8L/VP8X) in Python, refusing more
than `max_image_pixels` before any decoder allocates the pixels: a 100-byte PNG can
declare 100000×100000 pixels (30 GB of RGB).
"""

import os
import re
import struct

import tensorflow as tf

from mmrep.preprocessing.regular_file import open_regular
from mmrep.utils.arguments import is_int

# Pillow's `Image.MAX_IMAGE_PIXELS` (1024 * 1024 * 1024 // 4 // 3): the same images are
# refused by both. A 89-megapixel RGB image decodes to 256 MiB.
MAX_IMAGE_PIXELS = 89_478_485

# ITU-R BT.601 luma, the weights PIL's convert("L") uses; applied to the decoded RGB so
# that `channels=1` means the same thing for every format (TensorFlow's own grey
# conversion exists only for PNG and JPEG, and JPEG's keeps libjpeg's Y plane).
_LUMA = (0.299, 0.587, 0.114)
_TF_ERROR_NOISE = re.compile(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]")


class ImageDecodeError(ValueError):
    """Raised when image bytes or an image file cannot be decoded."""


def decode_image(data, size=None, channels=3):
    """Decodes PNG, JPEG, GIF (first frame), BMP or WebP bytes into a uint8 image.

    Greyscale and palette images are expanded to RGB and an alpha channel is dropped
    (not composited) when `channels=3`; `channels=1` gives BT.601 luma, rounded. JPEG
    is decoded with libjpeg's accurate integer IDCT, as PIL does, rather than
    `tf.io.decode_image`'s fast one, which is about one level off on average. With
    `size`, the image is resized by antialiased bilinear interpolation (see
    `resize_image`). Works eagerly and in graph mode, for example inside
    `tf.data.Dataset.map`.

    Args:
        data: bytes, or a scalar `tf.string` tensor holding the encoded image.
        size: int, `(height, width)`, or `None`. The output size; an int gives a
            square. `None` keeps the decoded size. Defaults to `None`.
        channels: int, 1 or 3. Number of output channels. Defaults to `3`.

    Returns:
        A uint8 tensor `[height, width, channels]`.

    Raises:
        ValueError: if `size` or `channels` is invalid, or `data` is not a scalar.
        TypeError: if `data` is neither bytes nor a string tensor.
        ImageDecodeError: eagerly, if the bytes are not a decodable image. In graph
            mode the failure surfaces when the graph runs, as TensorFlow's
            `InvalidArgumentError`.
    """
    size = _check_size(size)
    _check_channels(channels)
    if isinstance(data, bytes | bytearray | memoryview):
        data = tf.constant(bytes(data))
    elif not isinstance(data, tf.Tensor) or data.dtype != tf.string:
        raise TypeError(
            "Expected `data` to be bytes or a scalar tf.string tensor (use `load_image` "
            f"for a path). Received: data of type {type(data).__name__}"
        )
    if data.shape.rank not in (None, 0):
        raise ValueError(
            f"Expected `data` to be a scalar string tensor. Received: shape={data.shape}"
        )
    try:
        image = tf.cond(
            tf.io.is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        )
    except tf.errors.InvalidArgumentError as error:
        raise ImageDecodeError(f"Could not decode image: {_reason(error)}") from None
    if channels == 1:
        image = rgb_to_luma(image)
    if size is not None:
        image = resize_image(image, size)
    return image


def rgb_to_luma(images):
    """uint8 RGB `[..., 3]` to uint8 BT.601 luma `[..., 1]`, rounded (PIL's `convert("L")`).

    Args:
        images: uint8 tensor with 3 channels last, any leading shape.

    Returns:
        A uint8 tensor of the same shape with 1 channel last.
    """
    luma = tf.tensordot(tf.cast(images, tf.float32), tf.constant(_LUMA), axes=1)
    return tf.cast(tf.clip_by_value(tf.round(luma), 0.0, 255.0), tf.uint8)[..., None]


def load_image(path, size=None, channels=3, *, max_image_pixels=MAX_IMAGE_PIXELS):
    """Reads and decodes an image file into a uint8 numpy array.

    The file is read in Python (any path `open` accepts, Unicode included) and checked
    by `read_image_file`, then decoded by `decode_image`; every failure names the file.

    Args:
        path: str or `os.PathLike`. The image file.
        size: int, `(height, width)`, or `None`. As in `decode_image`.
            Defaults to `None`.
        channels: int, 1 or 3. As in `decode_image`. Defaults to `3`.
        max_image_pixels: int or `None`. As in `read_image_file`. Defaults to
            `89_478_485` (`MAX_IMAGE_PIXELS`, Pillow's limit).

    Returns:
        A uint8 array `[height, width, channels]`.

    Raises:
        FileNotFoundError: if the file does not exist.
        ImageDecodeError: if the file is not a regular file, is empty, is not an image,
            is truncated, or declares more than `max_image_pixels` pixels.
        ValueError: if `size`, `channels` or `max_image_pixels` is invalid.
    """
    _check_size(size)
    _check_channels(channels)
    path = os.fspath(path)
    data = read_image_file(path, max_image_pixels=max_image_pixels)
    try:
        return decode_image(data, size=size, channels=channels).numpy()
    except ImageDecodeError as error:
        raise ImageDecodeError(f"Could not decode image file {path!r}: {error}") from None


# Leading bytes of the formats `decode_image` reads.
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}


def read_image_file(path, *, max_image_pixels=MAX_IMAGE_PIXELS):
    """Reads an image file's bytes, refusing what cannot be a complete image.

    A check in Python, without decoding, so that a pipeline decoding in the graph can
    still name the file that is bad: the path must name a regular file (a FIFO, device,
    socket or folder is refused before it is opened), the file must be non-empty, start
    with the signature of PNG, JPEG, GIF, BMP or WebP, end as its format ends (a JPEG
    must hold its end-of-image marker, a PNG its IEND chunk, a GIF its trailer, a BMP the
    size its header declares), and declare at most `max_image_pixels` pixels (see
    `image_dimensions`). Corruption inside an intact file is left to the decoder. No
    message quotes the file's content.

    Args:
        path: str or `os.PathLike`. The image file.
        max_image_pixels: int or `None`. The most pixels (width × height) the header
            may declare; a GIF's logical screen and each of its images count alone.
            `None` reads any size. Defaults to `89_478_485` (`MAX_IMAGE_PIXELS`, the
            default of Pillow's `Image.MAX_IMAGE_PIXELS`).

    Returns:
        bytes, the file's content.

    Raises:
        FileNotFoundError: if the file does not exist.
        ImageDecodeError: if the path is not a regular file, or the file is empty, not
            one of those formats, truncated, or declares too many pixels (or no size).
        ValueError: if `max_image_pixels` is neither `None` nor a positive int.
    """
    path = os.fspath(path)
    check_max_image_pixels(max_image_pixels)
    with open_regular(path, ImageDecodeError, "Image file") as f:
        data = f.read()

    def refuse(reason):
        return ImageDecodeError(f"Could not decode image file {path!r}: {reason}")

    if not data:
        raise refuse("the file is empty.")
    kind = _format(data)
    if kind is None:
        raise refuse(
            "Unknown image file format: the file does not start with the signature of PNG, "
            "JPEG, GIF, BMP or WebP."
        )
    # Inside entropy-coded JPEG data a 0xFF byte is always followed by 0x00 or a restart
    # marker, so FF D9 can only be the end-of-image marker (or sit in a header segment,
    # such as an EXIF thumbnail's own EOI). Its absence means the file was cut short.
    complete = {
        "JPEG": lambda: b"\xff\xd9" in data,
        "PNG": lambda: b"IEND" in data[-12:],
        "GIF": lambda: data.rstrip(b"\x00").endswith(b";"),
        "BMP": lambda: len(data) >= 6 and len(data) >= int.from_bytes(data[2:6], "little"),
        "WebP": lambda: len(data) >= 8 + int.from_bytes(data[4:8], "little"),
    }[kind]
    if not complete():
        marker = "end-of-image marker" if kind == "JPEG" else "end"
        raise refuse(f"the {kind} is truncated (it has no {marker}).")
    if max_image_pixels is not None:
        dimensions = image_dimensions(data)
        if dimensions is None:
            raise refuse(f"the {kind} header declares no image size (the file is damaged).")
        width, height = dimensions
        if width * height > max_image_pixels:
            raise refuse(
                f"the {kind} declares {width}×{height} pixels ({width * height}), more "
                f"than max_image_pixels={max_image_pixels}; pass a larger "
                "`max_image_pixels` (or None) to read it."
            )
    return data


def check_max_image_pixels(value):
    """Returns `value` after checking that it is `None` or a positive int."""
    if value is not None and not is_int(value, 1):
        raise ValueError(
            "Expected `max_image_pixels` to be a positive int or None. "
            f"Received: max_image_pixels={value!r}"
        )
    return value


def _format(data):
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((k for sig, k in _SIGNATURES.items() if data.startswith(sig)), None)


def image_dimensions(data):
    """The `(width, height)` an encoded image's header declares, without decoding it.

    Read from the PNG IHDR chunk, the JPEG frame header (SOFn, found by walking the
    marker segments as libjpeg does), the BMP info header (a top-down BMP's negative
    height counted as its size), the WebP VP8, VP8L or VP8X header, and for a GIF the
    larger (in pixels) of the logical screen and each image descriptor, since the
    decoder allocates every frame in full.

    Args:
        data: bytes. The start of an encoded image, or all of it (a GIF is walked
            through to its last image descriptor).

    Returns:
        `(width, height)` as ints, or `None` when `data` is not one of those formats
        or its header is cut short or damaged.
    """
    data = bytes(data)
    try:
        return {
            "PNG": _png_size,
            "JPEG": _jpeg_size,
            "GIF": _gif_size,
            "BMP": _bmp_size,
            "WebP": _webp_size,
            None: lambda _: None,
        }[_format(data)](data)
    except (struct.error, IndexError, ValueError):  # cut short or damaged
        return None


def _png_size(data):
    # IHDR is the first chunk: length, "IHDR", width, height (big-endian).
    if data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


# Start-of-frame markers: C0-C3, C5-C7, C9-CB, CD-CF (C4 is DHT, C8 JPG, CC DAC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data):
    position = 2  # after SOI
    while True:
        # libjpeg skips any bytes before a marker's 0xFF, and 0xFF fill bytes.
        position = data.index(b"\xff", position)
        while data[position] == 0xFF:
            position += 1
        marker = data[position]
        position += 1
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[position + 3 : position + 7])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image, or a scan before any frame header
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
            continue
        position += struct.unpack(">H", data[position : position + 2])[0]


def _gif_size(data):
    width, height, flags = struct.unpack("<HHB", data[6:11])
    sizes = [(width, height)]
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while position < len(data):
        block = data[position]
        if block == 0x2C:  # image descriptor: left, top, width, height, flags
            sizes.append(struct.unpack("<HH", data[position + 5 : position + 9]))
            flags = data[position + 9]
            position += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        elif block == 0x21:  # extension: label, then data sub-blocks
            position += 2
        else:  # the trailer, or a damaged block: what came before is all giflib reads
            break
        while position < len(data) and data[position]:  # sub-blocks up to the terminator
            position += data[position] + 1
        position += 1
    return max(sizes, key=lambda size: size[0] * size[1])


def _bmp_size(data):
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # BITMAPCOREHEADER (OS/2 1.x): unsigned 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _webp_size(data):
    chunk, body = data[12:16], data[20:]
    if chunk == b"VP8 " and body[3:6] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and body[:1] == b"\x2f":  # lossless: 14-bit sizes minus one
        (bits,) = struct.unpack("<I", body[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, 24-bit sizes minus one
        canvas = body[4:10]
        if len(canvas) < 6:
            return None
        return int.from_bytes(canvas[:3], "little") + 1, int.from_bytes(canvas[3:], "little") + 1
    return None


def resize_image(images, size):
    """Resizes uint8 images by antialiased bilinear interpolation.

    Uses `tf.image.resize(method="bilinear", antialias=True)`: a triangle filter on
    half-pixel centres, widened by the scale factor when shrinking (the filter PIL's
    `Image.resize(..., BILINEAR)` applies). The result is rounded and clipped back to
    uint8.

    Args:
        images: uint8 tensor or array, `[height, width, channels]` or
            `[batch, height, width, channels]`.
        size: int or `(height, width)`. The output size; an int gives a square.

    Returns:
        A uint8 tensor with the same rank as `images` and the new height and width.

    Raises:
        ValueError: if `size` is invalid, or `images` is not uint8 of rank 3 or 4.
    """
    size = _check_size(size)
    if size is None:
        raise ValueError("Expected `size` to be an int or (height, width). Received: size=None")
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8 or images.shape.rank not in (3, 4):
        raise ValueError(
            "Expected `images` to be uint8 [height, width, channels] or "
            f"[batch, height, width, channels]. Received: dtype={images.dtype.name}, "
            f"shape={images.shape}"
        )
    resized = tf.image.resize(images, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _check_size(size):
    """Returns `size` as `(height, width)` (or `None`), refusing anything else."""
    if size is None:
        return None
    if is_int(size, 1):
        return (int(size), int(size))
    if isinstance(size, tuple | list) and len(size) == 2 and all(is_int(s, 1) for s in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(
        "Expected `size` to be a positive int, a (height, width) pair of positive ints, "
        f"or None. Received: size={size!r}"
    )


def _check_channels(channels):
    if not is_int(channels) or channels not in (1, 3):
        raise ValueError(f"Expected `channels` to be 1 or 3. Received: channels={channels!r}")


def _reason(error):
    """TensorFlow's error message without its op and function-node decorations."""
    return _TF_ERROR_NOISE.sub("", error.message).strip()
