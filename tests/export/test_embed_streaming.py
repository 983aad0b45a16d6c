"""embed_manifest streams: chunks kept across kills and failures, `resume`, `on_error`.

References: the Keras image model on the PNG files' own pixels (written here with zlib, so
no decoder is trusted), and an uninterrupted run of the same options, bit for bit.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.cli import main
from mmrep.export import (
    MissingDependencyError,
    ServingError,
    embed_manifest,
    embed_partial,
    runtime_needs,
)
from mmrep.export.embed import report_path
from mmrep.utils.atomic_write import writer_tag
from tests.export import embed_data

ROWS = 40


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return embed_data.export_image_model(str(tmp_path_factory.mktemp("models") / "image"))


@pytest.fixture
def data(tmp_path):
    manifest, pixels = embed_data.write_images(str(tmp_path / "data"), ROWS)
    return manifest, pixels


def reference(keras_model, pixels):
    return keras_model(tf.constant(pixels), training=False)["embedding"].numpy()


def embed(folder, manifest, output, **options):
    options.setdefault("signature", "embed_image")
    options.setdefault("verbose", False)
    options.setdefault("ignore", ("text",))
    return embed_manifest(folder, manifest, str(output), **options)


def test_chunks_give_the_same_output_as_one_pass(model, data, tmp_path):
    keras_model, folder = model
    manifest, pixels = data
    embed(folder, manifest, tmp_path / "one.npz", batch_size=8, chunk_rows=ROWS)
    embed(folder, manifest, tmp_path / "chunked.npz", batch_size=8, chunk_rows=16)
    with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "chunked.npz") as chunked:
        np.testing.assert_allclose(one["embedding"], reference(keras_model, pixels), atol=1e-5)
        np.testing.assert_allclose(chunked["embedding"], one["embedding"], atol=1e-6)
        np.testing.assert_array_equal(chunked["row"], np.arange(1, ROWS + 1))
        assert chunked["image_path"][5] == "img/5.png"
        np.testing.assert_array_equal(chunked["label"], np.arange(ROWS) % 3)
    assert sorted(os.listdir(tmp_path)) == ["chunked.npz", "data", "one.npz"]  # no work left


class Killed(BaseException):
    """Stands for a kill: raised from inside the run, it is no `Exception`."""


def test_killed_run_resumes_bit_for_bit(model, data, tmp_path, monkeypatch):
    _, folder = model
    manifest, _ = data
    options = {"batch_size": 4, "chunk_rows": 12}
    embed(folder, manifest, tmp_path / "whole.parquet", **options)
    output = tmp_path / "resumed.parquet"
    write_chunk = embed_partial.PartialRun.write_chunk
    for kill_after in (1, 2):  # killed after one chunk, then after two more
        saved = []

        def killing(self, index, arrays, skipped, saved=saved, kill_after=kill_after):
            write_chunk(self, index, arrays, skipped)
            saved.append(index)
            if len(saved) == kill_after:
                raise Killed

        monkeypatch.setattr(embed_partial.PartialRun, "write_chunk", killing)
        with pytest.raises(Killed):
            embed(folder, manifest, output, resume=kill_after > 1, **options)
        assert not output.exists()
    assert _finished(output) == 3
    with pytest.raises(ServingError, match=r"an unfinished run left .*\.resumed\.parquet\.partial"):
        embed(folder, manifest, output, **options)
    with pytest.raises(ServingError, match=r"different \['batch_size'\].*was 4, now 8"):
        embed(folder, manifest, output, resume=True, batch_size=8, chunk_rows=12)
    monkeypatch.setattr(embed_partial.PartialRun, "write_chunk", write_chunk)
    summary = embed(folder, manifest, output, resume=True, **options)
    assert summary["rows"] == ROWS
    assert not os.path.exists(embed_partial.partial_folder(output))
    import pyarrow.parquet as pq

    whole, resumed = pq.read_table(tmp_path / "whole.parquet"), pq.read_table(output)
    assert resumed.equals(whole)  # bit for bit, metadata included


def _finished(output):
    folder = embed_partial.partial_folder(output)
    if not os.path.isdir(folder):
        return 0
    return sum(name.startswith("chunk-") for name in os.listdir(folder))


def corrupt(manifest, row):
    """Replaces the image of 1-based `row` with a PNG corrupt inside; returns its path."""
    path = os.path.join(os.path.dirname(manifest), "img", f"{row - 1}.png")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(embed_data.corrupt_inside(data))
    return f"img/{row - 1}.png"


def test_image_corrupt_inside_fails_naming_row_then_skip_resumes(model, data, tmp_path):
    keras_model, folder = model
    manifest, pixels = data
    bad = 30
    file = corrupt(manifest, bad)
    output = tmp_path / "e.npz"
    with pytest.raises(ServingError, match=rf"row {bad}: image file '{file}': .*PNG") as error:
        embed(folder, manifest, output, batch_size=4, chunk_rows=8)
    assert "--resume" in str(error.value)
    assert _finished(output) == 3  # rows 1..24 kept
    summary = embed(
        folder, manifest, output, batch_size=4, chunk_rows=8, on_error="skip", resume=True
    )
    assert summary["rows"] == ROWS - 1 and summary["skipped"] == 1
    with open(report_path(output)) as f:
        (entry,) = [json.loads(line) for line in f]
    assert entry["row"] == bad and file in entry["reason"]
    kept = [i for i in range(ROWS) if i != bad - 1]
    with np.load(output) as saved:
        np.testing.assert_array_equal(saved["row"], np.array(kept) + 1)
        np.testing.assert_allclose(
            saved["embedding"], reference(keras_model, pixels[kept]), atol=1e-5
        )


def test_unreadable_files_are_skipped_with_reasons(model, data, tmp_path):
    _, folder = model
    manifest, _ = data
    root = os.path.dirname(manifest)
    with open(os.path.join(root, "img", "3.png"), "r+b") as f:
        f.truncate(20)  # cut short: the reader refuses it before the graph
    os.remove(os.path.join(root, "img", "9.png"))
    corrupt(manifest, 17)
    summary = embed(folder, manifest, tmp_path / "e.npz", batch_size=4, on_error="skip")
    assert summary["rows"] == ROWS - 3
    with open(summary["report"]) as f:
        entries = [json.loads(line) for line in f]
    assert [e["row"] for e in entries] == [4, 10, 17]
    assert "img/3.png" in entries[0]["reason"] and "img/9.png" in entries[1]["reason"]


def test_image_bytes_are_read_from_the_image_column(model, data, tmp_path):
    keras_model, folder = model
    manifest, pixels = data
    embed(folder, manifest, tmp_path / "b.npz", signature="embed_image_bytes")
    with np.load(tmp_path / "b.npz") as saved:
        assert "image_path" in saved.files
        np.testing.assert_allclose(saved["embedding"], reference(keras_model, pixels), atol=1e-5)


def test_rows_the_model_refuses_are_found_one_by_one(tmp_path):
    """A SavedModel whose graph refuses long texts: the refused row is named or skipped."""

    class Lengths(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="text")])
        def __call__(self, text):
            lengths = tf.strings.length(text)
            check = tf.debugging.assert_less(lengths, 12, message="text too long")
            with tf.control_dependencies([check]):
                return {"embedding": tf.cast(lengths, tf.float32)[:, None]}

    module = Lengths()
    folder = str(tmp_path / "m" / "1")
    tf.saved_model.save(module, folder, signatures={"serving_default": module.__call__})
    manifest = tmp_path / "m.jsonl"
    texts = ["short", "tiny", "a rather long caption", "ok"]
    manifest.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    with pytest.raises(ServingError, match=r"row 3: the model refused the row: .*text too long"):
        embed_manifest(folder, str(manifest), str(tmp_path / "e.npy"), verbose=False)
    summary = embed_manifest(
        folder, str(manifest), str(tmp_path / "e.npy"), on_error="skip", verbose=False
    )
    assert summary["skipped"] == 1
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy")[:, 0], [5, 4, 2])


def test_stale_temporary_files_are_removed(model, data, tmp_path):
    _, folder = model
    manifest, _ = data
    output = tmp_path / "e.npz"
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid names a writer that is gone
    stale = tmp_path / f".e.npz.{writer_tag(finished.pid)}.tmp.npz"
    stale.write_bytes(b"left by a killed write")
    embed(folder, manifest, output)
    assert sorted(os.listdir(tmp_path)) == ["data", "e.npz"]


def test_output_folder_is_checked_before_any_work(model, data, tmp_path):
    _, folder = model
    manifest, _ = data
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ServingError, match=r"cannot create its folder .*file"):
        embed(folder, manifest, tmp_path / "file" / "e.npz")


def test_exports_record_their_runtime_needs(tmp_path):
    from mmrep.encoders.text.wordpiece_tokenizer import WordPieceTokenizer
    from mmrep.export import export_saved_model, read_description

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "digit", "three"]
    text = keras.Input((), dtype="string", name="text")
    ids = WordPieceTokenizer(vocabulary, sequence_length=6)(text)
    model = keras.Model(text, {"embedding": keras.ops.cast(ids["token_ids"], "float32")})
    folder = export_saved_model(model, str(tmp_path / "tok"), verbose=False)
    description = read_description(folder)
    assert description["requires"] == ["tensorflow_text"]
    assert "RegexSplitWithOffsets" in description["custom_ops"]
    numeric = keras.Input((3,), name="x")
    plain = keras.Model(numeric, {"y": keras.layers.Dense(1)(numeric)})
    assert (
        read_description(export_saved_model(plain, str(tmp_path / "p"), verbose=False))["requires"]
        == []
    )
    with pytest.raises(MissingDependencyError, match=r"needs the package 'no_such_package_x'"):
        runtime_needs.import_requirements({"requires": ["no_such_package_x"]}, folder)


@pytest.mark.slow
def test_tokenizer_export_embeds_in_a_fresh_process(tmp_path):
    """`mmrep embed` in a new process on an export holding WordPiece ops."""
    from mmrep.encoders.text.wordpiece_tokenizer import WordPieceTokenizer
    from mmrep.export import export_saved_model

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "digit", "three"]
    text = keras.Input((), dtype="string", name="text")
    tokens = WordPieceTokenizer(vocabulary, sequence_length=6)(text)
    model = keras.Model(text, {"embedding": keras.ops.cast(tokens["token_ids"], "float32")})
    folder = export_saved_model(model, str(tmp_path / "tok"), verbose=False)
    manifest = tmp_path / "m.csv"
    manifest.write_text("text\na digit three\nthree\n")
    output = tmp_path / "e.npy"
    result = subprocess.run(
        [sys.executable, "-m", "mmrep", "embed", "--model", folder, "--manifest",
         str(manifest), "--output", str(output)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = model(tf.constant(["a digit three", "three"]))["embedding"].numpy()
    np.testing.assert_array_equal(np.load(output), expected)


def test_cli_reports_bad_rows_in_one_line(model, data, tmp_path, capsys):
    _, folder = model
    manifest, _ = data
    corrupt(manifest, 7)
    arguments = ["embed", "--model", folder, "--manifest", manifest, "--signature",
                 "embed_image", "--ignore", "text", "--output", str(tmp_path / "e.npz")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(arguments)
    assert exit_.value.code == 2
    message = capsys.readouterr().err
    assert "row 7: image file 'img/6.png'" in message and "Traceback" not in message
    assert main([*arguments, "--on-error", "skip", "--resume"]) == 0
    with open(str(tmp_path / "e.npz") + ".skipped.jsonl") as f:
        assert [json.loads(line)["row"] for line in f] == [7]


# The done-when of issue 23: 2,000 rows, kills at random points, and a corrupt row 801.
BIG = 2000


@pytest.fixture(scope="module")
def big(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("big")
    manifest, pixels = embed_data.write_images(str(folder), BIG, seed=7)
    return manifest, pixels


def _command(folder, manifest, output, *extra):
    return [sys.executable, "-m", "mmrep", "embed", "--model", folder, "--manifest", manifest,
            "--signature", "embed_image", "--ignore", "text", "--batch-size", "32",
            "--chunk-rows", "128", "--output", str(output), *extra]  # fmt: skip


@pytest.mark.slow
def test_kills_at_random_points_then_resume_equal_an_uninterrupted_run(model, big, tmp_path):
    _, folder = model
    manifest, _ = big
    whole = tmp_path / "whole.npz"
    subprocess.run(_command(folder, manifest, whole), check=True, capture_output=True)
    output = tmp_path / "resumed.npz"
    rng = np.random.default_rng(23)
    chunks = -(-BIG // 128)
    targets = sorted(rng.choice(np.arange(1, chunks), size=3, replace=False))
    kills = []
    for target in targets:  # kill once at least `target` chunks are saved, at a random moment
        process = subprocess.Popen(
            _command(folder, manifest, output, "--resume"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 300
        while _finished(output) < target and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills.append(_finished(output))
    assert not output.exists() and kills[-1] < chunks, kills
    result = subprocess.run(
        _command(folder, manifest, output, "--resume"), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Resuming" in result.stdout
    with np.load(whole) as a, np.load(output) as b:
        assert a.files == b.files
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    assert sorted(os.listdir(tmp_path)) == ["resumed.npz", "whole.npz"]


@pytest.mark.slow
def test_corrupt_row_801_of_2000_is_skipped_and_reported(model, big, tmp_path):
    keras_model, folder = model
    manifest, pixels = big
    copy = tmp_path / "data"
    shutil.copytree(os.path.dirname(manifest), copy)
    file = corrupt(str(copy / "manifest.csv"), 801)
    output = tmp_path / "e.parquet"
    summary = embed(folder, str(copy / "manifest.csv"), output, batch_size=32, on_error="skip")
    assert summary["rows"] == BIG - 1
    with open(report_path(output)) as f:
        (entry,) = [json.loads(line) for line in f]
    assert entry["row"] == 801 and file in entry["reason"]
    import pyarrow.parquet as pq

    table = pq.read_table(output)
    assert table.num_rows == BIG - 1 and 801 not in table["row"].to_pylist()
    kept = np.array([i for i in range(BIG) if i != 800])
    np.testing.assert_allclose(
        np.array(table["embedding"].to_pylist()), reference(keras_model, pixels[kept]), atol=1e-5
    )
