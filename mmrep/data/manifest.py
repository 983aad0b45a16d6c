"""Users' own data: a CSV or JSON Lines manifest with one column per modality.

Each row names an example: file paths (relative to the manifest's folder) for image,
audio and video, raw text for text, and an optional label. A row may leave any
modality empty; the example then carries a zero placeholder and a 0 in its presence mask.
The file itself is read and checked by `mmrep.data.manifest_file` (UTF-8, one name per
column, one cell per column, string values, integer-or-string labels, paths that stay in
the manifest's folder). Rows are read in row order by a pool of Python threads (audio
decoded mono at 16 kHz by soundfile and librosa's soxr resampler, video frames by PyAV up
to a frame cap, image files read and checked for completeness and declared size; only
regular files are opened), then a parallel `tf.data` map decodes images with `tf.io` and
resizes images and frames in the graph.
"""

import concurrent.futures
import itertools
import os
import sys
import warnings

import numpy as np

from mmrep.data.manifest_file import (
    ManifestError,
    check_values,
    path_bound,
    read_labels,
    read_manifest,
    resolve_file,
)
from mmrep.data.manifest_file import is_empty as _empty
from mmrep.data.manifest_file import read_rows as read_rows  # re-exported: the job reads rows
from mmrep.preprocessing.audio_io import SAMPLE_RATE, load_audio
from mmrep.preprocessing.frame_sampling import sample_frames
from mmrep.preprocessing.image_io import (
    MAX_IMAGE_PIXELS,
    check_max_image_pixels,
    decode_image,
    read_image_file,
    resize_image,
)
from mmrep.preprocessing.video_io import read_video
from mmrep.utils.arguments import check_int
from mmrep.utils.modalities import MODALITY_ORDER, ordered_modalities

# The kinds of file a modality column may hold.
KINDS = MODALITY_ORDER


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


class _Decoder:
    """Reads one row in Python: image bytes (checked, not decoded), audio, video frames.

    No TensorFlow op runs here: these calls run in a pool of Python threads, and eager
    ops from several threads fight over TensorFlow's own thread pool (on 2 cores that
    halved throughput). Images are decoded and frames resized in the graph (`_finish`).
    Paths resolve against `root`, the manifest's folder, and must lie in `bound` (the
    folder from `from_manifest`'s `root=`, else the manifest's; `None`: anywhere).
    """

    def __init__(
        self,
        root,
        columns,
        audio_samples,
        video_frames,
        max_video_frames,
        sampling,
        *,
        bound=None,
        max_image_pixels=MAX_IMAGE_PIXELS,
    ):
        self.root, self.columns = root, columns
        self.bound, self.max_image_pixels = bound, max_image_pixels
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
        file = resolve_file(value, self.root, self.bound)
        if kind == "image":
            return read_image_file(file, max_image_pixels=self.max_image_pixels)
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
    rows=None,
    row_numbers=False,
    image_bytes=(),
    root=None,
    allow_outside=False,
    max_image_pixels=MAX_IMAGE_PIXELS,
):
    """A `tf.data.Dataset` of decoded examples from a CSV or JSON Lines manifest.

    Args:
        path: str or path. The manifest: UTF-8 (a byte-order mark is accepted), either
            `.csv` with a header naming each column once and as many cells in every row,
            or `.jsonl` / `.ndjson` / `.json` with one object per line (modality values
            strings or null). File paths in it are relative to its folder, and must stay
            inside it (see `root`).
        modalities: `None`, a list of columns, or a dict `{column: kind}` with kinds among
            `("image", "text", "audio", "video")`. `None` takes the columns named like a kind.
        ignore: columns to leave unread. Any other column that is neither a modality nor
            the label is an error, so nothing is dropped by accident.
        label: str. The label column (read when the manifest has it): integers (JSON
            integers, integral numbers such as `2.0`, or strings of ASCII digits: `"007"`
            is 7) when every label is one, else strings; a fractional number, a bool, a
            list or an object is an error. Defaults to `"label"`.
        image_size: int. Images are resized to `image_size`×`image_size` RGB uint8.
            Defaults to `224`.
        audio_seconds: float or `None`. Crop or zero-pad audio to this length (only about
            that much is decoded); `None` keeps each clip's length (batch with
            `padded_batch`), decoding each file whole, so memory grows with the longest
            clip (an hour of 16 kHz mono is 230 MB). Defaults to `None`.
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
        on_error: `"raise"`, `"skip"` or a callable. A missing, truncated or undecodable
            file, or a row with no modality, raises a `ManifestError` naming the row and
            file; with `"skip"` such rows are left out and, at the end of each pass, a
            warning lists how many and which; a callable `on_error(row, error)` is called
            with the row number and the `ManifestError` of each such row, which is left
            out without a warning (`mmrep embed` lists them in its report). Defaults to
            `"raise"`.
        num_parallel_reads: int. Threads decoding files; at most `4 * num_parallel_reads`
            rows are decoded ahead of the one the dataset yields. Defaults to `4`.
        rows: iterable of int or `None`. The row numbers (1-based, increasing) to read;
            `None` reads every row. Defaults to `None`.
        row_numbers: bool. Add `"row"` (int32, the 1-based manifest row number) to each
            example, so results can be joined back to the manifest. Defaults to `False`.
        image_bytes: image columns to give as the file's bytes (a `tf.string` scalar,
            checked complete as for decoding) instead of decoded pixels, for models that
            decode in their graph (`embed_<image>_bytes` signatures). Defaults to `()`.
        root: str, path or `None`. A folder that file paths may lie anywhere under
            (relative paths still resolve against the manifest's folder). `None` bounds
            them to the manifest's folder: a path that leaves it, as written (absolute,
            or with `..` that escapes once normalised) or through a symbolic link
            (`os.path.realpath`), is refused with a `ManifestError` naming the row, the
            column and the path. Defaults to `None`.
        allow_outside: bool. Read paths anywhere (not with `root`). Defaults to `False`.
        max_image_pixels: int or `None`. Refuse an image whose header declares more
            pixels (width × height; read before decoding, so nothing is allocated for
            it). `None` reads any size. Defaults to `89_478_485`, Pillow's
            `Image.MAX_IMAGE_PIXELS`.

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
        ValueError: an argument is invalid.
        ManifestError: the manifest is malformed (not UTF-8, a header naming a column
            twice or not at all, a row with more or fewer cells than the header, a JSON
            value or label of the wrong type) or has unread columns, naming the row, its
            line and the column (at once); or a row cannot be decoded: a missing or
            undecodable file, a path outside the folder, a path that is not a regular
            file (a FIFO, device, socket or folder, refused before it is opened), an
            image declaring more than `max_image_pixels` (while iterating, with
            `on_error="raise"`; TensorFlow re-raises it as its own error type with this
            message; `on_error` skips such rows). An image file that is
            complete in form (right signature, intact end) but corrupt inside passes the
            Python check and fails in the graph decoder, as TensorFlow's
            `InvalidArgumentError` without the row, and `on_error="skip"` cannot skip it:
            `undecodable_images` names such files (the main job and `mmrep embed` do so
            when the decoder fails).
    """
    import tensorflow as tf

    if on_error not in ("raise", "skip") and not callable(on_error):
        raise ValueError(
            "Expected `on_error` to be 'raise', 'skip' or a callable. "
            f"Received: on_error={on_error!r}"
        )
    path = os.fspath(path)
    sampling = _check_sampling(video_sampling, video_fps, video_frames)
    num_parallel_reads = check_int("num_parallel_reads", num_parallel_reads, minimum=1)
    check_max_image_pixels(max_image_pixels)
    folder = os.path.dirname(os.path.abspath(path))
    bound = path_bound(folder, root, allow_outside)
    manifest = read_manifest(path)
    manifest_rows = manifest.rows
    if not manifest_rows:
        raise ManifestError(f"{path}: the manifest has no rows")
    columns = _columns(path, manifest_rows, modalities, set(ignore), label)
    check_values(manifest, columns)
    labels = read_labels(manifest, label)
    raw = set(image_bytes)
    wrong = sorted(c for c in raw if columns.get(c) != "image")
    if wrong:
        raise ValueError(
            f"Expected `image_bytes` to name image columns of {list(columns)}. Received: {wrong}"
        )
    numbers = (
        range(1, len(manifest_rows) + 1) if rows is None else _row_numbers(rows, manifest_rows)
    )
    audio_samples = None if audio_seconds is None else round(audio_seconds * SAMPLE_RATE)
    decoder = _Decoder(
        folder,
        columns,
        audio_samples,
        video_frames,
        max_video_frames,
        sampling,
        bound=bound,
        max_image_pixels=max_image_pixels,
    )

    def decode(item):
        number, row = item
        try:
            return decoder.row(number, row), None
        except ManifestError as error:
            if on_error == "raise":
                raise ManifestError(f"{path}: {error}") from error.__cause__
            return None, error

    def generate():
        skipped = []
        with concurrent.futures.ThreadPoolExecutor(num_parallel_reads) as pool:
            numbered = ((n, manifest_rows[n - 1]) for n in numbers)
            # Bounded look-ahead: decode a few chunks at a time, yield in row order.
            while chunk := list(itertools.islice(numbered, 4 * num_parallel_reads)):
                for (number, _), (example, error) in zip(
                    chunk, pool.map(decode, chunk), strict=True
                ):
                    if error is not None:
                        if callable(on_error):
                            on_error(number, error)
                        else:
                            skipped.append(str(error))
                        continue
                    if labels is not None:
                        example["label"] = labels[number - 1]
                    if row_numbers:
                        example["row"] = np.int32(number)
                    yield example
        if skipped:
            listing = "\n  ".join(skipped)
            message = f"{path}: skipped {len(skipped)} of {len(numbers)} rows:\n  {listing}"
            print(message, file=sys.stderr)
            warnings.warn(message, stacklevel=2)

    signature = {c: _spec(kind, audio_samples) for c, kind in columns.items()}
    signature.update(
        {length_key(c): tf.TensorSpec((), tf.int32) for c, k in columns.items() if k == "audio"}
    )
    signature["presence"] = tf.TensorSpec((len(columns),), tf.float32)
    if labels is not None:
        signature["label"] = tf.TensorSpec((), tf.int32 if labels.dtype == "int32" else tf.string)
    if row_numbers:
        signature["row"] = tf.TensorSpec((), tf.int32)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    decoded = {c: k for c, k in columns.items() if c not in raw}
    return dataset.map(
        _finish(decoded, image_size, video_size, video_frames),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _row_numbers(rows, manifest_rows):
    """`rows` as a list of valid, increasing 1-based row numbers."""
    numbers = [int(n) for n in rows]
    bad = [n for n in numbers if not 1 <= n <= len(manifest_rows)]
    if bad or any(a >= b for a, b in itertools.pairwise(numbers)):
        raise ValueError(
            f"Expected `rows` to be increasing row numbers in 1..{len(manifest_rows)}. "
            f"Received: {numbers[:10]}{'...' if len(numbers) > 10 else ''}"
        )
    return numbers


def _spec(kind, audio_samples):
    """What the Python half yields for a column of `kind`."""
    import tensorflow as tf

    if kind == "audio":
        return tf.TensorSpec((audio_samples,), tf.float32)
    if kind == "video":
        return tf.TensorSpec((None, None, None, 3), tf.uint8)
    return tf.TensorSpec((), tf.string)


def undecodable_images(
    path,
    *,
    modalities=None,
    ignore=(),
    label="label",
    root=None,
    allow_outside=False,
    max_image_pixels=MAX_IMAGE_PIXELS,
    limit=None,
    rows=None,
):
    """The image cells of a manifest that TensorFlow's decoder refuses, found eagerly.

    `from_manifest` checks image files in Python (complete in form) and decodes them in
    the graph, where a file corrupt inside fails without naming its row. This decodes
    every image cell eagerly, as the graph does, to name them: call it when a pipeline
    over the manifest failed in the decoder (the main job does), or before a long run.

    Args:
        path: str or path. The manifest.
        modalities, ignore, label, root, allow_outside, max_image_pixels: as in
            `from_manifest`.
        limit: int or `None`. Stop after this many bad cells. Defaults to `None`.
        rows: iterable of int or `None`. The row numbers (1-based, increasing) to check;
            `None` checks every row. Defaults to `None`.

    Returns:
        A list of dicts `{"row", "column", "file", "reason"}` (rows 1-based), in row order.
    """
    from mmrep.preprocessing.image_io import decode_image

    path = os.fspath(path)
    manifest_rows = read_rows(path)
    columns = _columns(path, manifest_rows, modalities, set(ignore), label)
    folder = os.path.dirname(os.path.abspath(path))
    bound = path_bound(folder, root, allow_outside)
    images = [c for c, kind in columns.items() if kind == "image"]
    numbers = (
        range(1, len(manifest_rows) + 1) if rows is None else _row_numbers(rows, manifest_rows)
    )
    bad = []
    for number in numbers:
        row = manifest_rows[number - 1]
        for column in images:
            value = row.get(column)
            if _empty(value):
                continue
            try:
                file = resolve_file(value, folder, bound)
                decode_image(read_image_file(file, max_image_pixels=max_image_pixels))
            except (OSError, ValueError) as error:
                bad.append({"row": number, "column": column, "file": value, "reason": str(error)})
                if limit is not None and len(bad) >= limit:
                    return bad
    return bad
