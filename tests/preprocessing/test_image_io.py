"""Image decoding against PIL's decode and resize, in files written by PIL, and its errors."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mmrep.preprocessing.image_io import (
    ImageDecodeError,
    decode_image,
    load_image,
    resize_image,
)

RNG = np.random.default_rng(3)
YY, XX = np.mgrid[:37, :53]
# Smooth colour ramps plus noise: JPEG-friendly but not flat, so pixel errors show.
RGB = np.clip(
    np.stack([XX * 4, YY * 6, (XX + YY) * 3], -1) + RNG.integers(0, 40, (37, 53, 3)), 0, 255
).astype(np.uint8)
RGBA = np.concatenate([RGB, RNG.integers(0, 256, (37, 53, 1), dtype=np.uint8)], -1)
GRAY = RGB[..., 1].copy()


def encode(array, fmt, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def pil_decode(data, mode):
    """The reference: PIL's decode of the same bytes, converted to `mode`."""
    image = np.asarray(Image.open(io.BytesIO(data)).convert(mode))
    return image[..., None] if image.ndim == 2 else image


def write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("array", "fmt"),
    [(GRAY, "PNG"), (RGB, "PNG"), (RGBA, "PNG"), (RGB, "BMP"), (RGB, "GIF"), (GRAY, "GIF")],
)
def test_lossless_formats_match_pil_exactly(tmp_path, array, fmt):
    data = encode(array, fmt)
    path = write(tmp_path / f"image.{fmt.lower()}", data)
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == (37, 53, 3)
    # PIL's RGBA -> RGB drops alpha without compositing, as decode_image documents.
    np.testing.assert_array_equal(image, pil_decode(data, "RGB"))
    if fmt == "PNG":
        expected = np.dstack([array] * 3) if array.ndim == 2 else array[..., :3]
        np.testing.assert_array_equal(image, expected)


@pytest.mark.parametrize(
    ("array", "fmt"), [(GRAY, "PNG"), (RGB, "PNG"), (RGBA, "PNG"), (RGB, "GIF")]
)
def test_one_channel_is_pil_luma_within_rounding(tmp_path, array, fmt):
    data = encode(array, fmt)
    image = load_image(write(tmp_path / f"image.{fmt.lower()}", data), channels=1)
    assert image.shape == (37, 53, 1)
    # PIL rounds a fixed-point BT.601 sum; ours rounds a float32 one: at most 1 apart.
    difference = np.abs(image.astype(int) - pil_decode(data, "L"))
    assert difference.max() <= (0 if array.ndim == 2 else 1)


def test_jpeg_matches_pil_within_a_level(tmp_path):
    data = encode(RGB, "JPEG", quality=95)
    image = load_image(write(tmp_path / "image.jpg", data))
    # Both use libjpeg(-turbo)'s accurate integer IDCT; builds may still differ in
    # rounding. (TensorFlow's default fast IDCT is 1.2 levels off on average, max 5.)
    difference = np.abs(image.astype(int) - pil_decode(data, "RGB"))
    assert difference.mean() < 0.25 and difference.max() <= 2
    assert np.abs(image.astype(int) - RGB).mean() < 10.0


def test_grayscale_jpeg(tmp_path):
    data = encode(GRAY, "JPEG", quality=95)
    path = write(tmp_path / "gray.jpg", data)
    assert np.abs(load_image(path).astype(int) - pil_decode(data, "RGB")).max() <= 2
    assert np.abs(load_image(path, channels=1).astype(int) - pil_decode(data, "L")).max() <= 2


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.fromarray(RGB), Image.fromarray(255 - RGB)]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    reference = Image.open(path)
    reference.seek(0)
    np.testing.assert_array_equal(load_image(path), np.asarray(reference.convert("RGB")))


@pytest.mark.parametrize("size", [16, (20, 30), (64, 80), (10, 100)])
def test_resize_matches_pil_bilinear(tmp_path, size):
    data = encode(RGB, "PNG")
    height, width = (size, size) if isinstance(size, int) else size
    image = load_image(write(tmp_path / "image.png", data), size=size)
    assert image.dtype == np.uint8 and image.shape == (height, width, 3)
    # PIL's BILINEAR is the same triangle filter, widened by the scale when shrinking;
    # it rounds to uint8 between its horizontal and vertical passes, hence 1 level.
    reference = np.asarray(Image.fromarray(RGB).resize((width, height), Image.BILINEAR))
    assert np.abs(image.astype(int) - reference).max() <= 1


def test_resize_image_batches_and_refuses_float():
    batch = np.stack([RGB, 255 - RGB])
    out = resize_image(batch, (9, 11)).numpy()
    for image, original in zip(out, batch, strict=True):
        reference = np.asarray(Image.fromarray(original).resize((11, 9), Image.BILINEAR))
        assert np.abs(image.astype(int) - reference).max() <= 1
    with pytest.raises(ValueError, match=r"Expected `images` to be uint8.*float32"):
        resize_image(RGB.astype("float32"), 8)


def test_decode_image_in_a_tf_data_map():
    images = [RGB, RGBA, np.dstack([GRAY] * 3)[:20, :25]]
    encoded = [encode(images[0], "PNG"), encode(images[1], "PNG"), encode(images[2], "JPEG")]
    dataset = tf.data.Dataset.from_tensor_slices(encoded).map(
        lambda data: decode_image(data, size=(12, 10))
    )
    assert dataset.element_spec.shape == (12, 10, 3)
    assert dataset.element_spec.dtype == tf.uint8
    for data, image in zip(encoded, dataset.batch(3).get_single_element().numpy(), strict=True):
        decoded = Image.fromarray(pil_decode(data, "RGB"))
        reference = np.asarray(decoded.resize((10, 12), Image.BILINEAR))
        assert np.abs(image.astype(int) - reference).max() <= 2


def test_decode_failure_in_graph_mode_surfaces_when_run():
    dataset = tf.data.Dataset.from_tensor_slices([b"not an image"]).map(decode_image)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        dataset.get_single_element()


def test_decode_image_eagerly_accepts_a_string_tensor_and_names_bad_bytes():
    data = encode(RGB, "PNG")
    np.testing.assert_array_equal(decode_image(tf.constant(data)).numpy(), RGB)
    with pytest.raises(ImageDecodeError, match=r"^Could not decode image: Unknown image file"):
        decode_image(b"\x00garbage")
    with pytest.raises(TypeError, match=r"Expected `data` to be bytes.*Received: data of type str"):
        decode_image("image.png")
    with pytest.raises(ValueError, match=r"scalar string tensor. Received: shape=\(2,\)"):
        decode_image(tf.constant([data, data]))


def test_unicode_path(tmp_path):
    path = write(tmp_path / "изображение ü.png", encode(RGBA, "PNG"))
    np.testing.assert_array_equal(load_image(path), RGBA[..., :3])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        load_image(tmp_path / "missing.png")


def _corrupt_middle(data):
    middle = len(data) // 2
    return data[: middle - 50] + bytes(100) + data[middle + 50 :]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.png", b"", "the file is empty"),
        ("random.png", RNG.integers(0, 256, 4000, dtype=np.uint8).tobytes(), "Unknown image"),
        ("half.png", encode(RGB, "PNG")[: len(encode(RGB, "PNG")) // 2], "PNG is truncated"),
        ("no_iend.png", encode(RGB, "PNG")[:-12], "PNG is truncated"),
        # Both ends intact, the middle destroyed: only the decoder can tell.
        ("corrupt.png", _corrupt_middle(encode(RGB, "PNG")), "Invalid PNG data|PNG"),
        ("half.bmp", encode(RGB, "BMP")[:500], "BMP is truncated"),
        ("half.jpg", encode(RGB, "JPEG")[: len(encode(RGB, "JPEG")) // 2], "JPEG is truncated"),
        ("junk_after_soi.jpg", encode(RGB, "JPEG")[:200] + b"\xff\xd9", "jpeg::Uncompress"),
        ("half.gif", encode(RGB, "GIF")[:1000], "GIF is truncated"),
    ],
)
def test_undecodable_files_are_named_with_the_reason(tmp_path, name, data, reason):
    path = write(tmp_path / name, data)
    with pytest.raises(ImageDecodeError, match=f"{name}.*{reason}"):
        load_image(path)


def test_jpeg_that_lost_only_its_end_marker_is_reported(tmp_path):
    yy, xx = np.mgrid[:120, :160]
    ramp = np.stack([xx * 255 // 160, yy * 255 // 120, (xx + yy) % 256], -1).astype(np.uint8)
    data = encode(ramp, "JPEG", quality=75)[:-1]
    # TensorFlow alone accepts this file (every scanline is there); the check for the
    # end-of-image marker is what reports it.
    tf.io.decode_jpeg(data, dct_method="INTEGER_ACCURATE")
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg.*no end-of-image marker"):
        load_image(write(tmp_path / "cut.jpg", data))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "Received: size=0"),
        ({"size": -3}, "Received: size=-3"),
        ({"size": (8,)}, r"Received: size=\(8,\)"),
        ({"size": (8, 0)}, r"Received: size=\(8, 0\)"),
        ({"size": 2.5}, "Received: size=2.5"),
        ({"size": True}, "Received: size=True"),
        ({"channels": 4}, "Received: channels=4"),
        ({"channels": 2}, "Received: channels=2"),
        ({"channels": True}, "Received: channels=True"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    path = write(tmp_path / "image.png", encode(RGB, "PNG"))
    with pytest.raises(ValueError, match=f"^Expected .*{match}"):
        load_image(path, **kwargs)
    with pytest.raises(ValueError, match=f"^Expected .*{match}"):
        decode_image(path.read_bytes(), **kwargs)
