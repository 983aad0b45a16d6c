"""Reading a manifest file into checked rows: encoding, header, cells, values, labels, paths.

A manifest is read so that it cannot be misread: the file must be UTF-8 (a byte-order
mark is accepted); a CSV header must name every column once, and every row must have
as many cells as the header; a JSON Lines object must name each key once, and give
strings (or null) for modality columns; labels must all be integers (JSON integers,
integral JSON numbers, or strings of ASCII digits) or else are read as strings, and
anything else (a fractional number, a bool, a list) is an error. Every error names the
manifest, the row (and the line it starts on) and the column; none quotes the content
of a file the manifest names.

File paths are relative to the manifest's folder and must stay inside it (or inside
`root`), both as written (`..` normalised away) and once symbolic links are followed,
unless the caller allows any path.
"""

import codecs
import collections
import csv
import io
import json
import os
import re
import typing

import numpy as np

from mmrep.preprocessing.regular_file import open_regular

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
# Labels are integers when every one is: an int, an integral float, or ASCII digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT32 = (-(2**31), 2**31 - 1)


class ManifestError(ValueError):
    """A manifest row that cannot be read; the message names the row and the file."""


class ManifestRows(typing.NamedTuple):
    """A manifest's rows (dicts of cells) and the line where each row starts."""

    path: str
    rows: list
    lines: list

    def where(self, index):
        """`"row N (line L)"` for the row at 0-based `index`."""
        return f"row {index + 1} (line {self.lines[index]})"


def is_empty(value):
    """Whether a cell means "missing": absent, null, or blank."""
    return value is None or (isinstance(value, str) and not value.strip())


def read_rows(path):
    """The rows of a CSV (with a header) or JSON Lines manifest, as a list of dicts.

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: the manifest is not a regular file, not UTF-8, or malformed
            (see `read_manifest`).
    """
    return read_manifest(path).rows


def read_manifest(path):
    """A manifest's checked rows, with the line each starts on.

    Args:
        path: str or path. A `.csv` file with a header, or a `.jsonl` / `.ndjson` /
            `.json` file with one JSON object per line. Blank lines are skipped.

    Returns:
        `ManifestRows(path, rows, lines)`.

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: the path is not a regular file; the file is not UTF-8 (naming the
            line and byte); a CSV header is missing, names a column twice or leaves one
            unnamed; a CSV row has more or fewer cells than the header; a line is not a
            JSON object, or names a key twice.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"manifest not found: {path}")
    with open_regular(path, ManifestError, "Manifest") as f:
        text = _decode(path, f.read())
    if path.lower().endswith(JSON_SUFFIXES):
        return _json_rows(path, text)
    return _csv_rows(path, text)


def _decode(path, data):
    """The text of a UTF-8 file (with or without a byte-order mark)."""
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start
        line = data.count(b"\n", 0, offset) + 1
        found = ""
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            found = " (it is UTF-16)"
        raise ManifestError(
            f"{path}: line {line} is not UTF-8{found}: byte {offset} of the file cannot be "
            'decoded. Save the manifest as UTF-8 (in Excel: "CSV UTF-8").'
        ) from None


def _csv_rows(path, text):
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        where = "the file is empty" if not text.strip() else "its first line is empty"
        raise ManifestError(f"{path}: expected a CSV header naming the columns; {where}")
    unnamed = [i for i, name in enumerate(header, start=1) if not name.strip()]
    if unnamed:
        raise ManifestError(
            f"{path}: the header's column {unnamed[0]} has no name (header: {header}); "
            "name every column"
        )
    positions = collections.defaultdict(list)
    for i, name in enumerate(header, start=1):
        positions[name].append(i)
    repeated = {name: where for name, where in positions.items() if len(where) > 1}
    if repeated:
        names = "; ".join(f"{name!r} (columns {_and(where)})" for name, where in repeated.items())
        raise ManifestError(
            f"{path}: the header names {names} more than once; every column needs its own "
            "name, or all but one of its cells would be dropped"
        )
    rows, lines = [], []
    line = reader.line_num + 1  # where the next record starts
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not cells:  # a blank line
                continue
            if len(cells) != len(header):
                raise ManifestError(
                    f"{path}: row {len(rows) + 1} (line {start}): expected {len(header)} "
                    f"cells, one per column of the header {header}. Received: {len(cells)}"
                )
            rows.append(dict(zip(header, cells, strict=True)))
            lines.append(start)
    except csv.Error as error:
        raise ManifestError(
            f"{path}: row {len(rows) + 1} (line {line}): cannot be read as CSV: {error}"
        ) from None
    return ManifestRows(path, rows, lines)


class _Repeated(dict):
    """A JSON object that named some keys more than once (`json` keeps the last)."""

    repeated = ()


def _object(pairs):
    row = dict(pairs)
    if len(row) < len(pairs):
        row = _Repeated(row)
        counts = collections.Counter(key for key, _ in pairs)
        row.repeated = [key for key, count in counts.items() if count > 1]
    return row


def _json_rows(path, text):
    rows, lines = [], []
    # Only line breaks split lines: U+2028 and the like may sit inside JSON strings.
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_object)
        except json.JSONDecodeError as error:
            raise ManifestError(
                f"{path}: line {number} is not JSON: {error.msg} (column {error.colno})"
            ) from None
        except RecursionError:
            raise ManifestError(f"{path}: line {number} is JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise ManifestError(
                f"{path}: line {number}: expected a JSON object per line. "
                f"Received: {type(row).__name__}"
            )
        if isinstance(row, _Repeated):
            names = ", ".join(repr(key) for key in row.repeated)
            raise ManifestError(
                f"{path}: row {len(rows) + 1} (line {number}): the object names {names} more "
                "than once; JSON keeps only the last value"
            )
        rows.append(row)
        lines.append(number)
    return ManifestRows(path, rows, lines)


def _and(numbers):
    numbers = [str(n) for n in numbers]
    return numbers[0] if len(numbers) == 1 else f"{', '.join(numbers[:-1])} and {numbers[-1]}"


def check_values(manifest, columns):
    """Refuses modality values that are neither strings nor null (JSON Lines).

    Args:
        manifest: `ManifestRows`.
        columns: dict `{column: kind}` of the modality columns.

    Raises:
        ManifestError: naming the row, line and column of the first such value.
    """
    for index, row in enumerate(manifest.rows):
        for column, kind in columns.items():
            value = row.get(column)
            if value is not None and not isinstance(value, str):
                what = "the text" if kind == "text" else "a file path"
                raise ManifestError(
                    f"{manifest.path}: {manifest.where(index)}, column {column!r}: expected a "
                    f"string ({what}) or null. Received: {type(value).__name__}"
                )


def read_labels(manifest, label="label"):
    """The label column as int32 (every label an integer) or strings; `None` if absent.

    Integers are JSON integers, integral JSON numbers (`2.0`) and strings of ASCII
    digits with an optional sign and surrounding blanks (`"007"` is 7); if any label is
    something else, every label is read as a string (`2` as `"2"`).

    Raises:
        ManifestError: some rows have no label while others do; a label is a fractional
            or non-finite number, a bool, a list, an object; an integer label does not
            fit int32. Each names the row, line and column.
    """
    rows = manifest.rows
    if not any(label in row for row in rows):
        return None
    values = [row.get(label) for row in rows]
    missing = [i + 1 for i, v in enumerate(values) if is_empty(v)]
    if missing:
        raise ManifestError(
            f"{manifest.path}: rows {missing[:10]} have no label (column {label!r}); label "
            "every row or none"
        )

    def refuse(index, reason):
        where = manifest.where(index)
        return ManifestError(f"{manifest.path}: {where}, column {label!r}: {reason}")

    parsed = []
    for index, value in enumerate(values):
        if isinstance(value, float):
            if not value.is_integer():
                raise refuse(
                    index,
                    "expected an integer or a string label. Received: the number "
                    f"{value!r}, which is not an integer",
                )
            value = int(value)
        elif isinstance(value, bool) or not isinstance(value, int | str):
            raise refuse(
                index,
                f"expected an integer or a string label. Received: {type(value).__name__}",
            )
        parsed.append(value)
    integers = [
        v if isinstance(v, int) else int(v) if _INTEGER.fullmatch(v.strip()) else None
        for v in parsed
    ]
    if any(v is None for v in integers):
        return np.array([str(v) for v in parsed], dtype=object)
    for index, value in enumerate(integers):
        if not _INT32[0] <= value <= _INT32[1]:
            raise refuse(
                index,
                f"the integer label {value} does not fit int32 (labels are int32 when "
                "every one is an integer)",
            )
    return np.array(integers, "int32")


def path_bound(folder, root, allow_outside):
    """The folder that file paths must lie under: `root`, else the manifest's `folder`.

    Returns `None` (any path) with `allow_outside=True`.

    Raises:
        ValueError: `root` is not an existing folder, `allow_outside` is not a bool, or
            both are given.
    """
    if not isinstance(allow_outside, bool):
        raise ValueError(
            f"Expected `allow_outside` to be True or False. Received: allow_outside={allow_outside!r}"
        )
    if root is not None and allow_outside:
        raise ValueError(
            "Expected `root` or `allow_outside=True`, not both: `root` bounds the paths, "
            f"`allow_outside` lifts the bound. Received: root={root!r}, allow_outside=True"
        )
    if allow_outside:
        return None
    if root is None:
        return os.path.abspath(folder)
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise ValueError(f"Expected `root` to be a folder. Received: root={root!r}, not a folder")
    return root


def resolve_file(value, folder, bound):
    """The file a path cell names, refused if it lies outside `bound`.

    Args:
        value: str. The cell: a path relative to the manifest's folder, or absolute.
        folder: str. The manifest's folder (absolute).
        bound: str or `None`. The folder (absolute, normalised) the file must lie in,
            both as written (`..` normalised away) and after `os.path.realpath`
            follows symbolic links; `None` allows any path.

    Returns:
        The normalised absolute path.

    Raises:
        ManifestError: the path leaves `bound`.
    """
    file = os.path.normpath(os.path.join(folder, value))
    if bound is None:
        return file
    hint = "pass `root=` a folder that holds it, or `allow_outside=True`"
    if not _under(file, bound):
        raise ManifestError(
            f"the path {file!r} is outside {bound!r}, the folder that the manifest's paths "
            f"must lie in; {hint}"
        )
    real = os.path.realpath(file)
    if not _under(real, os.path.realpath(bound)):
        raise ManifestError(
            f"the path resolves through a symbolic link to {real!r}, outside {bound!r}, the "
            f"folder that the manifest's paths must lie in; {hint}"
        )
    return file


def _under(path, folder):
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives, or a relative path
        return False
