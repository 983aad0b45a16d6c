"""`embed_manifest`: run an exported SavedModel over a manifest and save its outputs.

The back end of `mmrep embed`: users' files (listed in a CSV / JSON Lines manifest, read
by `mmrep.data.from_manifest`) go through a signature of a SavedModel written by
`export_saved_model` (or any SavedModel whose inputs are named like the manifest's
columns), in batches, and the outputs land in one .npy, .npz or .parquet file.
"""

import os
import time

from mmrep.export import embed_inputs, embed_outputs
from mmrep.export.errors import ServingError
from mmrep.export.versions import resolve_saved_model
from mmrep.utils.arguments import is_int


def embed_manifest(
    model,
    manifest,
    output,
    *,
    batch_size=64,
    signature="serving_default",
    verbose=True,
    ignore=(),
):
    """Runs a SavedModel signature over every row of a manifest and writes the outputs.

    The signature's inputs decide what is read: an input named like a manifest column is
    fed from it, as text (`tf.string`), audio (float `[S]`, 16 kHz, cut or zero-padded to
    `S` samples; `[None]`: each clip at its own length, zero-padded to the longest of its
    batch), an image (`[H, W, C]`, decoded and resized to `H`x`W`) or a video
    (`[T, H, W, C]`, the first `T` frames, resized, zero-padded; `T = None`: every frame
    up to `from_manifest`'s cap, padded to the longest of the batch). Padding inputs named
    after an audio or video input are fed what the padding hides (never a column):
    `<audio input>_length` the samples before zero padding (0 for a missing clip) and
    `<video input>_frame_mask` True for decoded frames. An input of open length without
    its padding input gets only batches of equal-length clips (a `ServingError` names
    the rows otherwise: use `batch_size=1`, or export with the padding input); a
    `presence` input is
    fed 1 where a row has the modality and 0 where its cell is empty, in the order
    recorded at export (`assets.extra/mmrep.json`, else by kind: image, text, audio,
    video). Images and video frames must be square in the model; float image inputs
    receive pixel values 0..255.

    Outputs: `.npy` holds the `embedding` output (or the only one); `.npz` every output
    and `label` when the manifest has labels; `.parquet` one row per manifest row with a
    list<float32> column per output (flattened; shapes in the schema metadata
    `mmrep.output_shapes`) and `label` (needs pyarrow). The file is written atomically.

    Args:
        model: str. A SavedModel version folder (holding `saved_model.pb`) or a TF
            Serving base folder (its largest numeric version is used).
        manifest: str. A `.csv` or `.jsonl` manifest (see `mmrep.data.from_manifest`).
        output: str. The file to write: `.npy`, `.npz` or `.parquet`. Must not exist.
        batch_size: int. Rows per call of the signature. Defaults to `64`.
        signature: str. The signature to run. Defaults to `"serving_default"`.
        verbose: bool. Print what is run and a progress bar with rows/s.
            Defaults to `True`.
        ignore: columns of the manifest to leave unread (for example an id column).
            Defaults to `()`.

    Returns:
        dict with `rows`, `model` (the version folder), `signature`, `output`,
        `outputs` (`{name: shape}`), `seconds` and `rows_per_second`.

    Raises:
        ModelNotFoundError: `model` does not exist or holds no SavedModel.
        FileNotFoundError: `manifest` does not exist.
        OutputExistsError: `output` exists.
        ServingError: an unknown signature or output format; a manifest whose columns
            are not the signature's inputs (both sets named); an input a manifest cannot
            feed (or a padding input of the wrong kind, dtype or shape); a row with a
            missing modality when the signature has no `presence` input (the row
            named); a row that cannot be decoded; clips of different lengths in a batch
            for an input of open length that has no padding input (the rows named).
        MissingDependencyError: (an `ImportError` and a `ServingError`) `.parquet`
            without pyarrow; the message says `pip install "mmrep[parquet]"`.

    Example:

    >>> summary = embed_manifest("saved_models/mmdigits_concat", "data/manifest.csv",
    ...                          "embeddings.parquet")  # doctest: +SKIP
    >>> summary["outputs"]  # doctest: +SKIP
    {'embedding': [270, 64], 'probabilities': [270, 10]}
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from mmrep.data.manifest import from_manifest, read_rows
    from mmrep.export.saved_model import read_description

    if not is_int(batch_size, 1):
        raise ServingError(
            f"Expected `batch_size` to be a positive int. Received: batch_size={batch_size!r}"
        )
    batch_size = int(batch_size)
    output, manifest = os.fspath(output), os.fspath(manifest)
    folder, how = resolve_saved_model(model)
    extension = embed_outputs.output_format(output)
    rows = read_rows(manifest)
    if not rows:
        raise ServingError(f"manifest {manifest} has no rows")
    try:
        loaded = tf.saved_model.load(folder)
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise ServingError(f"could not load the SavedModel in {folder}: {error}") from error
    if signature not in loaded.signatures:
        raise ServingError(
            f"SavedModel {folder} has no signature {signature!r}; it has "
            f"{sorted(loaded.signatures)}"
        )
    function = loaded.signatures[signature]
    specs = function.structured_input_signature[1]
    output_names = sorted(function.structured_outputs)
    description = read_description(folder) or {}
    plan = embed_inputs.plan_feeds(specs, description.get("modalities"))
    embed_inputs.check_columns(plan, rows, manifest, signature, ignore)
    npy_output = embed_outputs.npy_output(output, output_names) if extension == ".npy" else None

    dataset = from_manifest(
        manifest,
        modalities=plan.kinds,
        ignore=ignore,
        image_size=plan.image_size or 224,
        audio_seconds=plan.audio_seconds,
        video_size=plan.video_size or 112,
        video_frames=plan.video_frames,
    )
    batches = dataset.padded_batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if verbose:
        fed = [*plan.kinds, *plan.padding, *([plan.presence] if plan.presence else [])]
        print(
            f"Embedding {len(rows)} rows of {manifest} with {folder} ({how}), signature "
            f"{signature!r}, inputs {fed} -> {output}"
        )
    bar = (
        keras.utils.Progbar(len(rows), unit_name="row", stateful_metrics=["rows/s"])
        if verbose
        else None
    )
    results = {name: [] for name in output_names}
    labels = []
    start, done = time.perf_counter(), 0
    try:
        for batch in batches:
            try:
                embed_inputs.check_batch(plan, batch, first_row=done + 1)
            except ServingError as error:
                raise ServingError(f"manifest {manifest}: {error}") from None
            feed = _feed(batch, plan, tf)
            for name, value in function(**feed).items():
                results[name].append(value.numpy())
            if "label" in batch:
                labels.append(batch["label"].numpy())
            done += int(batch["presence"].shape[0])
            if bar is not None:
                bar.update(done, values=[("rows/s", done / (time.perf_counter() - start))])
    except tf.errors.OpError as error:
        raise ServingError(f"manifest {manifest}: {_reason(error)}") from error
    seconds = time.perf_counter() - start
    outputs = {name: np.concatenate(parts) for name, parts in results.items()}
    labels = np.concatenate(labels) if labels else None
    if labels is not None and labels.dtype == object:
        labels = np.array([v.decode("utf-8") for v in labels])
    embed_outputs.write_output(output, extension, outputs, labels, npy_output)
    if verbose:
        print(f"Wrote {done} rows in {seconds:.1f} s ({done / seconds:.1f} rows/s) to {output}")
    return {
        "rows": done,
        "model": folder,
        "signature": signature,
        "output": output,
        "outputs": {name: list(value.shape) for name, value in outputs.items()},
        "seconds": seconds,
        "rows_per_second": done / seconds,
    }


def _feed(batch, plan, tf):
    """The signature's keyword arguments from a batch of `from_manifest` examples."""
    from mmrep.preprocessing.image_io import rgb_to_luma

    feed = {}
    for name in plan.kinds:
        spec = plan.specs[name]
        value = batch[name]
        if plan.kinds[name] in ("image", "video") and spec.shape[-1] == 1:
            value = rgb_to_luma(value)  # as decode_image(channels=1) converts
        feed[name] = tf.cast(value, spec.dtype) if value.dtype != spec.dtype else value
    for name in plan.padding:  # `from_manifest` emits them under the same names
        value, dtype = batch[name], plan.specs[name].dtype
        feed[name] = tf.cast(value, dtype) if value.dtype != dtype else value
    if plan.presence is not None:
        feed[plan.presence] = tf.cast(batch["presence"], plan.specs[plan.presence].dtype)
    return feed


def _reason(error):
    """The useful line of a TensorFlow error raised from a manifest row."""
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    for line in reversed(lines):
        if "ManifestError" in line or "Error:" in line:
            return line
    return lines[0] if lines else str(error)
