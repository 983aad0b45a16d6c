"""A tiny multimodal data set in the formats a new user brings, for end-to-end tests.

`write_own_data(folder)` writes, under `folder/data/`:

- `images/`: photos as PNG and JPEG of several sizes, one of them an RGBA PNG and one a
  greyscale JPEG: a square, circle or diamond of the class colour, covering the centre,
  on a noisy grey background;
- captions in the manifests' `text` column, varied sentences that mostly name the colour
  (some use a synonym only; some hold punctuation, quotes, "café" or an emoji);
- `audio/`: a spoken digit word per class, taken from the recordings shipped with mmrep
  (`mmrep/data/mmdigits_audio`, 16 kHz FLAC): FLAC copies, and WAV files padded with
  near-silence to 1.5-3 s and written at 16, 22.05 or 44.1 kHz (resampled with soxr, the
  resampler librosa's "soxr_hq" uses), one of them stereo;
- `video/`: H.264 MP4 clips (yuv420p, 8-12 fps, 1-2 s, 48x48 or 64x64) of a square of the
  class colour moving across a noisy background;
- `train.csv`, `val.csv`, `test.csv` with the columns `image,text,audio,video,label,source`
  (paths relative to `data/`; `source` is a column a config has to ignore), and
  `test.jsonl` holding the rows of `test.csv` (a missing modality as `null` or as an
  absent key, alternately).

Some rows miss a modality (an empty cell, and no file), never all of them: in every
split the first red row has no video, the first green row no audio, the first blue row
only an image and a caption; in the train split the second red row has no image and the
second green row no caption.

Every class is one colour in every modality, so a small model learns it from any single
modality. The files are written with numpy, PIL, soundfile, soxr and PyAV, without
importing mmrep or TensorFlow (about a second for the default 36 rows); the same
arguments give byte-identical files.
"""

import csv
import fractions
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import av
import numpy as np
import soundfile
import soxr
from PIL import Image

CLASSES = ("red", "green", "blue")
CHANNEL = {"red": 0, "green": 1, "blue": 2}  # the RGB channel that carries each class
WORDS = {"red": "one", "green": "two", "blue": "three"}  # the digit spoken for each class
SYNONYMS = {
    "red": ("crimson", "scarlet", "cherry"),
    "green": ("emerald", "lime", "jade"),
    "blue": ("navy", "azure", "cobalt"),
}
SPLITS = ("train", "val", "test")
MODALITIES = ("image", "text", "audio", "video")
COLUMNS = (*MODALITIES, "label", "source")
IGNORE = ("source",)
SAMPLE_RATE = 16000  # the rate of the shipped recordings, and mmrep's
SOURCES = ("camera-1", "camera-2", "phone", "scanner")

# A few speakers, so that a small model hears the same words from the same voices.
VOICES = ("en-us", "en-gb", "en-us+f3")
# (class index, index within the class) -> missing modalities; for every split, and for
# the train split only.
MISSING = {(0, 0): ("video",), (1, 0): ("audio",), (2, 0): ("audio", "video")}
MISSING_TRAIN = {(0, 1): ("image",), (1, 1): ("text",)}
IMAGE_SIZES = ((48, 64), (60, 80), (64, 64), (80, 60), (72, 56))  # (height, width)
IMAGE_FORMATS = ("png", "jpg", "jpg", "png", "jpg")
# Audio: (extension, sample rate, padded, soundfile subtype).
AUDIO_FORMATS = (
    ("flac", SAMPLE_RATE, False, None),  # the shipped recording, copied
    ("wav", SAMPLE_RATE, True, "PCM_16"),
    ("wav", 44100, True, "PCM_16"),
    ("wav", 22050, True, "FLOAT"),
    ("flac", SAMPLE_RATE, True, "PCM_16"),
    ("wav", 44100, False, "PCM_24"),
)
# The odd files of the train split, and their columns.
SPECIAL_COLUMN = {"rgba_png": "image", "grayscale_jpeg": "image", "stereo_wav": "audio"}
SHAPES = ("square", "circle", "diamond")
CAPTIONS = (
    "a {c} {shape} on grey",
    "Bright {s} {shape}.",
    "{C} {shape}, photographed at the café",
    "close-up: something {c} 📷",
    'the "{c}" one, again',
    "{s}",
    "is that {c}? looks {s} to me",
    "A {shape} — mostly {c} — on a noisy background",
    "{c}",
    "my {c} {shape} (a bit blurry)",
)


def write_own_data(folder, *, rows_per_class=(6, 3, 3), seed=0):
    """Writes the data set into `folder` (created); returns where it is and what it holds.

    Args:
        folder: str or `pathlib.Path`. Everything goes under `folder/data/`.
        rows_per_class: three positive ints, the rows of each class in train, val and test.
        seed: int. The same seed gives byte-identical files.

    Returns:
        A dict:
        - `"root"`, `"data"`: the folder and its `data/` subfolder (str);
        - `"manifests"`: `{split: path of "<split>.csv"}`; `"jsonl"`: `{"test": path}`;
        - `"classes"`: the three labels; `"words"`: `{label: spoken digit word}`;
        - `"columns"`, `"modalities"`, `"ignore"`: the manifests' columns, the modality
          columns, and the columns a config must ignore (`["source"]`);
        - `"counts"`: `{split: rows}`; `"labels"`: `{split: labels in row order}`;
        - `"rows"`: `{split: [the row's cells as written, None where a cell is empty]}`;
        - `"missing"`: `{split: {row index (0-based, manifest order): missing modalities}}`;
        - `"special"`: paths (relative to `data/`) of the RGBA PNG, the greyscale JPEG and
          the stereo WAV.
    """
    counts = tuple(rows_per_class)
    if len(counts) != 3 or any(isinstance(n, bool) or not isinstance(n, int) for n in counts):
        raise ValueError(
            "Expected `rows_per_class` to be three ints (train, val, test). "
            f"Received: rows_per_class={rows_per_class!r}"
        )
    if min(counts) < 1:
        raise ValueError(
            f"Expected every count in `rows_per_class` to be at least 1. Received: {counts}"
        )
    rng = np.random.default_rng(seed)
    root = Path(folder)
    data = root / "data"
    for sub in ("images", "audio", "video"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    clips = _clips(rng, sum(counts))
    special = _special_rows(counts[0])

    result = {
        "root": str(root),
        "data": str(data),
        "manifests": {},
        "jsonl": {},
        "classes": list(CLASSES),
        "words": dict(WORDS),
        "columns": list(COLUMNS),
        "modalities": list(MODALITIES),
        "ignore": list(IGNORE),
        "counts": {},
        "labels": {},
        "rows": {},
        "missing": {},
        "special": {},
    }
    number = 0  # a running file number, across splits
    for split, per_class in zip(SPLITS, counts, strict=True):
        rows, missing = [], []
        for c, label in enumerate(CLASSES):
            for i in range(per_class):
                gone = MISSING.get((c, i), ()) + (
                    MISSING_TRAIN.get((c, i), ()) if split == "train" else ()
                )
                role = special.get((c, i)) if split == "train" else None
                row = _write_row(data, rng, number, label, gone, role, clips[label])
                if role is not None:
                    result["special"][role] = row[SPECIAL_COLUMN[role]]
                rows.append(row)
                missing.append(gone)
                number += 1
        order = rng.permutation(len(rows))
        rows = [rows[k] for k in order]
        missing = [missing[k] for k in order]
        result["manifests"][split] = str(_write_csv(data / f"{split}.csv", rows))
        if split == "test":
            result["jsonl"]["test"] = str(_write_jsonl(data / "test.jsonl", rows))
        result["counts"][split] = len(rows)
        result["labels"][split] = [row["label"] for row in rows]
        result["rows"][split] = rows
        result["missing"][split] = {k: m for k, m in enumerate(missing) if m}
    return result


def _special_rows(train_per_class):
    """`{(class index, index within class): role}` of the train split's odd files."""
    last = train_per_class - 1
    # On the last row of a class: never the modality that row misses (see MISSING).
    return {(2, last): "rgba_png", (1, last): "grayscale_jpeg", (0, last): "stereo_wav"}


def _write_row(data, rng, number, label, gone, role, clips):
    """Writes a row's files; returns its cells (None where empty)."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    row = dict.fromkeys(COLUMNS)
    row["label"] = label
    row["source"] = SOURCES[rng.integers(len(SOURCES))]
    if "image" not in gone:
        row["image"] = _write_image(data, rng, number, label, shape, role)
    if "text" not in gone:
        row["text"] = _caption(rng, label, shape)
    if "audio" not in gone:
        row["audio"] = _write_audio(data, rng, number, clips, role)
    if "video" not in gone:
        row["video"] = _write_video(data, rng, number, label)
    return row


def _colour(rng, label):
    """An RGB colour of the class: its channel high, the others low."""
    rgb = rng.uniform(0, 70, 3)
    rgb[CHANNEL[label]] = rng.uniform(175, 250)
    return rgb


def _background(rng, height, width):
    """Grey noise (mostly luminance, a little chroma) over a gentle gradient."""
    base = rng.uniform(95, 165)
    ramp = np.linspace(-1, 1, width)[None, :, None] * rng.uniform(-20, 20)
    grey = base + ramp + rng.normal(0, 16, (height, width, 1))
    return grey + rng.normal(0, 5, (height, width, 3))


def _shape_mask(rng, shape, height, width):
    """A boolean mask of a shape that always covers the central quarter of the image."""
    side = min(height, width)
    cy = height / 2 + rng.uniform(-0.08, 0.08) * side
    cx = width / 2 + rng.uniform(-0.08, 0.08) * side
    radius = rng.uniform(0.36, 0.45) * side
    y, x = np.mgrid[0:height, 0:width] + 0.5
    dy, dx = np.abs(y - cy), np.abs(x - cx)
    if shape == "square":
        return np.maximum(dy, dx) <= radius
    if shape == "circle":
        return dy**2 + dx**2 <= radius**2
    return dy + dx <= 1.5 * radius  # diamond


def _write_image(data, rng, number, label, shape, role):
    height, width = IMAGE_SIZES[number % len(IMAGE_SIZES)]
    image = _background(rng, height, width)
    mask = _shape_mask(rng, shape, height, width)
    image[mask] = _colour(rng, label) + rng.normal(0, 6, (int(mask.sum()), 3))
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if role == "rgba_png":
        # A cut-out: the shape opaque, the background half transparent.
        alpha = np.where(mask, 255, 128).astype(np.uint8)
        name = f"images/IMG_{number:04d}.png"
        Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(data / name)
    elif role == "grayscale_jpeg":
        name = f"images/IMG_{number:04d}.jpg"
        Image.fromarray(pixels).convert("L").save(data / name, quality=90)
    elif IMAGE_FORMATS[number % len(IMAGE_FORMATS)] == "png":
        name = f"images/IMG_{number:04d}.png"
        Image.fromarray(pixels).save(data / name)
    else:
        name = f"images/IMG_{number:04d}.jpg"
        Image.fromarray(pixels).save(data / name, quality=int(rng.integers(80, 96)))
    return name


def _caption(rng, label, shape):
    template = CAPTIONS[rng.integers(len(CAPTIONS))]
    synonym = SYNONYMS[label][rng.integers(len(SYNONYMS[label]))]
    return template.format(c=label, C=label.capitalize(), s=synonym, shape=shape)


def _recordings():
    """The folder of mmrep's shipped spoken-digit recordings, found without importing mmrep."""
    spec = importlib.util.find_spec("mmrep")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "mmdigits_audio"


def _clips(rng, needed):
    """`{label: [clip entries of index.json]}`, `needed` per class (repeating if short).

    The clips of a few voices first, in a shuffled order, then the others.
    """
    index = json.loads((_recordings() / "index.json").read_text(encoding="utf-8"))
    chosen = {}
    for label in CLASSES:
        of_word = [c for c in index["clips"] if c["word"] == WORDS[label]]
        first = [c for c in of_word if c["voice"] in VOICES]
        rest = [c for c in of_word if c["voice"] not in VOICES]
        ordered = [first[k] for k in rng.permutation(len(first))]
        ordered += [rest[k] for k in rng.permutation(len(rest))]
        chosen[label] = [ordered[k % len(ordered)] for k in range(needed)]
    return chosen


def _write_audio(data, rng, number, clips, role):
    clip = clips.pop(0)
    source = _recordings() / clip["file"]
    extension, rate, padded, subtype = AUDIO_FORMATS[number % len(AUDIO_FORMATS)]
    channels = 1
    if role == "stereo_wav":
        extension, rate, padded, subtype, channels = "wav", 44100, True, "PCM_16", 2
    name = f"audio/rec_{number:03d}.{extension}"
    if subtype is None:
        shutil.copyfile(source, data / name)
        return name
    speech, speech_rate = soundfile.read(source, dtype="float32")
    if speech_rate != SAMPLE_RATE or speech.ndim != 1:
        raise ValueError(f"{source}: expected mono audio at {SAMPLE_RATE} Hz")
    if padded:
        # Lead-in and tail of near-silence, to a total of 1.5-3 s in whole 10 ms steps
        # (so that every rate holds a whole number of samples).
        total = int(rng.integers(150, 301)) * SAMPLE_RATE // 100
        total = max(total, len(speech) + SAMPLE_RATE // 10)
        lead = int(rng.integers(SAMPLE_RATE // 20, min(SAMPLE_RATE // 2, total - len(speech))))
        waveform = rng.normal(0, 3e-4, total).astype(np.float32)
        waveform[lead : lead + len(speech)] += speech
    else:
        waveform = speech
    if rate != SAMPLE_RATE:
        waveform = soxr.resample(waveform, SAMPLE_RATE, rate, quality="HQ")
    waveform = np.clip(waveform, -1, 1)
    if channels == 2:
        # The second microphone: a little quieter and 1 ms later.
        delay = rate // 1000
        right = 0.8 * np.concatenate([np.zeros(delay, waveform.dtype), waveform[:-delay]])
        waveform = np.stack([waveform, right], axis=1)
    soundfile.write(data / name, waveform, rate, subtype=subtype)
    if subtype == "FLOAT":
        _clear_peak_time(data / name)
    return name


def _clear_peak_time(path):
    """Zeroes the write time libsndfile puts in a float WAV's PEAK chunk (for same bytes)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"PEAK", 12)
    if at >= 0:
        raw[at + 12 : at + 16] = bytes(4)  # after id, size and version: the time stamp
        path.write_bytes(bytes(raw))


def _write_video(data, rng, number, label):
    size = (64, 48)[number % 2]
    fps = (8, 10, 12)[number % 3]
    frames = round(fps * rng.choice([1.0, 1.5, 2.0]))
    side = round(0.4 * size)
    colour = _colour(rng, label)
    background = _background(rng, size, size)
    # The square crosses the frame left to right, right to left, or top to bottom.
    direction = int(rng.integers(3))
    across = np.linspace(0, size - side, frames)
    if direction == 1:
        across = across[::-1]
    fixed = int(rng.integers(size // 4, size - side - size // 4 + 1))
    name = f"video/clip_{number:03d}.mp4"
    with av.open(str(data / name), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, fps)
        stream.options = {"crf": "18"}
        for t in range(frames):
            image = background + rng.normal(0, 4, background.shape)
            a = round(across[t])
            y, x = (fixed, a) if direction < 2 else (a, fixed)
            image[y : y + side, x : x + side] = colour
            pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = t, fractions.Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return name


def _write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def _write_jsonl(path, rows):
    """One object per row; a missing modality alternately `null` and an absent key."""
    absent = False
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            record = {}
            for key, value in row.items():
                if value is None:
                    absent = not absent
                    if absent:
                        continue
                record[key] = value
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def readme_config():
    """The README's example config: the TOML between its `own-data-config` markers."""
    import re

    readme = Path(__file__).resolve().parents[2] / "README.md"
    block = re.search(
        r"<!-- own-data-config -->\n```toml\n(.*?)```\n<!-- /own-data-config -->",
        readme.read_text(encoding="utf-8"),
        re.S,
    )
    assert block, "README.md has no own-data-config block"
    return block.group(1)


def _main(argv):
    """`python -m tests.job.own_data FOLDER`: the README's example data and its config."""
    if len(argv) != 1:
        print("usage: python -m tests.job.own_data FOLDER", file=sys.stderr)
        return 2
    facts = write_own_data(argv[0])
    config = Path(facts["root"]) / "photos.toml"
    config.write_text(readme_config(), encoding="utf-8")
    print(f"Wrote {facts['data']} and {config}: mmrep train --config {config}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
