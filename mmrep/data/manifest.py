"""Users' own data: a CSV or JSON Lines manifest with one column per modality.

Each row names an example: file paths (relative to the manifest's folder, or absolute) for
image, audio and video, raw text for text, and an optional label. A row may leave any
modality empty; the example then carries a zero placeholder and a 0 in its presence mask.
Rows are read in row order by a pool of Python threads (audio decoded mono at 16 kHz by
soundfile and librosa's soxr resampler, video frames by PyAV up to a frame cap, image
files read and checked for completeness), then a parallel `tf.data` map decodes images
with `tf.io` and resizes images and frames in the graph.
"""

import concurrent.futures
import csv
import itertools
import json
import os
import sys
import warnings

import numpy as np

from mmrep.preprocessing.audio_io import SAMPLE_RATE, load_audio
from mmrep.preprocessing.frame_sampling import sample_frames
from mmrep.preprocessing.image_io import decode_image, read_image_file, resize_image
from mmrep.preprocessing.video_io import read_video
from mmrep.utils.modalities import MODALITY_ORDER, ordered_modalities

# The kinds of file a modality column may hold.
KINDS = MODALITY_ORDER


class ManifestError(ValueError):
    """A manifest row that cannot be read; the message names the row and the file."""


def read_rows(path):
    """The rows of a CSV (with a header) or JSON Lines manifest, as a list of dicts."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest not found: {path}")
    if path.lower().endswith((".jsonl", ".ndjson", ".json")):
        rows = []
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ManifestError(
                        f"{path}: line {line_number} is not JSON: {error}"
                    ) from None
                if not isinstance(row, dict):
                    raise ManifestError(
                        f"{path}: line {line_number}: expected a JSON object per line. "
                        f"Received: {type(row).__name__}"
                    )
                rows.append(row)
        return rows
    # utf-8-sig: Excel's "CSV UTF-8" starts the file with a byte-order mark.
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise ManifestError(
                f"{path}: expected a CSV header naming the columns; the file is empty"
            )
        rows = []
        for row in reader:
            if None in row:
                raise ManifestError(
                    f"{path}: row {len(rows) + 1} has more cells than the header {reader.fieldnames}"
                )
            rows.append(row)
        return rows


def _columns(path, rows, modalities, ignore, label="label"):
    """`{column: kind}` for the modality columns, in mmrep's modality order.

    The order is `ordered_modalities` of the column names, not the manifest's column order,
    so that the presence mask's columns are where every fusion layer reads them. Checks
    that no column goes unread.
    """
    present = list(dict.fromkeys(k for row in rows for k in row))
    if modalities is None:
        modalities = {c: c for c in present if c in KINDS}
    elif isinstance(modalities, (list, tuple)):
        modalities = {c: c for c in modalities}
    bad = {c: k for c, k in modalities.items() if k not in KINDS}
    if bad:
        raise ValueError(f"Expected modality kinds among {KINDS}. Received: {bad}")
    unread = [c for c in present if c not in modalities and c != label and c not in ignore]
    if unread:
        raise ManifestError(
            f"{path}: columns {unread} are neither a modality {KINDS} nor {label!r}. Name their "
            "kinds with `modalities={column: kind}` or list them in `ignore=`."
        )
    if not modalities:
        raise ManifestError(
            f"{path}: no modality column; expected some of {KINDS}. Found: {present}"
        )
    columns = {c: modalities[c] for c in ordered_modalities(modalities)}
    clash = sorted(_padding_keys(columns) & {*columns, "label", "presence"})
    if clash:
        raise ManifestError(
            f"{path}: columns {clash} collide with the padding keys mmrep adds "
            "(`<audio column>_length`, `<video column>_frame_mask`); rename them."
        )
    return columns


def _check_sampling(strategy, fps, num_frames):
    """`(strategy, fps)` after checking that they go together."""
    if strategy not in ("first", "uniform", "interval"):
        raise ValueError(
            "Expected `video_sampling` to be 'first', 'uniform' or 'interval'. "
            f"Received: video_sampling={strategy!r}"
        )
    if (fps is not None) != (strategy == "interval"):
        raise ValueError(
            "Expected `video_fps` with video_sampling='interval' and only there. "
            f"Received: video_sampling={strategy!r}, video_fps={fps!r}"
        )
    if strategy == "uniform" and num_frames is None:
        raise ValueError(
            "Expected `video_frames` (the number of segments) with video_sampling='uniform'. "
            "Received: video_frames=None"
        )
    return strategy, fps


def length_key(column):
    """The key of an audio column's sample count before padding: `"<column>_length"`."""
    return f"{column}_length"


def frame_mask_key(column):
    """The key of a video column's frame mask (True for decoded frames): `"<column>_frame_mask"`."""
    return f"{column}_frame_mask"


def _padding_keys(columns):
    return {length_key(c) for c, k in columns.items() if k == "audio"} | {
        frame_mask_key(c) for c, k in columns.items() if k == "video"
    }


def _empty(value):
    return value is None or (isinstance(value, str) and not value.strip())


class _Decoder:
    """Reads one row in Python: image bytes (checked, not decoded), audio, video frames.

    No TensorFlow op runs here: these calls run in a pool of Python threads, and eager
    ops from several threads fight over TensorFlow's own thread pool (on 2 cores that
    halved throughput). Images are decoded and frames resized in the graph (`_finish`).
    """

    def __init__(self, root, columns, audio_samples, video_frames, max_video_frames, sampling):
        self.root, self.columns = root, columns
        # Audio is decoded only as far as it is kept (a 1-hour file is not read whole).
        self.audio_seconds = None if audio_samples is None else audio_samples / SAMPLE_RATE
        self.audio_samples = audio_samples
        self.video_frames, self.max_video_frames = video_frames, max_video_frames
        self.sampling = sampling  # `(strategy, fps)`

    def placeholder(self, kind):
        if kind == "audio":
            return np.zeros((self.audio_samples or 0,), "float32")
        if kind == "video":
            return np.zeros((0, 1, 1, 3), "uint8")
        return b"" if kind == "image" else ""

    def decode(self, kind, value):
        if kind == "text":
            return str(value)
        file = value if os.path.isabs(value) else os.path.join(self.root, value)
        if kind == "image":
            return read_image_file(file)
        if kind == "audio":
            # Cropped or padded by `row`.
            return load_audio(file, SAMPLE_RATE, max_seconds=self.audio_seconds)
        strategy, fps = self.sampling
        if strategy == "first":
            frames, _ = read_video(file, max_frames=self.video_frames or self.max_video_frames)
            return frames
        sampled = sample_frames(file, fps=fps, num_frames=self.video_frames, strategy=strategy)
        # Only "interval" pads, and only at the end, where the graph pads again with its mask.
        return sampled.frames[sampled.mask]

    def row(self, number, row):
        example, presence = {}, []
        for column, kind in self.columns.items():
            value = row.get(column)
            if _empty(value):
                example[column] = self.placeholder(kind)
                if kind == "audio":
                    example[length_key(column)] = np.int32(0)
                presence.append(0.0)
                continue
            try:
                decoded = self.decode(kind, value)
            except (OSError, ValueError) as error:
                raise ManifestError(f"row {number}: {column} file {value!r}: {error}") from error
            if kind == "audio":
                fitted = _fit(decoded, self.audio_samples)
                example[length_key(column)] = np.int32(min(len(decoded), len(fitted)))
                decoded = fitted
            example[column] = decoded
            presence.append(1.0)
        if not any(presence):
            raise ManifestError(
                f"row {number}: no modality present (columns {list(self.columns)} all empty)"
            )
        example["presence"] = np.array(presence, "float32")
        return example


def _fit(values, length):
    """Crops or zero-pads the first axis to `length` (None keeps it)."""
    if length is None or len(values) == length:
        return values
    if len(values) > length:
        return values[:length]
    pad = np.zeros((length - len(values), *values.shape[1:]), values.dtype)
    return np.concatenate([values, pad])


def _finish(columns, image_size, video_size, video_frames):
    """The graph half of decoding: images decoded and resized, frames resized and padded."""
    import tensorflow as tf

    def image(data):
        return tf.cond(
            tf.strings.length(data) > 0,
            lambda: tf.ensure_shape(
                decode_image(data, size=image_size), (image_size, image_size, 3)
            ),
            lambda: tf.zeros((image_size, image_size, 3), tf.uint8),
        )

    def video(frames):
        """`(frames [T, S, S, 3], frame mask [T])`: decoded frames, then zero padding."""
        count = tf.shape(frames)[0]
        resized = tf.cond(
            count > 0,
            lambda: resize_image(frames, video_size),
            lambda: tf.zeros((0, video_size, video_size, 3), tf.uint8),
        )
        if video_frames is None:
            return resized, tf.ones((count,), tf.bool)
        padding = tf.maximum(video_frames - count, 0)
        padded = tf.pad(resized, [[0, padding], [0, 0], [0, 0], [0, 0]])
        mask = tf.range(video_frames) < count
        return tf.ensure_shape(padded, (video_frames, video_size, video_size, 3)), mask

    def finish(example):
        example = dict(example)
        for column, kind in columns.items():
            if kind == "image":
                example[column] = image(example[column])
            elif kind == "video":
                example[column], example[frame_mask_key(column)] = video(example[column])
        return example

    return finish


def _labels(path, rows, label="label"):
    if not any(label in row for row in rows):
        return None
    values = [row.get(label) for row in rows]
    missing = [i + 1 for i, v in enumerate(values) if _empty(v)]
    if missing:
        raise ManifestError(f"{path}: rows {missing[:10]} have no label; label every row or none")
    try:
        return np.array([int(v) for v in values], "int32")
    except (TypeError, ValueError):
        return np.array([str(v) for v in values], dtype=object)


def from_manifest(
    path,
    *,
    modalities=None,
    ignore=(),
    label="label",
    image_size=224,
    audio_seconds=None,
    video_size=112,
    video_frames=None,
    max_video_frames=256,
    video_sampling="first",
    video_fps=None,
    on_error="raise",
    num_parallel_reads=4,
):
    """A `tf.data.Dataset` of decoded examples from a CSV or JSON Lines manifest.

    Args:
        path: str or path. The manifest (`.csv`, or `.jsonl` / `.ndjson` / `.json` with one object
            per line). Relative file paths in it are relative to its folder.
        modalities: `None`, a list of columns, or a dict `{column: kind}` with kinds among
            `("image", "text", "audio", "video")`. `None` takes the columns named like a kind.
        ignore: columns to leave unread. Any other column that is neither a modality nor
            the label is an error, so nothing is dropped by accident.
        label: str. The label column (read when the manifest has it). Defaults to
            `"label"`.
        image_size: int. Images are resized to `image_size`×`image_size` RGB uint8.
            Defaults to `224`.
        audio_seconds: float or `None`. Crop or zero-pad audio to this length; `None` keeps
            each clip's length (batch with `padded_batch`). Defaults to `None`.
        video_size: int. Frames are resized to `video_size`×`video_size`. Defaults to `112`.
        video_frames: int or `None`. Decode this many frames from the start, zero-padding
            shorter videos; `None` decodes up to `max_video_frames`. Defaults to `None`.
        max_video_frames: int. The frame cap when `video_frames` is `None`. Defaults to `256`.
        video_sampling: `"first"`, `"uniform"` or `"interval"`. Which frames a video
            gives (`mmrep.preprocessing.sample_frames`): the first ones decoded; the
            centres of `video_frames` equal segments of the clip (Temporal Segment
            Networks' test-time sampling; needs `video_frames`); or `video_fps` frames per
            second from the start, truncated or padded to `video_frames` when given.
            Defaults to `"first"`.
        video_fps: positive number or `None`. The rate of `"interval"` sampling (only
            there). Defaults to `None`.
        on_error: `"raise"` or `"skip"`. A missing, truncated or undecodable file, or a row
            with no modality, raises a `ManifestError` naming the row and file; with
            `"skip"` such rows are left out and, at the end of each pass, a warning lists
            how many and which. Defaults to `"raise"`.
        num_parallel_reads: int. Threads decoding files. Defaults to `4`.

    Returns:
        An unbatched dataset of dicts: one entry per modality column (uint8 image
        `[S, S, 3]`, string text, float32 audio `[samples]` at 16 kHz, uint8 video
        `[T, S, S, 3]`); what padding hides, for each audio column `"<column>_length"`
        (int32, the samples before zero padding, 0 for a missing clip; VGGish's `lengths`)
        and for each video column `"<column>_frame_mask"` (bool `[T]`, True for decoded
        frames; `VideoEncoder`'s `frame_mask`), so padding is never pooled as content and
        `padded_batch` keeps them aligned; `"presence"` (float32 `[M]`, 1 where the row has
        the modality, columns in mmrep's modality order: `mmrep.MODALITY_ORDER`, then other
        modality column names sorted, whatever the manifest's column order) and, when the
        manifest has labels, `"label"` (int32 if every label is an integer, else string).

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: the manifest is malformed or has unread columns (at once), or a
            row cannot be decoded (while iterating, with `on_error="raise"`; TensorFlow
            re-raises it as its own error type with this message). An image file that is
            complete in form (right signature, intact end) but corrupt inside passes the
            Python check and fails in the graph decoder, as TensorFlow's
            `InvalidArgumentError` without the row, and `on_error="skip"` cannot skip it.
    """
    import tensorflow as tf

    if on_error not in ("raise", "skip"):
        raise ValueError(
            f"Expected `on_error` to be 'raise' or 'skip'. Received: on_error={on_error!r}"
        )
    path = os.fspath(path)
    sampling = _check_sampling(video_sampling, video_fps, video_frames)
    rows = read_rows(path)
    if not rows:
        raise ManifestError(f"{path}: the manifest has no rows")
    columns = _columns(path, rows, modalities, set(ignore), label)
    labels = _labels(path, rows, label)
    audio_samples = None if audio_seconds is None else round(audio_seconds * SAMPLE_RATE)
    decoder = _Decoder(
        os.path.dirname(os.path.abspath(path)),
        columns,
        audio_samples,
        video_frames,
        max_video_frames,
        sampling,
    )

    def decode(item):
        number, row = item
        try:
            return decoder.row(number, row), None
        except ManifestError as error:
            if on_error == "raise":
                raise ManifestError(f"{path}: {error}") from error.__cause__
            return None, str(error)

    def generate():
        skipped = []
        with concurrent.futures.ThreadPoolExecutor(num_parallel_reads) as pool:
            numbered = enumerate(rows, start=1)
            # Bounded look-ahead: decode a few chunks at a time, yield in row order.
            while chunk := list(itertools.islice(numbered, 4 * num_parallel_reads)):
                for (number, _), (example, error) in zip(
                    chunk, pool.map(decode, chunk), strict=True
                ):
                    if error is not None:
                        skipped.append(error)
                        continue
                    if labels is not None:
                        example["label"] = labels[number - 1]
                    yield example
        if skipped:
            listing = "\n  ".join(skipped)
            message = f"{path}: skipped {len(skipped)} of {len(rows)} rows:\n  {listing}"
            print(message, file=sys.stderr)
            warnings.warn(message, stacklevel=2)

    signature = {c: _spec(kind, audio_samples) for c, kind in columns.items()}
    signature.update(
        {length_key(c): tf.TensorSpec((), tf.int32) for c, k in columns.items() if k == "audio"}
    )
    signature["presence"] = tf.TensorSpec((len(columns),), tf.float32)
    if labels is not None:
        signature["label"] = tf.TensorSpec((), tf.int32 if labels.dtype == "int32" else tf.string)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.map(
        _finish(columns, image_size, video_size, video_frames),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _spec(kind, audio_samples):
    """What the Python half yields for a column of `kind`."""
    import tensorflow as tf

    if kind == "audio":
        return tf.TensorSpec((audio_samples,), tf.float32)
    if kind == "video":
        return tf.TensorSpec((None, None, None, 3), tf.uint8)
    return tf.TensorSpec((), tf.string)
