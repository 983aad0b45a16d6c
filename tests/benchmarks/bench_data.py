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
    """from_manifest (threaded) vs a sequential Python loop with the same decoders."""
    import soundfile
    from PIL import Image

    count = 1000 if size == "full" else 8
    folder = tempfile.mkdtemp(prefix="mmrep-bench-")
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(f"{folder}/{i}.png")
        soundfile.write(f"{folder}/{i}.wav", rng.uniform(-0.5, 0.5, (22050, 2)), 44100)
    with open(os.path.join(folder, "manifest.csv"), "w") as f:
        f.write("image,text,audio,label\n")
        for i in range(count):
            f.write(f"{i % 20}.png,caption number {i},{i % 20}.wav,{i % 10}\n")
    manifest = os.path.join(folder, "manifest.csv")
    dataset = from_manifest(manifest, image_size=32, audio_seconds=0.5).batch(64)

    def sequential():
        for i in range(count):
            load_image(f"{folder}/{i % 20}.png", size=32)
            load_audio(f"{folder}/{i % 20}.wav")
        return count

    return Comparison(
        mmrep=lambda: _drain(dataset),
        reference=sequential,
        reference_name="sequential loop, same decoders",
        work=f"{count} rows: 64x64 PNG + 0.5 s 44.1 kHz stereo WAV + text",
        items=count,
    )
