"""mmdigits written out as real files with a manifest: PNG, FLAC, MP4 and a CSV.

The file form of the embedded data set exercises the same decoding path as users' own
data (`mmrep.data.from_manifest`), and gives a ready example of the manifest format.
"""

import csv
import os

from mmrep.data.mmdigits import MODALITIES, SAMPLE_RATE, load_mmdigits


def export_mmdigits(directory, split="test", *, limit=None, fps=8, progress=True, **load_kwargs):
    """Writes a split of mmdigits as files plus `manifest.csv`; returns the manifest's path.

    Images go to `image/NNNNN.png`, audio to `audio/NNNNN.flac` (16 kHz), video to
    `video/NNNNN.mp4` (H.264 at `fps`), and `manifest.csv` holds the columns `image`,
    `text`, `audio`, `video` (paths relative to `directory`, text inline) and `label`.

    Args:
        directory: str. Output folder (created if needed).
        split: str. Which split. Defaults to `"test"`.
        limit: int or `None`. Write only the first `limit` examples. Defaults to `None`.
        fps: int. Frame rate of the MP4 files. Defaults to `8`.
        progress: bool. Show a progress bar. Defaults to `True`.
        **load_kwargs: passed to `load_mmdigits` (e.g. `image_size`, `seed`).
    """
    import keras
    import soundfile
    import tensorflow as tf

    from mmrep.preprocessing.video_io import write_video

    load_kwargs.setdefault("augment", False)
    examples = load_mmdigits(split, **load_kwargs)
    if limit is not None:
        examples = examples.take(limit)
    total = int(examples.cardinality())
    for kind in ("image", "audio", "video"):
        os.makedirs(os.path.join(directory, kind), exist_ok=True)
    bar = keras.utils.Progbar(total, unit_name="example") if progress else None
    rows = []
    for i, example in enumerate(examples):
        row = {"label": int(example["label"])}
        if "image" in example:
            row["image"] = f"image/{i:05d}.png"
            tf.io.write_file(
                os.path.join(directory, row["image"]), tf.io.encode_png(example["image"])
            )
        if "text" in example:
            row["text"] = example["text"].numpy().decode("utf-8")
        if "audio" in example:
            row["audio"] = f"audio/{i:05d}.flac"
            soundfile.write(
                os.path.join(directory, row["audio"]), example["audio"].numpy(), SAMPLE_RATE
            )
        if "video" in example:
            row["video"] = f"video/{i:05d}.mp4"
            write_video(example["video"].numpy(), os.path.join(directory, row["video"]), fps=fps)
        rows.append(row)
        if bar:
            bar.update(i + 1)
    path = os.path.join(directory, "manifest.csv")
    columns = [m for m in MODALITIES if m in rows[0]] + ["label"]
    with open(path + ".tmp", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)
    return path
