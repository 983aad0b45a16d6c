"""embed_manifest: an exported model over an mmdigits manifest of real PNG/FLAC/MP4 files.

References: the Keras model (before export) on the same rows decoded by
`mmrep.data.from_manifest` at the model's sizes, with presence 0 where a cell is empty;
for images alone, the Keras image model on `load_mmdigits`'s own arrays (PNG is
lossless, so no decoder is trusted there).
"""

import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.data import export_mmdigits, from_manifest, load_mmdigits
from mmrep.export import (
    ModelNotFoundError,
    OutputExistsError,
    ServingError,
    embed_manifest,
    export_saved_model,
)
from tests.export import multimodal_model as mm

ROWS = 6
MODALITIES = ["image", "text", "audio", "video"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, embeddings = mm.build()
    base = tmp_path_factory.mktemp("saved_models") / "model"
    folder = export_saved_model(model, str(base), embeddings=embeddings, verbose=False)
    data = tmp_path_factory.mktemp("mmdigits")
    manifest = export_mmdigits(str(data), limit=ROWS, progress=False)
    decoded = from_manifest(
        manifest, image_size=32, audio_seconds=1.0, video_size=32, video_frames=16
    )
    decoded = next(iter(decoded.batch(ROWS)))
    return model, embeddings, folder, manifest, {k: v.numpy() for k, v in decoded.items()}


def reference(model, decoded, presence=None):
    feed = {m: tf.constant(decoded[m]) for m in MODALITIES}
    feed["presence"] = tf.constant(decoded["presence"] if presence is None else presence)
    return {k: v.numpy() for k, v in model(feed, training=False).items()}


def rewrite(manifest, path, columns, blank=()):
    """A copy of `manifest` beside it with `columns` in that order and `(row, column)` blank."""
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    for row_index, column in blank:
        rows[row_index][column] = ""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def test_npz_matches_the_keras_model(setup, tmp_path, capsys):
    model, _, folder, manifest, decoded = setup
    output = str(tmp_path / "out" / "embeddings.npz")
    summary = embed_manifest(folder, manifest, output, batch_size=4)
    printed = capsys.readouterr().out
    assert f"with {folder} (the version folder given)" in printed
    assert "rows/s" in printed
    expected = reference(model, decoded)
    with np.load(output) as saved:
        paths = {"image_path", "audio_path", "video_path"}
        assert set(saved.files) == {"embedding", "probabilities", "label", "row", *paths}
        np.testing.assert_array_equal(saved["row"], np.arange(1, ROWS + 1))
        with open(manifest, newline="") as f:
            cells = [row["image"] for row in csv.DictReader(f)]
        assert saved["image_path"].tolist() == cells
        for name, value in expected.items():
            np.testing.assert_allclose(saved[name], value, atol=1e-5, rtol=0)
        labels = load_mmdigits("test", modalities=("image",), as_numpy=True)["label"][:ROWS]
        np.testing.assert_array_equal(saved["label"], labels)
    assert summary["rows"] == ROWS and summary["model"] == folder
    assert summary["outputs"] == {"embedding": [ROWS, 36], "probabilities": [ROWS, 10]}
    assert summary["seconds"] > 0 and summary["rows_per_second"] > 0
    assert os.listdir(tmp_path / "out") == ["embeddings.npz"]  # no temporary file left


def test_npy_and_parquet_hold_the_same_values(setup, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    model, _, folder, manifest, decoded = setup
    expected = reference(model, decoded)
    embed_manifest(folder, manifest, str(tmp_path / "e.npy"), verbose=False)
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected["embedding"], atol=1e-5)
    embed_manifest(folder, manifest, str(tmp_path / "e.parquet"), batch_size=5, verbose=False)
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == ROWS
    field = table.schema.field("embedding").type
    assert isinstance(field, pa.ListType) and field.value_type == pa.float32()
    for name, value in expected.items():
        np.testing.assert_allclose(np.array(table[name].to_pylist()), value, atol=1e-5)
    assert table["label"].to_pylist() == list(decoded["label"])


def test_columns_map_by_name_and_empty_cells_are_missing_modalities(setup, tmp_path):
    model, _, folder, manifest, decoded = setup
    blank = [(0, "audio"), (1, "image"), (1, "video"), (3, "text")]
    # Beside the original: its file paths are relative to the manifest's folder.
    shuffled = os.path.join(os.path.dirname(manifest), f"{tmp_path.name}.csv")
    rewrite(manifest, shuffled, ["video", "label", "text", "audio", "image"], blank)
    presence = np.ones((ROWS, 4), "float32")
    for row, column in blank:
        presence[row, MODALITIES.index(column)] = 0.0
    try:
        embed_manifest(folder, shuffled, str(tmp_path / "e.npz"), verbose=False)
    finally:
        os.remove(shuffled)
    expected = reference(model, decoded, presence)
    with np.load(tmp_path / "e.npz") as saved:
        for name, value in expected.items():
            np.testing.assert_allclose(saved[name], value, atol=1e-5, rtol=0)
    # The missing cells matter: with every modality present the outputs differ.
    assert np.abs(reference(model, decoded)["embedding"] - expected["embedding"]).max() > 1e-3


def test_image_signature_matches_load_mmdigits_pixels(setup, tmp_path):
    _, embeddings, folder, _, _ = setup
    manifest = export_mmdigits(str(tmp_path), limit=ROWS, progress=False, modalities=("image",))
    embed_manifest(
        folder, manifest, str(tmp_path / "e.npy"), signature="embed_image", verbose=False
    )
    pixels = load_mmdigits("test", modalities=("image",), as_numpy=True)["image"][:ROWS]
    expected = embeddings["image"](tf.constant(pixels), training=False).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, atol=1e-5, rtol=0)


def test_base_folder_takes_the_largest_version_and_works_without_description(
    setup, tmp_path, capsys
):
    model, _, folder, manifest, decoded = setup
    base = tmp_path / "base"
    for version in (2, 10):
        shutil.copytree(folder, base / str(version))
    shutil.rmtree(base / "10" / "assets.extra")  # signatures alone must do
    summary = embed_manifest(str(base), manifest, str(tmp_path / "e.npy"))
    assert summary["model"] == str(base / "10")
    assert "version 10, the largest of [2, 10]" in capsys.readouterr().out
    expected = reference(model, decoded)["embedding"]
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, atol=1e-5)


def test_missing_model_and_existing_output_are_refused(setup, tmp_path):
    _, _, folder, manifest, _ = setup
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"model not found: {missing}") as error:
        embed_manifest(missing, manifest, str(tmp_path / "e.npy"))
    assert isinstance(error.value, ModelNotFoundError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="holds no SavedModel"):
        embed_manifest(str(tmp_path / "empty"), manifest, str(tmp_path / "e.npy"))
    existing = tmp_path / "e.npz"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match=f"output {existing} already exists"):
        embed_manifest(folder, manifest, str(existing), verbose=False)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(ServingError, match=r"one of \('.npy', '.npz', '.parquet'\)"):
        embed_manifest(folder, manifest, str(tmp_path / "e.csv"), verbose=False)
    with pytest.raises(ServingError, match=r"no signature 'embed_sound'.*embed_audio"):
        embed_manifest(folder, manifest, str(tmp_path / "e.npy"), signature="embed_sound")
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        embed_manifest(folder, str(tmp_path / "none.csv"), str(tmp_path / "e.npy"))


def test_manifest_that_does_not_match_the_model(setup, tmp_path):
    _, _, folder, manifest, _ = setup
    # Beside the original: its file paths are relative to the manifest's folder.
    beside = os.path.join(os.path.dirname(manifest), tmp_path.name)
    partial = rewrite(manifest, f"{beside}-partial.csv", ["image", "text", "label"])
    with pytest.raises(
        ServingError,
        match=r"columns are \['image', 'text'\], the model's modality inputs are "
        r"\['image', 'text', 'audio', 'video'\]; missing from the manifest: \['audio', 'video'\]",
    ):
        embed_manifest(folder, partial, str(tmp_path / "e.npy"), verbose=False)
    assert not os.path.exists(tmp_path / "e.npy")
    # A signature taking one of the export's modalities leaves the others' columns unread...
    summary = embed_manifest(
        folder, partial, str(tmp_path / "i.npz"), signature="embed_image", verbose=False
    )
    assert summary["rows"] == ROWS and summary["skipped"] == 0
    # ...but a column the export does not know is still refused, unless ignored.
    extra = rewrite(manifest, f"{beside}-extra.csv", ["image", "caption", "label"])
    with pytest.raises(ServingError, match=r"not inputs of the model: \['caption'\]"):
        embed_manifest(folder, extra, str(tmp_path / "e.npy"), signature="embed_image")


def test_unreadable_row_is_named(setup, tmp_path):
    _, _, folder, manifest, _ = setup
    copy = tmp_path / "copy"
    shutil.copytree(os.path.dirname(manifest), copy)
    (copy / "image" / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ServingError, match=r"row 3: image file 'image/00002.png'"):
        embed_manifest(folder, str(copy / "manifest.csv"), str(tmp_path / "e.npy"), verbose=False)
    assert not os.path.exists(tmp_path / "e.npy")


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A text-only model without a presence input and with two outputs, neither 'embedding'."""
    text = keras.Input((), dtype="string", name="text")
    vectorize = keras.layers.TextVectorization(max_tokens=32, output_sequence_length=4)
    vectorize.adapt(mm.CAPTIONS)
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(32, 4)(vectorize(text)))
    model = keras.Model(text, {"a": pooled, "b": keras.layers.Dense(2)(pooled)})
    folder = export_saved_model(model, str(tmp_path_factory.mktemp("text") / "m"), verbose=False)
    return model, folder


def test_npy_needs_an_embedding_output_and_rows_need_their_modality(text_model, tmp_path):
    model, folder = text_model
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"text": "a scrawled three"}\n{"text": "the numeral 5"}\n')
    with pytest.raises(ServingError, match=r"several outputs \['a', 'b'\], none named 'embedding'"):
        embed_manifest(folder, str(manifest), str(tmp_path / "e.npy"), verbose=False)
    embed_manifest(folder, str(manifest), str(tmp_path / "e.npz"), verbose=False)
    expected = model(tf.constant(["a scrawled three", "the numeral 5"]))
    with np.load(tmp_path / "e.npz") as saved:
        assert set(saved.files) == {"a", "b", "row"}  # no labels, no file columns
        np.testing.assert_allclose(saved["b"], expected["b"].numpy(), atol=1e-5)
    manifest.write_text('{"id": 7, "text": "a scrawled three"}\n{"id": 8, "text": "x"}\n')
    with pytest.raises(ServingError, match=r"columns are \['id', 'text'\].*model: \['id'\]"):
        embed_manifest(folder, str(manifest), str(tmp_path / "f.npz"), verbose=False)
    embed_manifest(folder, str(manifest), str(tmp_path / "f.npz"), ignore=("id",), verbose=False)
    with np.load(tmp_path / "f.npz") as saved:
        np.testing.assert_allclose(saved["b"][0], expected["b"].numpy()[0], atol=1e-5)
    # Without a presence input, a row with an empty cell is left out and reported.
    manifest.write_text('{"text": "a scrawled three"}\n{"text": ""}\n')
    summary = embed_manifest(folder, str(manifest), str(tmp_path / "g.npz"), verbose=False)
    assert summary["rows"] == 1 and summary["skipped"] == 1
    with np.load(tmp_path / "g.npz") as saved:
        assert saved["row"].tolist() == [1]
    with open(summary["report"]) as f:
        (entry,) = [json.loads(line) for line in f]
    assert entry["row"] == 2 and "empty text cell" in entry["reason"]
    assert "no 'presence' input" in entry["reason"]


def test_parquet_without_pyarrow_says_what_to_install(text_model, tmp_path, monkeypatch):
    _, folder = text_model
    manifest = tmp_path / "m.csv"
    manifest.write_text("text\nthe numeral 5\n")
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r'pip install "mmrep\[parquet\]"') as error:
        embed_manifest(folder, str(manifest), str(tmp_path / "e.parquet"), verbose=False)
    assert isinstance(error.value, ServingError)  # the mmrep command reports it as an error
    assert not os.path.exists(tmp_path / "e.parquet")


def test_grey_image_models_receive_bt601_luma_of_colour_files(tmp_path):
    """A one-channel image input is fed the rounded BT.601 luma of the file's RGB pixels."""
    pixels = np.random.default_rng(5).integers(0, 256, (2, 32, 32, 3), dtype="uint8")
    rows = []
    for i, image in enumerate(pixels):
        tf.io.write_file(str(tmp_path / f"{i}.png"), tf.io.encode_png(image))
        rows.append(f"{i}.png")
    (tmp_path / "m.csv").write_text("image\n" + "\n".join(rows) + "\n")
    grey = keras.Input((32, 32, 1), dtype="uint8", name="image")
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1.0)(grey))
    folder = export_saved_model(
        keras.Model(grey, {"embedding": flat}), str(tmp_path / "grey"), verbose=False
    )
    embed_manifest(folder, str(tmp_path / "m.csv"), str(tmp_path / "e.npy"), verbose=False)
    luma = np.round(pixels.astype("float64") @ [0.299, 0.587, 0.114]).reshape(2, -1)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), luma)
