"""Writing `embed_manifest`'s results: .npy, .npz or .parquet, atomically.

The file is written under a hidden temporary name in the output's folder and moved into
place with `os.replace`, so a reader never sees half a file and a failure leaves none.
"""

import json
import os
import uuid

import numpy as np

from mmrep.export.errors import MissingDependencyError, OutputExistsError, ServingError

FORMATS = (".npy", ".npz", ".parquet")
PARQUET_HINT = 'pip install "mmrep[parquet]"'


def output_format(path):
    """Checks an output path before any work is done; returns its format.

    Args:
        path: str. The output file.

    Returns:
        str, the extension: one of `FORMATS`.

    Raises:
        OutputExistsError: `path` exists.
        ServingError: an unknown extension.
        MissingDependencyError: (an `ImportError`) .parquet without pyarrow installed.
    """
    if os.path.lexists(path):
        raise OutputExistsError(f"output {path} already exists; remove it or choose another path")
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise ServingError(
            f"output {path}: expected a file ending in one of {FORMATS}. Received: "
            f"{extension or 'no extension'}"
        )
    if extension == ".parquet":
        _pyarrow()
    return extension


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


def write_output(path, extension, outputs, labels=None, npy_output=None):
    """Writes the outputs to `path` atomically.

    Args:
        path: str. The output file (its folder is created if missing).
        extension: one of `FORMATS`.
        outputs: dict `{name: array [rows, ...]}`.
        labels: array `[rows]` or `None`.
        npy_output: str. For .npy, the output to write.
    """
    if labels is not None and "label" in outputs and extension != ".npy":
        raise ServingError(
            f"output {path}: the signature has an output named 'label', which would clash "
            "with the manifest's labels; write .npy or rename the output"
        )
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        if extension == ".parquet":
            _write_parquet(temp, outputs, labels)
        else:
            with open(temp, "wb") as f:
                if extension == ".npy":
                    np.save(f, outputs[npy_output])
                else:
                    extra = {} if labels is None else {"label": labels}
                    np.savez(f, **outputs, **extra)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def _write_parquet(path, outputs, labels):
    """One row per example: a list<float32> column per output (flattened), and the label."""
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
    if labels is not None:
        labels = np.asarray(labels)
        columns["label"] = pa.array(labels.tolist() if labels.dtype == object else labels)
    table = pa.table(columns)
    metadata = {b"mmrep.output_shapes": json.dumps(shapes).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)
