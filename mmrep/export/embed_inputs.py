"""Which manifest column feeds which input of a serving signature, and at what size.

`embed_manifest` reads a manifest with `mmrep.data.from_manifest`; the signature decides
what it reads. Each input is recognised by its spec: a `tf.string` vector is text, a
floating `[B, S]` tensor a 16 kHz waveform, `[B, H, W, C]` (uint8 or floating, C = 1 or
3) an image and `[B, T, H, W, C]` a video; a floating `[B, M]` input named `presence` is
the presence mask, fed from the manifest's empty cells. Input names match manifest
columns. Sizes come from the specs: images and frames are resized to `H` (square only,
as `from_manifest` resizes), audio is cut or padded to `S` samples, video to `T` frames.

Padding inputs are recognised by name and fed from `from_manifest`'s keys of the same
names, never from manifest columns: `<audio input>_length` (integer `[B]`, the samples
before zero padding, 0 for a missing clip) and `<video input>_frame_mask` (bool `[B, T]`,
True for decoded frames). A waveform input of open length `[B, None]` is read at each
clip's own length and zero-padded to the longest clip of its batch; a video input of open
length `[B, None, H, W, C]` takes every decoded frame (up to `from_manifest`'s frame cap),
padded likewise. Without a padding input to say where the padding starts, such an input
is fed only batches whose present clips all have the same length (`check_batch`); a
fixed-length input is cut or padded to its length as before.
"""

import dataclasses

import numpy as np

from mmrep.data.manifest import KINDS, frame_mask_key, length_key
from mmrep.data.manifest_file import is_empty
from mmrep.export.errors import ServingError

PRESENCE = "presence"
SAMPLE_RATE = 16000


@dataclasses.dataclass
class FeedPlan:
    """How to read a manifest for one signature.

    Attributes:
        kinds: dict `{input: kind}` of the modality inputs, in the presence order; an
            `<image column>_bytes` string input has the kind `"image_bytes"`.
        presence: str or `None`. The presence input's name.
        specs: dict `{input: tf.TensorSpec}` of every input.
        columns: dict `{input: manifest column}` of the modality inputs: the input's own
            name, but `<column>_bytes` reads the file bytes of the image column.
        padding: dict `{padding input: modality input}`: the `<audio input>_length` and
            `<video input>_frame_mask` inputs, fed from the `from_manifest` keys of the
            same names.
        unmarked: list of the audio and video inputs of open length (`None` samples or
            frames) without a padding input, whose batches must hold clips of one length.
        unread: list of the manifest's modality columns the signature does not take
            (set by `check_columns`).
        image_size, video_size, video_frames, audio_seconds: the `from_manifest`
            arguments (`None` where the model leaves the size open or has no such input).
    """

    kinds: dict
    presence: str | None
    specs: dict
    columns: dict = dataclasses.field(default_factory=dict)
    padding: dict = dataclasses.field(default_factory=dict)
    unmarked: list = dataclasses.field(default_factory=list)
    unread: list = dataclasses.field(default_factory=list)
    image_size: int | None = None
    video_size: int | None = None
    video_frames: int | None = None
    audio_seconds: float | None = None


BYTES_SUFFIX = "_bytes"


def _kind(name, spec, columns=()):
    shape, dtype = spec.shape, spec.dtype
    pixels = dtype.name == "uint8" or dtype.is_floating
    if dtype.name == "string" and shape.rank == 1:
        if _bytes_column(name, columns):
            return "image_bytes"
        return "text"
    if dtype.is_floating and shape.rank == 2:
        return "audio"
    if pixels and shape.rank in (4, 5) and shape[-1] in (1, 3):
        return "image" if shape.rank == 4 else "video"
    raise ServingError(
        f"input {name!r} ({dtype.name}, shape {shape}) is not something a manifest can feed: "
        "expected a text string [B], a waveform float [B, S], an image [B, H, W, C], a video "
        "[B, T, H, W, C] (C = 1 or 3), a presence mask float [B, M] named 'presence', or "
        "the padding of an audio input `<audio>_length` (integer [B]) or of a video input "
        "`<video>_frame_mask` (bool [B, T])"
    )


def _bytes_column(name, columns):
    """The image column an input `<column>_bytes` reads, if the manifest has it."""
    column = name[: -len(BYTES_SUFFIX)]
    if name.endswith(BYTES_SUFFIX) and name not in columns and column in columns:
        return column
    return None


def _padding_inputs(specs, kinds):
    """`{padding input: modality input}`, checking names, kinds, dtypes and shapes."""
    padding = {}
    for name, kind in kinds.items():
        for key, wanted in ((length_key(name), "audio"), (frame_mask_key(name), "video")):
            if key not in specs:
                continue
            spec, what = specs[key], "lengths" if wanted == "audio" else "frame mask"
            if kind != wanted:
                raise ServingError(
                    f"input {key!r} looks like the {what} of input {name!r}, but {name!r} is "
                    f"{kind} (shape {specs[name].shape}); embed_manifest feeds lengths to "
                    "audio inputs and frame masks to video inputs only"
                )
            if wanted == "audio":
                ok = spec.dtype.is_integer and spec.shape.rank == 1
                expected = "an integer vector [B]"
            else:
                frames = specs[name].shape[1]
                ok = (
                    spec.dtype.name == "bool"
                    and spec.shape.rank == 2
                    and (frames is None or spec.shape[1] in (None, frames))
                )
                expected = f"a bool mask [B, {frames}]"
            if not ok:
                raise ServingError(
                    f"input {key!r} ({spec.dtype.name}, shape {spec.shape}), the {what} of "
                    f"input {name!r}, should be {expected}"
                )
            padding[key] = name
    return padding


def _square(name, spec, dims):
    height, width = (spec.shape[d] for d in dims)
    if height != width:
        raise ServingError(
            f"input {name!r} takes {height}x{width} pictures; embed_manifest resizes to "
            f"squares only (shape {spec.shape})"
        )
    return height


def _one_size(kind, sizes):
    values = set(sizes.values())
    if len(values) > 1:
        raise ServingError(
            f"the {kind} inputs take different sizes {sizes}; embed_manifest reads every "
            f"{kind} column at one size"
        )
    return values.pop() if values else None


def plan_feeds(specs, modalities=None, columns=()):
    """A `FeedPlan` for a signature's inputs.

    Args:
        specs: dict `{input name: tf.TensorSpec}` (batch dimension first).
        modalities: list of str or `None`. The presence order, as recorded at export
            (`assets.extra/mmrep.json`). `None` orders the modality inputs by kind
            (image, text, audio, video), then by name.
        columns: the manifest's columns. A string input `<column>_bytes` (such as an
            `embed_<image>_bytes` signature's) is fed the file bytes of the image
            column `<column>` when the manifest has that column and none named like
            the input.

    Returns:
        A `FeedPlan`.

    Raises:
        ServingError: an input of an unsupported kind, a non-square image or video
            input, inputs of one kind with different sizes, a presence width that is
            not the number of modality inputs, or a padding input of the wrong kind,
            dtype or shape. (`modalities` not naming the modality inputs is ignored:
            the order by kind is used.)
    """
    presence = PRESENCE if PRESENCE in specs else None
    # A name `x_length` / `x_frame_mask` beside an input `x` is a padding input, not a column.
    candidates = [n for n in specs if n != presence]
    named_padding = {
        key
        for name in candidates
        for key in (length_key(name), frame_mask_key(name))
        if key in specs
    }
    kinds = {
        name: _kind(name, spec, columns)
        for name, spec in specs.items()
        if name != presence and name not in named_padding
    }
    if not kinds:
        raise ServingError(f"the signature has no modality input; its inputs are {list(specs)}")
    padding = _padding_inputs(specs, kinds)
    if modalities is not None:
        modalities = [m for m in modalities if m not in padding]  # an older export's list
    if modalities is not None and sorted(modalities) == sorted(kinds):
        order = list(modalities)
    else:
        order = sorted(kinds, key=lambda n: (_kind_rank(kinds[n]), n))
    kinds = {name: kinds[name] for name in order}
    if presence is not None:
        spec = specs[presence]
        if not spec.dtype.is_floating or spec.shape.rank != 2 or spec.shape[1] != len(kinds):
            raise ServingError(
                f"input 'presence' ({spec.dtype.name}, shape {spec.shape}) should be a float "
                f"mask [B, {len(kinds)}], one column per modality input {list(kinds)}"
            )
    of_kind = {k: {n: specs[n] for n in kinds if kinds[n] == k} for k in KINDS}
    audio = {n: s.shape[1] for n, s in of_kind["audio"].items()}
    samples = _one_size("audio", audio)
    marked = set(padding.values())
    unmarked = [
        name
        for name, kind in kinds.items()
        if kind in ("audio", "video") and specs[name].shape[1] is None and name not in marked
    ]
    return FeedPlan(
        kinds=kinds,
        presence=presence,
        specs=dict(specs),
        columns={
            name: _bytes_column(name, columns) if kind == "image_bytes" else name
            for name, kind in kinds.items()
        },
        padding=padding,
        unmarked=unmarked,
        image_size=_one_size(
            "image", {n: _square(n, s, (1, 2)) for n, s in of_kind["image"].items()}
        ),
        video_size=_one_size(
            "video", {n: _square(n, s, (2, 3)) for n, s in of_kind["video"].items()}
        ),
        video_frames=_one_size("video", {n: s.shape[1] for n, s in of_kind["video"].items()}),
        audio_seconds=None if samples is None else samples / SAMPLE_RATE,
    )


def _kind_rank(kind):
    return KINDS.index("image" if kind == "image_bytes" else kind)


def manifest_columns(rows):
    """The manifest's columns, in the order they first appear."""
    return list(dict.fromkeys(k for row in rows for k in row))


def check_columns(plan, rows, manifest, signature, ignore=(), modalities=()):
    """Checks that the manifest's columns feed the signature; lists rows it cannot run.

    Args:
        plan: the `FeedPlan`.
        rows: list of dicts, the manifest's rows.
        manifest: str, its path (for messages).
        signature: str, the signature's name (for messages).
        ignore: columns to leave unread.
        modalities: the export's modalities (`assets.extra/mmrep.json`). Their columns
            are left unread by a signature that does not take them (an
            `embed_<modality>` signature runs on the full manifest).

    Returns:
        dict `{row number: reason}` of the rows a signature without a `presence` input
        cannot run, because a cell it reads is empty (left out and reported).

    Raises:
        ServingError: a column the signature has no input for and that is not one of
            the export's modalities, or an input the manifest has no column for (both
            sets named).
    """
    columns = [c for c in manifest_columns(rows) if c != "label" and c not in ignore]
    fed = list(plan.columns.values())
    inputs = list(plan.kinds)
    unread = [c for c in columns if c not in fed and c in modalities]
    extra = [c for c in columns if c not in fed and c not in modalities]
    missing = [n for n, c in plan.columns.items() if c not in columns]
    padding = [c for c in extra if c in plan.padding]
    if extra or missing:
        raise ServingError(
            f"manifest {manifest} does not match signature {signature!r}: the manifest's "
            f"columns are {columns}, the model's modality inputs are {inputs}"
            + (f"; not inputs of the model: {extra}" if extra else "")
            + (
                f" ({padding}: padding inputs, fed from the decoded files, never from a column)"
                if padding
                else ""
            )
            + (f"; missing from the manifest: {missing}" if missing else "")
        )
    plan.unread = unread
    left_out = {}
    if plan.presence is None:
        for number, row in enumerate(rows, start=1):
            empty = [c for c in fed if is_empty(row.get(c))]
            if empty:
                left_out[number] = (
                    f"empty {', '.join(empty)} cell: signature {signature!r} has no "
                    "'presence' input to mark a missing modality"
                )
    return left_out


def check_batch(plan, batch, first_row):
    """Refuses a batch that would feed padding as content to an input of open length.

    An audio or video input of open length (`[B, None]`, `[B, None, H, W, C]`) without a
    padding input (`<input>_length`, `<input>_frame_mask`) cannot tell zero padding from
    samples or frames, so its clips must all have one length: every present clip of the
    batch as long as the longest.

    Args:
        plan: the `FeedPlan`.
        batch: a padded batch of `from_manifest` examples (eager tensors).
        first_row: int. The manifest row number of the batch's first example.

    Raises:
        ServingError: clips of different lengths for such an input; the message names
            the rows and lengths, and the ways out.
    """
    for name in plan.unmarked:
        if plan.kinds[name] == "audio":
            key, unit, expected = length_key(name), "samples", "int32 [B]"
            counts = np.asarray(batch[key])
        else:
            key, unit, expected = frame_mask_key(name), "frames", "bool [B, T]"
            counts = np.asarray(batch[key]).sum(axis=1)
        width = int(batch[name].shape[1])
        short = np.flatnonzero((counts > 0) & (counts != width))
        if short.size:
            rows = {first_row + int(i): int(counts[i]) for i in short}
            raise ServingError(
                f"rows {list(rows)} have {name} clips of {list(rows.values())} {unit}, "
                f"shorter than the longest clip of their batch ({width}): input {name!r} "
                f"(shape {plan.specs[name].shape}) takes clips of any length but has no "
                f"padding input {key!r} ({expected}) to tell padding from content, so "
                "embed_manifest feeds it only batches of equal-length clips. Use "
                f"batch_size=1, or export the model with a {key!r} input"
            )
