"""`embed_manifest`: run an exported SavedModel over a manifest and save its outputs.

The back end of `mmrep embed`: users' files (listed in a CSV / JSON Lines manifest, read
by `mmrep.data.from_manifest`) go through a signature of a SavedModel written by
`export_saved_model` (or any SavedModel whose inputs are named like the manifest's
columns), in batches, and the outputs land in one .npy, .npz or .parquet file.

The work streams: rows are taken in chunks (`chunk_rows`), each finished chunk is saved
in a work folder beside the output (`mmrep.export.embed_partial`), and the output is
assembled when all are done, so a killed or failed run keeps what it finished and
`resume=True` continues it. A row that cannot be read or run (a missing or corrupt file,
an image corrupt inside that only the graph's decoder finds, a value the model's checks
refuse) stops the run naming the row and file (`on_error="fail"`), or is left out and
listed with its reason in a report beside the output (`on_error="skip"`).
"""

import os
import time

from mmrep.export import embed_inputs, embed_outputs
from mmrep.export.embed_partial import PartialRun, file_digest, model_digest
from mmrep.export.errors import ServingError
from mmrep.export.runtime_needs import load_saved_model
from mmrep.export.versions import resolve_saved_model
from mmrep.utils.arguments import is_int

ON_ERROR = ("fail", "skip")
REPORT_SUFFIX = ".skipped.jsonl"
FILE_KINDS = ("image", "image_bytes", "audio", "video")


def report_path(output):
    """The report of the rows an `embed_manifest` run left out: `<output>.skipped.jsonl`."""
    return os.fspath(output) + REPORT_SUFFIX


def embed_manifest(
    model,
    manifest,
    output,
    *,
    batch_size=64,
    signature="serving_default",
    verbose=True,
    ignore=(),
    on_error="fail",
    resume=False,
    chunk_rows=1024,
    root=None,
    allow_outside=False,
):
    """Runs a SavedModel signature over every row of a manifest and writes the outputs.

    The signature's inputs decide what is read: an input named like a manifest column is
    fed from it, as text (`tf.string`), audio (float `[S]`, 16 kHz, cut or zero-padded to
    `S` samples; `[None]`: each clip at its own length, zero-padded to the longest of its
    batch), an image (`[H, W, C]`, decoded and resized to `H`x`W`) or a video
    (`[T, H, W, C]`, the first `T` frames, resized, zero-padded; `T = None`: every frame
    up to `from_manifest`'s cap, padded to the longest of the batch); a string input
    `<column>_bytes` (an `embed_<image>_bytes` signature) gets the bytes of the image
    file in column `<column>`. Padding inputs named after an audio or video input are
    fed what the padding hides (never a column): `<audio input>_length` the samples
    before zero padding (0 for a missing clip) and `<video input>_frame_mask` True for
    decoded frames. An input of open length without its padding input gets only batches
    of equal-length clips (a `ServingError` names the rows otherwise: use
    `batch_size=1`, or export with the padding input); a `presence` input is fed 1 where
    a row has the modality and 0 where its cell is empty, in the order recorded at export
    (`assets.extra/mmrep.json`, else by kind: image, text, audio, video). Images and video
    frames must be square in the model; float image inputs receive pixel values 0..255.

    Columns of the export's other modalities are left unread by a signature that does
    not take them, so `signature="embed_image"` runs on the full manifest; for a
    signature without a `presence` input, rows whose cell is empty are left out and
    listed in the report. The packages the export records under `requires` (such as
    `tensorflow_text` for an in-graph tokenizer) are imported before loading.

    Rows are worked through in chunks of `chunk_rows`, batched within their chunk; each
    finished chunk is saved in `.<output name>.partial/` beside the output, which is
    assembled at the end (and the folder removed). A killed run, or one stopped at a bad
    row, keeps its finished chunks (a run that finished none leaves nothing):
    `resume=True` continues from the first unfinished
    one and gives the output an uninterrupted run gives, bit for bit (the model, the
    manifest and the options that decide the results must be the same; `on_error` may
    change).

    Outputs: `.npy` holds the `embedding` output (or the only one); `.npz` every output,
    `row` (the 1-based manifest row number of each kept row), `label` when the manifest
    has labels and `<column>_path` (the manifest's cell, "" where empty) for each file
    column read; `.parquet` the same as columns, one row per kept manifest row, outputs
    as list<float32> (flattened; shapes in the schema metadata `mmrep.output_shapes`)
    (needs pyarrow). Files are written atomically.

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
        on_error: `"fail"` or `"skip"`. `"fail"` stops at the first row that cannot be
            read or run, naming the row, column and file (finished chunks are kept for
            `resume`); `"skip"` leaves such rows out and lists each with its reason in
            `<output>.skipped.jsonl` (JSON Lines: `row`, `reason`), written with the
            output. Defaults to `"fail"`.
        resume: bool. Continue the unfinished run of this output. Without it, an
            unfinished run's work folder is an error. Defaults to `False`.
        chunk_rows: int. Manifest rows per saved chunk. Defaults to `1024`.
        root: str or `None`. As in `from_manifest`: a folder the manifest's paths may
            be anywhere under. Defaults to `None` (the manifest's folder).
        allow_outside: bool. As in `from_manifest`: allow paths anywhere.
            Defaults to `False`.

    Returns:
        dict with `rows` (kept), `skipped`, `report` (its path, or `None` when none was
        written), `model` (the version folder), `signature`, `output`, `outputs`
        (`{name: shape}`), `seconds` and `rows_per_second`.

    Raises:
        ModelNotFoundError: `model` does not exist or holds no SavedModel.
        FileNotFoundError: `manifest` does not exist.
        OutputExistsError: `output` or its report exists.
        MissingDependencyError: (an `ImportError` and a `ServingError`) a package the
            export needs, or `.parquet`'s pyarrow, is not installed; the message says
            how to install it.
        ServingError: an unknown signature or output format; an output folder that
            cannot be written; a SavedModel that cannot be loaded; a manifest whose
            columns are not the signature's inputs (both sets named); an input a
            manifest cannot feed; with `on_error="fail"`, a row that cannot be read or
            run (row, column and file named); clips of different lengths in a batch for
            an input of open length that has no padding input (the rows named); an
            unfinished run without `resume`, or `resume` with different settings.

    Example:

    >>> summary = embed_manifest("saved_models/mmdigits_concat", "data/manifest.csv",
    ...                          "embeddings.parquet")  # doctest: +SKIP
    >>> summary["outputs"]  # doctest: +SKIP
    {'embedding': [270, 64], 'probabilities': [270, 10]}
    """
    from mmrep.data.manifest import read_rows
    from mmrep.export.saved_model import read_description

    if not is_int(batch_size, 1):
        raise ServingError(
            f"Expected `batch_size` to be a positive int. Received: batch_size={batch_size!r}"
        )
    if not is_int(chunk_rows, 1):
        raise ServingError(
            f"Expected `chunk_rows` to be a positive int. Received: chunk_rows={chunk_rows!r}"
        )
    if on_error not in ON_ERROR:
        raise ServingError(
            f"Expected `on_error` to be one of {ON_ERROR}. Received: on_error={on_error!r}"
        )
    output, manifest = os.fspath(output), os.fspath(manifest)
    folder, how = resolve_saved_model(model)
    extension = embed_outputs.output_format(output)
    embed_outputs.check_absent(report_path(output))
    rows = read_rows(manifest)
    if not rows:
        raise ServingError(f"manifest {manifest} has no rows")
    description = read_description(folder) or {}
    loaded = load_saved_model(folder, description)
    if signature not in loaded.signatures:
        raise ServingError(
            f"SavedModel {folder} has no signature {signature!r}; it has "
            f"{sorted(loaded.signatures)}"
        )
    function = loaded.signatures[signature]
    specs = function.structured_input_signature[1]
    output_names = sorted(function.structured_outputs)
    plan = embed_inputs.plan_feeds(
        specs, description.get("modalities"), embed_inputs.manifest_columns(rows)
    )
    left_out = embed_inputs.check_columns(
        plan, rows, manifest, signature, ignore, description.get("modalities") or ()
    )
    paths = {f"{c}_path": c for i, c in plan.columns.items() if plan.kinds[i] in FILE_KINDS}
    embed_outputs.check_names(output, output_names, ["row", "label", *paths])
    npy_output = embed_outputs.npy_output(output, output_names) if extension == ".npy" else None
    state = {
        "format": "mmrep.embed/1",
        "manifest": file_digest(manifest),
        "model": model_digest(folder),
        "signature": signature,
        "batch_size": int(batch_size),
        "chunk_rows": int(chunk_rows),
        "ignore": sorted(ignore),
        "root": None if root is None else os.path.abspath(root),
        "allow_outside": bool(allow_outside),
    }
    partial = PartialRun(output, state, resume)
    run = _Run(
        function=function,
        plan=plan,
        rows=rows,
        manifest=manifest,
        batch_size=int(batch_size),
        chunk_rows=int(chunk_rows),
        on_error=on_error,
        left_out=left_out,
        paths=paths,
        partial=partial,
        dataset_options={
            "ignore": (*ignore, *plan.unread),
            "root": root,
            "allow_outside": allow_outside,
        },
    )
    finished = partial.finished()
    if verbose:
        fed = [*plan.kinds, *plan.padding, *([plan.presence] if plan.presence else [])]
        print(
            f"Embedding {len(rows)} rows of {manifest} with {folder} ({how}), signature "
            f"{signature!r}, inputs {fed}"
            + (f" (columns {plan.unread} unread)" if plan.unread else "")
            + f" -> {output}"
        )
        if finished:
            print(f"Resuming: {finished} chunks of {chunk_rows} rows done in {partial.folder}")
    start = time.perf_counter()
    try:
        kept = run.run(first_chunk=finished, verbose=verbose)
    except BaseException:
        if partial.finished() == 0:
            partial.remove()  # nothing finished to keep for a resume
        raise
    seconds = time.perf_counter() - start
    arrays, skipped = partial.read_chunks(run.chunks)
    outputs = {name: arrays[name] for name in output_names if name in arrays}
    if len(outputs) != len(output_names):
        raise ServingError(
            f"manifest {manifest}: every row was left out ({len(skipped)} rows); nothing to "
            f"write to {output}. Reasons: {_first_reasons(skipped)}"
        )
    extra = {"row": arrays["row"], **{name: arrays[name] for name in paths}}
    labels = arrays.get("label")
    report = None
    if skipped or on_error == "skip":
        report = report_path(output)
        embed_outputs.write_report(report, skipped)
    embed_outputs.write_output(output, extension, outputs, labels, npy_output, extra=extra)
    partial.remove()
    done = len(extra["row"])
    if verbose:
        print(
            f"Wrote {done} rows to {output} in {seconds:.1f} s ({kept / seconds:.1f} rows/s "
            "this run)" + (f"; {len(skipped)} rows left out, listed in {report}" if skipped else "")
        )
    return {
        "rows": done,
        "skipped": len(skipped),
        "report": report,
        "model": folder,
        "signature": signature,
        "output": output,
        "outputs": {name: list(value.shape) for name, value in outputs.items()},
        "seconds": seconds,
        "rows_per_second": kept / seconds if seconds > 0 else float("nan"),
    }


def _first_reasons(skipped, count=3):
    return "; ".join(f"row {s['row']}: {s['reason']}" for s in skipped[:count])


class _Run:
    """Streams a manifest's rows through a signature, chunk by chunk, into a `PartialRun`.

    Examples come from `from_manifest` in row order (`row_numbers=True`); rows its
    Python half cannot read arrive through its `on_error` callback, and a row the
    graph half cannot decode (an image corrupt inside) ends the dataset's iterator with
    an error: the row is found (the first one after the last example that was not
    already left out), diagnosed by decoding it eagerly, and the dataset restarts after
    it. Examples are batched here, within their chunk, so a chunk's batches never depend
    on where a run started.
    """

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)
        self.bad = {}  # row -> reason: rows that could not be read or run
        self.count = len(self.rows)
        self.chunks = -(-self.count // self.chunk_rows)

    def chunk_range(self, index):
        return index * self.chunk_rows + 1, min((index + 1) * self.chunk_rows, self.count)

    def run(self, first_chunk, verbose):
        """Runs chunks `first_chunk..` and saves each; returns the number of rows run."""
        import keras

        if first_chunk >= self.chunks:
            return 0
        first_row = self.chunk_range(first_chunk)[0]
        bar = None
        if verbose:
            bar = keras.utils.Progbar(self.count, unit_name="row", stateful_metrics=["rows/s"])
            bar.update(first_row - 1)
        numbers = [n for n in range(first_row, self.count + 1) if n not in self.left_out]
        chunk, pending, results = first_chunk, [], []
        start, kept = time.perf_counter(), 0
        for example in self._examples(numbers):
            row = int(example["row"])
            self._check_failures(before=row)
            while row > self.chunk_range(chunk)[1]:
                results.extend(self._run_batch(pending))
                pending = []
                self._save(chunk, results)
                chunk, results = chunk + 1, []
            pending.append(example)
            if len(pending) == self.batch_size:
                results.extend(self._run_batch(pending))
                kept += len(pending)
                pending = []
                if bar is not None:
                    seconds = time.perf_counter() - start
                    bar.update(row, values=[("rows/s", kept / seconds)])
        self._check_failures(before=self.count + 1)
        results.extend(self._run_batch(pending))
        kept += len(pending)
        for index in range(chunk, self.chunks):
            self._save(index, results)
            results = []
        if bar is not None:
            seconds = time.perf_counter() - start
            bar.update(self.count, values=[("rows/s", kept / max(seconds, 1e-9))])
        return kept

    def _check_failures(self, before):
        """With `on_error="fail"`, raises for the first bad row before row `before`."""
        if self.on_error != "fail" or not self.bad:
            return
        row = min(self.bad)
        if row < before:
            raise ServingError(
                f"manifest {self.manifest}, row {row}: {self.bad[row]}. Finished chunks "
                f"are kept in {self.partial.folder}: fix the row (or pass --on-error skip) "
                "and run again with --resume"
            )

    def _save(self, index, results):
        first, last = self.chunk_range(index)
        self._check_failures(before=last + 1)
        skipped = [
            {"row": row, "reason": reason}
            for row, reason in sorted({**self.left_out, **self.bad}.items())
            if first <= row <= last
        ]
        self.partial.write_chunk(index, self._arrays(results), skipped)

    def _kinds(self):
        """`{column: kind}` of the columns read (image bytes are image files)."""
        plan = self.plan
        return {
            plan.columns[i]: "image" if k == "image_bytes" else k for i, k in plan.kinds.items()
        }

    def _options(self):
        """The `from_manifest` options given (ignored columns, path bounds)."""
        return {k: v for k, v in self.dataset_options.items() if v not in (None, False)}

    def _dataset(self, numbers):
        from mmrep.data.manifest import from_manifest

        plan = self.plan
        dataset = from_manifest(
            self.manifest,
            modalities=self._kinds(),
            image_size=plan.image_size or 224,
            audio_seconds=plan.audio_seconds,
            video_size=plan.video_size or 112,
            video_frames=plan.video_frames,
            on_error=self._skipped_by_reader,
            rows=numbers,
            row_numbers=True,
            image_bytes=[plan.columns[i] for i, k in plan.kinds.items() if k == "image_bytes"],
            **self._options(),
        )
        return dataset.prefetch(2 * self.batch_size)

    def _skipped_by_reader(self, row, error):
        message = str(error)
        prefix = f"row {row}: "
        self.bad[row] = message[len(prefix) :] if message.startswith(prefix) else message

    def _examples(self, numbers):
        """The decoded examples of rows `numbers`, in order, as numpy dicts."""
        import tensorflow as tf

        pending = list(numbers)
        while pending:
            last = 0
            try:
                for example in self._dataset(pending).as_numpy_iterator():
                    last = int(example["row"])
                    yield example
                return
            except tf.errors.OpError as error:
                after = [n for n in pending if n > last and n not in self.bad]
                reason = after and self._diagnose(after[0])
                if not reason:
                    raise ServingError(f"manifest {self.manifest}: {_reason(error)}") from error
                self.bad[after[0]] = reason
                pending = after[1:]

    def _diagnose(self, row):
        """Why the graph could not decode a row: its image files decoded eagerly."""
        from mmrep.data.manifest import undecodable_images

        bad = undecodable_images(
            self.manifest, modalities=self._kinds(), rows=[row], limit=1, **self._options()
        )
        return f"{bad[0]['column']} file {bad[0]['file']!r}: {bad[0]['reason']}" if bad else None

    def _run_batch(self, examples):
        """`[(row, example, outputs)]` of the examples that ran; bad rows recorded."""
        import tensorflow as tf

        if not examples:
            return []
        batch = _stack(examples)
        first_row = int(examples[0]["row"])
        try:
            embed_inputs.check_batch(self.plan, batch, first_row=first_row)
        except ServingError as error:
            raise ServingError(f"manifest {self.manifest}: {error}") from None
        try:
            outputs = self._call(batch)
        except tf.errors.OpError:
            if len(examples) == 1:
                raise
            # Find the rows the model refuses: run them one by one.
            ran = []
            for example in examples:
                try:
                    ran.extend(self._run_batch([example]))
                except tf.errors.OpError as error:
                    self.bad[int(example["row"])] = f"the model refused the row: {_reason(error)}"
            return ran
        return [
            (int(example["row"]), example, {k: v[i] for k, v in outputs.items()})
            for i, example in enumerate(examples)
        ]

    def _call(self, batch):
        import tensorflow as tf

        feed = _feed(batch, self.plan, tf)
        return {name: value.numpy() for name, value in self.function(**feed).items()}

    def _arrays(self, results):
        """A chunk's arrays: outputs, `row`, `label` and `<column>_path` of its kept rows."""
        import numpy as np

        arrays = {"row": np.array([row for row, _, _ in results], "int64")}
        for name, column in self.paths.items():
            cells = [self.rows[row - 1].get(column) for row, _, _ in results]
            arrays[name] = np.array(["" if cell is None else str(cell) for cell in cells])
        if not results:
            return arrays
        for name in results[0][2]:
            arrays[name] = np.stack([outputs[name] for _, _, outputs in results])
        if "label" in results[0][1]:
            labels = [example["label"] for _, example, _ in results]
            if isinstance(labels[0], bytes):
                labels = [label.decode("utf-8") for label in labels]
            arrays["label"] = np.array(labels)
        return arrays


def _stack(examples):
    """A padded batch (numpy) of examples: arrays zero-padded to the largest of each key."""
    import numpy as np

    batch = {}
    for key in examples[0]:
        values = [example[key] for example in examples]
        first = np.asarray(values[0])
        if first.dtype.kind in "SUO":
            batch[key] = np.array(values, dtype=object)
            continue
        arrays = [np.asarray(v) for v in values]
        shape = tuple(max(a.shape[d] for a in arrays) for d in range(first.ndim))
        stacked = np.zeros((len(arrays), *shape), first.dtype)
        for i, a in enumerate(arrays):
            stacked[(i, *(slice(0, n) for n in a.shape))] = a
        batch[key] = stacked
    return batch


def _feed(batch, plan, tf):
    """The signature's keyword arguments from a padded numpy batch of examples."""
    from mmrep.preprocessing.image_io import rgb_to_luma

    def fed(value, dtype):
        value = tf.constant(value)
        return tf.cast(value, dtype) if value.dtype != dtype else value

    feed = {}
    for name, kind in plan.kinds.items():
        spec = plan.specs[name]
        value = batch[plan.columns[name]]
        if kind in ("image", "video") and spec.shape[-1] == 1:
            value = rgb_to_luma(value)  # as decode_image(channels=1) converts
        feed[name] = fed(value, spec.dtype)
    for name in plan.padding:  # `from_manifest` emits them under the same names
        feed[name] = fed(batch[name], plan.specs[name].dtype)
    if plan.presence is not None:
        feed[plan.presence] = fed(batch["presence"], plan.specs[plan.presence].dtype)
    return feed


def _reason(error):
    """The useful line of a TensorFlow error raised from a manifest row or a model call."""
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[{{node", "File ")
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(noise)] or lines
    for line in reversed(lines):
        if "ManifestError" in line or "Error:" in line or "assertion failed" in line:
            return line
    return lines[0] if lines else str(error)
