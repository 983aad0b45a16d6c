"""Manifest parsing that cannot misread: headers, cell counts, value types, labels,
encodings and file paths (issue 23). Every error names the manifest, the row and the
column, and never quotes the content of a file the manifest points at."""

import json
import os

import pytest

from mmrep.data.manifest import ManifestError, from_manifest, read_rows
from tests.data.test_manifest import write_png

SECRET = b"root:x:0:0:TOP-SECRET-CONTENT:/root:/bin/bash\n"


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return str(path)


# --- CSV header and cell counts ----------------------------------------------------------


def test_a_duplicated_header_is_an_error_naming_the_manifest_and_the_column(tmp_path):
    # csv.DictReader kept only the last "text" column: the caption was dropped silently.
    path = tmp_path / "m.csv"
    path.write_text("image,text,text\n,a caption,\n")
    with pytest.raises(ManifestError, match=r"m\.csv.*header.*'text'.*more than once") as info:
        from_manifest(path)
    assert "columns 2 and 3" in str(info.value)
    with pytest.raises(ManifestError, match="more than once"):
        read_rows(path)


@pytest.mark.parametrize("header", ["image,,text", "image, ,text", "image,text,"])
def test_an_empty_header_name_is_an_error_naming_the_column(tmp_path, header):
    path = tmp_path / "m.csv"
    path.write_text(f"{header}\n,hello,\n")
    with pytest.raises(ManifestError, match=r"m\.csv.*header.*column [23] has no name"):
        from_manifest(path)


def test_a_short_row_is_an_error_naming_row_line_and_cell_counts(tmp_path):
    # DictReader filled the missing cells with None: read as absent modalities.
    path = tmp_path / "m.csv"
    path.write_text("text,label,source\nhello,1,x\n\nshort,2\n")
    with pytest.raises(
        ManifestError, match=r"m\.csv: row 2 \(line 4\).*expected 3 cells.*Received: 2"
    ):
        from_manifest(path, ignore=["source"])


def test_a_long_row_is_still_refused_naming_row_line_and_cell_counts(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('text,label\n"two\nlines",1\nlong,2,extra\n')
    with pytest.raises(
        ManifestError, match=r"m\.csv: row 2 \(line 4\).*expected 2 cells.*Received: 3"
    ):
        from_manifest(path)


def test_a_cell_beyond_the_csv_field_limit_is_a_manifest_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("text,label\nok,1\n" + "x" * 200_000 + ",2\n")
    with pytest.raises(ManifestError, match=r"m\.csv: row 2 \(line 3\).*field limit"):
        from_manifest(path)


# --- JSON Lines values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "received"),
    [(1.7, "1.7"), (True, "bool"), (False, "bool"), ([1], "list"), ({"a": 1}, "dict")],
)
def test_a_json_label_that_is_neither_integer_nor_string_is_an_error(tmp_path, label, received):
    path = write_jsonl(
        tmp_path / "m.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": label}]
    )
    with pytest.raises(
        ManifestError, match=rf"m\.jsonl: row 2 \(line 2\), column 'label'.*{received}"
    ):
        from_manifest(path)


def test_integral_json_floats_and_digit_strings_are_integer_labels(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [{"text": "a", "label": 2.0}, {"text": "b", "label": "007"}, {"text": "c", "label": 3}],
    )
    # "007" is the integer 7: labels are int32 when every one is an integer (documented).
    assert [int(e["label"]) for e in from_manifest(path)] == [2, 7, 3]


def test_mixed_integer_and_string_labels_are_strings(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl", [{"text": "a", "label": 2.0}, {"text": "b", "label": "cat"}]
    )
    assert [e["label"].numpy() for e in from_manifest(path)] == [b"2", b"cat"]


def test_an_integer_label_beyond_int32_is_an_error_naming_row_and_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("text,label\na,1\nb,99999999999\n")
    with pytest.raises(ManifestError, match=r"m\.csv: row 2 \(line 3\), column 'label'.*int32"):
        from_manifest(path)


@pytest.mark.parametrize(
    ("column", "value", "received"),
    [("image", 3, "int"), ("image", ["a.png"], "list"), ("text", 5, "int"), ("text", {}, "dict")],
)
def test_a_json_modality_value_must_be_a_string(tmp_path, column, value, received):
    path = write_jsonl(tmp_path / "m.jsonl", [{"text": "a"}, {"text": "b", column: value}])
    with pytest.raises(
        ManifestError,
        match=rf"m\.jsonl: row 2 \(line 2\), column '{column}'.*string.*Received: {received}",
    ):
        from_manifest(path)


def test_a_json_object_with_a_key_twice_is_an_error(tmp_path):
    # json.loads keeps the last value of a repeated key, as DictReader kept the last column.
    path = write_jsonl(tmp_path / "m.jsonl", ['{"text": "a"}', '{"text": "b", "text": "c"}'])
    with pytest.raises(ManifestError, match=r"m\.jsonl: row 2 \(line 2\).*'text' more than once"):
        from_manifest(path)


# --- Encodings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("m.csv", "text,label\nhello,1\ncaf\xe9,2\n"),
        ("m.jsonl", '{"text": "hello"}\n{"text": "caf\xe9"}\n'),
    ],
)
def test_a_manifest_that_is_not_utf8_names_the_file_line_and_byte(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    offset = content.encode("latin-1").index(b"\xe9")
    line = content[:offset].count("\n") + 1
    with pytest.raises(ManifestError) as info:
        from_manifest(path)
    message = str(info.value)
    assert name in message and f"line {line} " in message and f"byte {offset}" in message
    assert "UTF-8" in message and "\\xe9" not in message


@pytest.mark.parametrize(
    ("name", "content"),
    [("m.csv", "text,label\nhello,1\n"), ("m.jsonl", '{"text": "hello", "label": 1}\n')],
)
def test_a_manifest_with_a_byte_order_mark_reads(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + content.encode())
    (example,) = from_manifest(path)
    assert example["text"].numpy() == b"hello" and int(example["label"]) == 1


# --- Paths -------------------------------------------------------------------------------


@pytest.fixture
def nested(tmp_path):
    """`tmp_path/data/m.csv` next to `data/in.png`, with `outside.png` one folder up."""
    (tmp_path / "data").mkdir()
    write_png(tmp_path / "data" / "in.png", size=(4, 4))
    write_png(tmp_path / "outside.png", size=(4, 4))
    return tmp_path


def _one_image(folder, value, name="m.csv"):
    path = folder / "data" / name
    path.write_text(f"image\n{value}\n")
    return path


@pytest.mark.parametrize(
    "value",
    ["../outside.png", "sub/../../outside.png", "ABSOLUTE"],
)
def test_a_path_leaving_the_manifest_folder_is_refused(nested, value):
    value = str(nested / "outside.png") if value == "ABSOLUTE" else value
    path = _one_image(nested, value)
    with pytest.raises(Exception, match=r"m\.csv: row 1: image file .*outside\.png.* is outside '"):
        list(from_manifest(path, image_size=4))


def test_paths_inside_the_manifest_folder_read_relative_or_absolute(nested):
    (nested / "data" / "sub").mkdir()
    for value in ("in.png", "./sub/../in.png", str(nested / "data" / "in.png")):
        (example,) = from_manifest(_one_image(nested, value), image_size=4)
        assert example["image"].shape == (4, 4, 3)


@pytest.mark.parametrize("value", ["../outside.png", "ABSOLUTE"])
def test_root_and_allow_outside_let_paths_leave_the_manifest_folder(nested, value):
    value = str(nested / "outside.png") if value == "ABSOLUTE" else value
    path = _one_image(nested, value)
    (example,) = from_manifest(path, image_size=4, root=nested)
    assert example["image"].shape == (4, 4, 3)
    (example,) = from_manifest(path, image_size=4, allow_outside=True)
    assert example["image"].shape == (4, 4, 3)


def test_root_bounds_relative_paths_too(nested):
    # Relative paths resolve against the manifest's folder, and must still lie under root.
    (nested / "elsewhere").mkdir()
    path = _one_image(nested, "in.png")
    with pytest.raises(Exception, match=r"row 1: image file 'in\.png'.*outside.*elsewhere"):
        list(from_manifest(path, image_size=4, root=nested / "elsewhere"))


def test_a_symlink_leaving_the_manifest_folder_is_refused(nested):
    os.symlink(nested / "outside.png", nested / "data" / "link.png")
    path = _one_image(nested, "link.png")
    with pytest.raises(Exception, match=r"row 1: image file 'link\.png'.*symbolic link.*outside"):
        list(from_manifest(path, image_size=4))
    (example,) = from_manifest(path, image_size=4, root=nested)
    assert example["image"].shape == (4, 4, 3)


def test_root_and_allow_outside_are_checked(nested):
    path = _one_image(nested, "in.png")
    with pytest.raises(ValueError, match=r"root.*not a folder"):
        from_manifest(path, root=nested / "absent")
    with pytest.raises(ValueError, match=r"allow_outside"):
        from_manifest(path, allow_outside="yes")
    with pytest.raises(ValueError, match=r"root.*allow_outside"):
        from_manifest(path, root=nested, allow_outside=True)


@pytest.mark.parametrize("name", ["secret.png", "secret.txt"])
def test_errors_never_quote_a_file(tmp_path, name):
    # The campaign read `../../etc/passwd` and the image error quoted its first bytes.
    (tmp_path / name).write_bytes(SECRET * 3)
    (tmp_path / "m.csv").write_text(f"image,audio,video\n{name},,\n,{name},\n,,{name}\n")
    for row in (1, 2, 3):
        with pytest.raises(Exception, match=rf"row {row}") as info:
            list(from_manifest(tmp_path / "m.csv", image_size=4, rows=[row]))
        message = str(info.value)
        assert "TOP-SECRET" not in message and "root:x" not in message


def test_num_parallel_reads_is_checked_at_once(tmp_path):
    (tmp_path / "m.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match=r"num_parallel_reads"):
        from_manifest(tmp_path / "m.csv", num_parallel_reads=0)


def test_a_manifest_that_is_a_fifo_is_refused_before_opening(tmp_path):
    os.mkfifo(tmp_path / "m.csv")
    with pytest.raises(ManifestError, match=r"m\.csv' is a named pipe \(FIFO\), not a regular"):
        from_manifest(tmp_path / "m.csv")
