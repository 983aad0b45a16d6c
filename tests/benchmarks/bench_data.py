"""Data pipeline benchmarks: mmdigits through tf.data, and the manifest loader."""

import os
import tempfile

import numpy as np

from mmrep.data import from_manifest, load_mmdigits
from mmrep.preprocessing.audio_io import load_audio
from mmrep.preprocessing.image_io import load_image
from tests.benchmarks.runner import Comparison, benchmark


def _drain(dataset):
    count = 0
    for batch in dataset:
        count += int(batch["label"].shape[0])
    return count


@benchmark("mmdigits_pipeline")
def mmdigits_pipeline(size="full"):
    """mmdigits train split, all modalities with audio augmentation, vs the bare arrays."""
    import tensorflow as tf

    limit = 1258 if size == "full" else 16
    augmented = load_mmdigits("train").take(limit).batch(64).prefetch(tf.data.AUTOTUNE)
    arrays = load_mmdigits("train", augment=False, as_numpy=True)
    bare = tf.data.Dataset.from_tensor_slices({k: v[:limit] for k, v in arrays.items()}).batch(64)
    return Comparison(
        mmrep=lambda: _drain(augmented),
        reference=lambda: _drain(bare),
        reference_name="tf.data over the same arrays, no augmentation",
        work=f"{limit} examples: image, text, 1 s audio, 16x32x32 video, batches of 64",
        items=limit,
    )


@benchmark("manifest_loader")
def manifest_loader(size="full"):
    """from_manifest (threaded, tf.data) vs a sequential Python loop with the same decoders."""
    import soundfile
    from PIL import Image

    count, (height, width), seconds = (
        (1000, (240, 320), 2.0) if size == "full" else (8, (24, 32), 0.2)
    )
    folder = tempfile.mkdtemp(prefix="mmrep-bench-")
    rng = np.random.default_rng(0)
    # 20 distinct files, each used by many rows: decoding, not disk caching, is measured.
    for i in range(20):
        ramp = np.linspace(0, 215, height * width * 3).reshape(height, width, 3)
        pixels = (ramp + rng.integers(0, 40, ramp.shape)).astype(np.uint8)
        Image.fromarray(pixels).save(f"{folder}/{i}.jpg", quality=90)
        soundfile.write(
            f"{folder}/{i}.wav", rng.uniform(-0.5, 0.5, (int(44100 * seconds), 2)), 44100
        )
    manifest = os.path.join(folder, "manifest.csv")
    with open(manifest, "w") as f:
        f.write("image,text,audio,label\n")
        for i in range(count):
            f.write(f"{i % 20}.jpg,caption number {i},{i % 20}.wav,{i % 10}\n")
    dataset = from_manifest(manifest, image_size=224, audio_seconds=seconds).batch(64)

    def sequential():
        for i in range(count):
            load_image(f"{folder}/{i % 20}.jpg", size=224)
            load_audio(f"{folder}/{i % 20}.wav")
        return count

    return Comparison(
        mmrep=lambda: _drain(dataset),
        reference=sequential,
        reference_name="sequential loop, same decoders",
        work=f"{count} rows: {width}x{height} JPEG -> 224, {seconds:g} s 44.1 kHz stereo WAV -> 16 kHz, text",
        items=count,
    )
