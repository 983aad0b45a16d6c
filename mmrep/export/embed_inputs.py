"""Which manifest column feeds which input of a serving signature, and at what size.

`embed_manifest` reads a manifest with `mmrep.data.from_manifest`; the signature decides
what it reads. Each input is recognised by its spec: a `tf.string` vector is text, a
floating `[B, S]` tensor a 16 kHz waveform, `[B, H, W, C]` (uint8 or floating, C = 1 or
3) an image and `[B, T, H, W, C]` a video; a floating `[B, M]` input named `presence` is
the presence mask, fed from the manifest's empty cells. Input names match manifest
columns. Sizes come from the specs: images and frames are resized to `H` (square only,
as `from_manifest` resizes), audio is cut or padded to `S` samples, video to `T` frames.
"""

import dataclasses

from mmrep.data.manifest import KINDS
from mmrep.export.errors import ServingError

PRESENCE = "presence"
SAMPLE_RATE = 16000


@dataclasses.dataclass
class FeedPlan:
    """How to read a manifest for one signature.

    Attributes:
        kinds: dict `{input: kind}` of the modality inputs, in the presence order.
        presence: str or `None`. The presence input's name.
        specs: dict `{input: tf.TensorSpec}` of every input.
        image_size, video_size, video_frames, audio_seconds: the `from_manifest`
            arguments (`None` where the model leaves the size open or has no such input).
    """

    kinds: dict
    presence: str | None
    specs: dict
    image_size: int | None = None
    video_size: int | None = None
    video_frames: int | None = None
    audio_seconds: float | None = None


def _kind(name, spec):
    shape, dtype = spec.shape, spec.dtype
    pixels = dtype.name == "uint8" or dtype.is_floating
    if dtype.name == "string" and shape.rank == 1:
        return "text"
    if dtype.is_floating and shape.rank == 2:
        return "audio"
    if pixels and shape.rank in (4, 5) and shape[-1] in (1, 3):
        return "image" if shape.rank == 4 else "video"
    raise ServingError(
        f"input {name!r} ({dtype.name}, shape {shape}) is not something a manifest can feed: "
        "expected a text string [B], a waveform float [B, S], an image [B, H, W, C], a video "
        "[B, T, H, W, C] (C = 1 or 3) or a presence mask float [B, M] named 'presence'"
    )


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


def plan_feeds(specs, modalities=None):
    """A `FeedPlan` for a signature's inputs.

    Args:
        specs: dict `{input name: tf.TensorSpec}` (batch dimension first).
        modalities: list of str or `None`. The presence order, as recorded at export
            (`assets.extra/mmrep.json`). `None` orders the modality inputs by kind
            (image, text, audio, video), then by name.

    Returns:
        A `FeedPlan`.

    Raises:
        ServingError: an input of an unsupported kind, a non-square image or video
            input, inputs of one kind with different sizes, a presence width that is
            not the number of modality inputs, or `modalities` not naming them.
    """
    presence = PRESENCE if PRESENCE in specs else None
    kinds = {name: _kind(name, spec) for name, spec in specs.items() if name != presence}
    if not kinds:
        raise ServingError(f"the signature has no modality input; its inputs are {list(specs)}")
    if modalities is not None and sorted(modalities) == sorted(kinds):
        order = list(modalities)
    else:
        order = sorted(kinds, key=lambda n: (KINDS.index(kinds[n]), n))
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
    return FeedPlan(
        kinds=kinds,
        presence=presence,
        specs=dict(specs),
        image_size=_one_size(
            "image", {n: _square(n, s, (1, 2)) for n, s in of_kind["image"].items()}
        ),
        video_size=_one_size(
            "video", {n: _square(n, s, (2, 3)) for n, s in of_kind["video"].items()}
        ),
        video_frames=_one_size("video", {n: s.shape[1] for n, s in of_kind["video"].items()}),
        audio_seconds=None if samples is None else samples / SAMPLE_RATE,
    )


def check_columns(plan, rows, manifest, signature, ignore=()):
    """Checks that the manifest's columns are the signature's modality inputs.

    Args:
        plan: the `FeedPlan`.
        rows: list of dicts, the manifest's rows.
        manifest: str, its path (for messages).
        signature: str, the signature's name (for messages).
        ignore: columns to leave unread.

    Raises:
        ServingError: a column the signature has no input for, an input the manifest
            has no column for (both sets named), or, for a signature without a
            presence input, a row with an empty cell.
    """
    columns = [c for c in dict.fromkeys(k for row in rows for k in row)]
    columns = [c for c in columns if c != "label" and c not in ignore]
    inputs = list(plan.kinds)
    extra = [c for c in columns if c not in plan.kinds]
    missing = [n for n in inputs if n not in columns]
    if extra or missing:
        raise ServingError(
            f"manifest {manifest} does not match signature {signature!r}: the manifest's "
            f"columns are {columns}, the model's modality inputs are {inputs}"
            + (f"; not inputs of the model: {extra}" if extra else "")
            + (f"; missing from the manifest: {missing}" if missing else "")
        )
    if plan.presence is None:
        for number, row in enumerate(rows, start=1):
            empty = [n for n in inputs if _empty(row.get(n))]
            if empty:
                raise ServingError(
                    f"manifest {manifest}, row {number}: {empty} empty, but signature "
                    f"{signature!r} has no 'presence' input to mark a missing modality"
                )


def _empty(value):
    return value is None or (isinstance(value, str) and not value.strip())
