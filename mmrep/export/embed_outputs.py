"""Writing `embed_manifest`'s results: .npy, .npz or .parquet, atomically.

The file is written under a hidden temporary name in the output's folder and moved into
place with `os.replace` (`mmrep.utils.atomic_write`), so a reader never sees half a file
and a failure leaves none; temporary files a killed write left are removed by the next
write of that output.
"""

import json
import os

import numpy as np

from mmrep.export.errors import MissingDependencyError, OutputExistsError, ServingError
from mmrep.utils.atomic_write import atomic_write

FORMATS = (".npy", ".npz", ".parquet")
PARQUET_HINT = 'pip install "mmrep[parquet]"'


def check_absent(path):
    """Raises `OutputExistsError` if `path` exists (a file, folder or link)."""
    if os.path.lexists(path):
        raise OutputExistsError(f"output {path} already exists; remove it or choose another path")


def output_format(path):
    """Checks an output path before any work is done; returns its format.

    The output's folder is created if missing and must be a writable folder.

    Args:
        path: str. The output file.

    Returns:
        str, the extension: one of `FORMATS`.

    Raises:
        OutputExistsError: `path` exists.
        ServingError: an unknown extension, or a folder that cannot be created or
            written (named, with the reason).
        MissingDependencyError: (an `ImportError`) .parquet without pyarrow installed.
    """
    check_absent(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise ServingError(
            f"output {path}: expected a file ending in one of {FORMATS}. Received: "
            f"{extension or 'no extension'}"
        )
    if extension == ".parquet":
        _pyarrow()
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise ServingError(
            f"output {path}: cannot create its folder {folder}: {error.strerror or error}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ServingError(f"output {path}: expected a writable folder; {folder} is not writable")
    return extension


def check_names(path, output_names, extra_names):
    """Refuses signature outputs named like the columns embed_manifest adds.

    Raises:
        ServingError: an output named `row`, `label` or `<column>_path`.
    """
    clash = sorted(set(output_names) & set(extra_names))
    if clash:
        raise ServingError(
            f"output {path}: the signature's outputs {clash} clash with the columns "
            f"embed_manifest adds ({list(extra_names)}); rename those outputs"
        )


def write_report(path, skipped):
    """Writes the rows left out, one JSON object per line (`row`, `reason`), atomically."""
    text = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in skipped)
    with atomic_write(path, "wb") as f:
        f.write(text.encode("utf-8"))


def npy_output(path, output_names):
    """The output a .npy file holds: `"embedding"`, or the only output.

    Raises:
        ServingError: several outputs and none named `embedding`.
    """
    if "embedding" in output_names:
        return "embedding"
    if len(output_names) == 1:
        return output_names[0]
    raise ServingError(
        f"output {path}: a .npy file holds one array, and the signature has several "
        f"outputs {output_names}, none named 'embedding'; write .npz or .parquet"
    )


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise MissingDependencyError(
            f"writing .parquet needs pyarrow, which is not installed: {PARQUET_HINT}"
        ) from error
    return pyarrow, pyarrow.parquet


def write_output(path, extension, outputs, labels=None, npy_output=None, extra=None):
    """Writes the outputs to `path` atomically.

    Args:
        path: str. The output file (its folder is created if missing).
        extension: one of `FORMATS`.
        outputs: dict `{name: array [rows, ...]}`.
        labels: array `[rows]` or `None`.
        npy_output: str. For .npy, the output to write.
        extra: dict `{name: array [rows]}` or `None`. Columns written beside the outputs
            in .npz and .parquet (the row numbers and file paths).
    """
    if labels is not None and "label" in outputs and extension != ".npy":
        raise ServingError(
            f"output {path}: the signature has an output named 'label', which would clash "
            "with the manifest's labels; write .npy or rename the output"
        )
    extra = dict(extra or {})
    if labels is not None:
        extra["label"] = labels
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(f):
        if extension == ".parquet":
            _write_parquet(f, outputs, extra)
        elif extension == ".npy":
            np.save(f, outputs[npy_output])
        else:
            np.savez(f, **outputs, **extra)

    with atomic_write(path, "wb") as f:
        write(f)


def _write_parquet(path, outputs, extra):
    """One row per example: a list<float32> column per output (flattened), and `extra`."""
    pa, pq = _pyarrow()
    columns, shapes = {}, {}
    for name, values in outputs.items():
        values = np.asarray(values)
        if np.issubdtype(values.dtype, np.floating):
            values = values.astype("float32")
        shapes[name] = list(values.shape[1:])
        if values.ndim == 1:
            columns[name] = pa.array(values)
            continue
        flat = values.reshape(len(values), -1)
        offsets = np.arange(len(flat) + 1, dtype="int32") * flat.shape[1]
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.ravel()))
    for name, values in extra.items():
        values = np.asarray(values)
        columns[name] = pa.array(values.tolist() if values.dtype.kind in "OU" else values)
    table = pa.table(columns)
    metadata = {b"mmrep.output_shapes": json.dumps(shapes).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)
