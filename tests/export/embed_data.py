"""Small real-format data for the streaming tests of `embed_manifest`: PNG files, a manifest,
an exported image model, and PNG files that are corrupt inside (intact header and end).
"""

import os
import struct
import zlib

import keras
import numpy as np

from mmrep.export import export_saved_model

SIZE = 8


def png_bytes(pixels):
    """A PNG file of uint8 RGB `pixels` [H, W, 3], written with zlib (no image library)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def corrupt_inside(data):
    """PNG bytes whose compressed pixel data is garbage, CRC fixed: signature and IEND intact."""
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8 : start - 4])[0]
    garbage = bytes((b * 37 + 11) % 256 for b in range(length))
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + garbage) & 0xFFFFFFFF)
    return data[:start] + garbage + crc + data[start + length + 4 :]


def write_images(folder, rows, seed=0):
    """`rows` PNG files `img/<i>.png` and `manifest.csv` (image, text, label) in `folder`.

    Returns:
        `(manifest path, pixels [rows, SIZE, SIZE, 3])`.
    """
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (rows, SIZE, SIZE, 3), dtype="uint8")
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    lines = ["image,text,label"]
    for i, image in enumerate(pixels):
        with open(os.path.join(folder, "img", f"{i}.png"), "wb") as f:
            f.write(png_bytes(image))
        lines.append(f"img/{i}.png,caption {i},{i % 3}")
    manifest = os.path.join(folder, "manifest.csv")
    with open(manifest, "w") as f:
        f.write("\n".join(lines) + "\n")
    return manifest, pixels


def export_image_model(base):
    """An exported image model (`embed_image`, `embed_image_bytes`); returns (model, folder)."""
    image = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(image))
    embedding = keras.layers.Dense(6, name="dense")(flat)
    model = keras.Model(image, {"embedding": embedding})
    keras.utils.set_random_seed(3)
    model.get_layer("dense").set_weights(
        [
            np.random.default_rng(1).normal(size=(SIZE * SIZE * 3, 6)).astype("float32"),
            np.zeros(6, "float32"),
        ]
    )
    folder = export_saved_model(model, base, embeddings={"image": model}, verbose=False)
    return model, folder
