"""Version folders: numbering, refusal, overwrite, atomic writes, finding a SavedModel; and
export_saved_model's errors for bad arguments."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.export import (
    ModelNotFoundError,
    ServingError,
    VersionExistsError,
    export_saved_model,
    numeric_versions,
    resolve_saved_model,
)


def tiny_model(seed=0, name="x"):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,), name=name)
    return keras.Model(inputs, keras.layers.Dense(2, name="scores")(inputs), name="tiny")


def served_output(folder, value):
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    return serve(x=tf.constant(value))["output_0"].numpy()


X = np.array([[1.0, 2.0, 3.0]], "float32")


def test_versions_are_numbered_after_the_largest_numeric_folder(tmp_path, capsys):
    base = tmp_path / "base"
    model = tiny_model()
    first = export_saved_model(model, str(base))
    assert first == str(base / "1")
    assert f"Exported tiny to {first} (signatures: serving_default)" in capsys.readouterr().out
    (base / "7").mkdir()
    (base / "99-draft").mkdir()  # not numeric: ignored
    (base / "12").write_text("a file, not a version")
    (base / "notes").mkdir()
    second = export_saved_model(model, str(base), verbose=False)
    assert second == str(base / "8")
    assert export_saved_model(model, str(base), version=3, verbose=False) == str(base / "3")
    assert numeric_versions(str(base)) == [1, 3, 7, 8]
    assert sorted(os.listdir(base)) == ["1", "12", "3", "7", "8", "99-draft", "notes"]
    np.testing.assert_allclose(served_output(second, X), model(X).numpy(), atol=1e-6)


def test_an_existing_version_is_refused_unless_overwrite(tmp_path):
    base = str(tmp_path)
    old, new = tiny_model(seed=0), tiny_model(seed=1)
    folder = export_saved_model(old, base, version=2, verbose=False)
    with pytest.raises(VersionExistsError, match="overwrite=True") as error:
        export_saved_model(new, base, version=2, verbose=False)
    assert folder in str(error.value)
    assert isinstance(error.value, FileExistsError)
    np.testing.assert_allclose(served_output(folder, X), old(X).numpy(), atol=1e-6)

    assert export_saved_model(new, base, version=2, overwrite=True, verbose=False) == folder
    np.testing.assert_allclose(served_output(folder, X), new(X).numpy(), atol=1e-6)
    assert sorted(os.listdir(base)) == ["2"]  # nothing left aside


def test_overwrite_keeps_the_old_version_whole_while_writing(tmp_path, monkeypatch):
    base = str(tmp_path)
    old, new = tiny_model(seed=0), tiny_model(seed=1)
    folder = export_saved_model(old, base, version=1, verbose=False)
    save = tf.saved_model.save
    seen = []

    def checking_save(obj, export_dir, **kwargs):
        # While the new version is written, the served one is the complete old one.
        seen.append(served_output(folder, X))
        return save(obj, export_dir, **kwargs)

    monkeypatch.setattr(tf.saved_model, "save", checking_save)
    export_saved_model(new, base, version=1, overwrite=True, verbose=False)
    np.testing.assert_allclose(seen[0], old(X).numpy(), atol=1e-6)
    np.testing.assert_allclose(served_output(folder, X), new(X).numpy(), atol=1e-6)


@pytest.mark.parametrize("existing", [False, True])
def test_a_crash_while_writing_leaves_no_partial_version(tmp_path, monkeypatch, existing):
    base = str(tmp_path)
    old = tiny_model(seed=0)
    if existing:
        export_saved_model(old, base, version=1, verbose=False)
    save = tf.saved_model.save

    def crashing_save(obj, export_dir, **kwargs):
        save(obj, export_dir, **kwargs)  # a complete SavedModel in the temporary folder...
        with open(os.path.join(export_dir, "variables", "partial"), "w") as f:
            f.write("half")
        raise OSError("disk full")  # ...and then the write fails

    monkeypatch.setattr(tf.saved_model, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(tiny_model(seed=1), base, version=1, overwrite=True, verbose=False)
    assert os.listdir(base) == (["1"] if existing else [])  # no temporary folder either
    if existing:
        monkeypatch.undo()
        np.testing.assert_allclose(served_output(os.path.join(base, "1"), X), old(X), atol=1e-6)


def test_resolve_saved_model_takes_a_version_or_the_largest_of_a_base(tmp_path):
    base = tmp_path / "base"
    model = tiny_model()
    for version in (2, 10):
        export_saved_model(model, str(base), version=version, verbose=False)
    (base / "11").mkdir()  # numeric but empty: the largest version must hold a model
    folder, note = resolve_saved_model(str(base / "10"))
    assert folder == str(base / "10") and note == "the version folder given"
    with pytest.raises(ModelNotFoundError, match=r"11 has no saved_model\.pb"):
        resolve_saved_model(str(base))
    (base / "11").rmdir()
    folder, note = resolve_saved_model(str(base))
    assert folder == str(base / "10")  # numerically largest, not "2" as text sorts
    assert "version 10" in note
    with pytest.raises(FileNotFoundError, match="does not exist") as error:
        resolve_saved_model(str(tmp_path / "missing"))
    assert isinstance(error.value, ModelNotFoundError)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("")
    with pytest.raises(ModelNotFoundError, match=r"holds no SavedModel.*readme.txt"):
        resolve_saved_model(str(tmp_path / "empty"))


def pid_of(alive):
    """A process id: of a process that is running (killed at the end), or of one that ended."""
    import subprocess
    import sys

    code = "import time; time.sleep(60)" if alive else "pass"
    process = subprocess.Popen([sys.executable, "-c", code])
    if not alive:
        process.wait()
    return process


@pytest.mark.skipif(os.name != "posix", reason="the pid check is POSIX only")
def test_temporary_folders_of_killed_exports_are_removed_by_the_next_export(tmp_path):
    from mmrep.utils.atomic_write import writer_tag

    base = tmp_path / "base"
    base.mkdir()
    live = pid_of(alive=True)
    try:
        killed = base / f".mmrep-export-1-{writer_tag(pid_of(alive=False).pid)}"
        writing = base / f".mmrep-export-2-{writer_tag(live.pid)}"
        for temp in (killed, writing):
            (temp / "variables").mkdir(parents=True)
            (temp / "saved_model.pb").write_bytes(b"half")
        # Readers see no version in them, and refuse one named directly.
        assert numeric_versions(str(base)) == []
        with pytest.raises(ModelNotFoundError, match="holds no SavedModel"):
            resolve_saved_model(str(base))
        with pytest.raises(ModelNotFoundError, match="unfinished export"):
            resolve_saved_model(str(writing))
        folder = export_saved_model(tiny_model(), str(base), verbose=False)
        assert folder == str(base / "1")
        # The dead writer's folder is gone; the running writer's is kept.
        assert sorted(os.listdir(base)) == sorted(["1", writing.name])
    finally:
        live.kill()
        live.wait()


def test_an_export_folder_that_cannot_be_made_is_one_serving_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for path in (afile, afile / "sub" / "base"):
        with pytest.raises(ServingError, match=f"{afile}.*a file"):
            export_saved_model(tiny_model(), str(path), verbose=False)
    assert afile.read_text() == "x"


@pytest.mark.parametrize("version", [0, -1, True, "2", 1.0])
def test_version_must_be_a_positive_int(tmp_path, version):
    with pytest.raises(ServingError, match="Expected `version` to be a positive int"):
        export_saved_model(tiny_model(), str(tmp_path), version=version, verbose=False)
    assert os.listdir(tmp_path) == []


def test_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "model"
    path.write_text("")
    with pytest.raises(ServingError, match="is a file"):
        export_saved_model(tiny_model(), str(path), verbose=False)


def test_bad_models_get_clear_errors(tmp_path):
    base = str(tmp_path)
    with pytest.raises(TypeError, match=r"Expected `model` to be a keras\.Model"):
        export_saved_model(keras.layers.Dense(2), base)
    unnamed = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"unnamed input.*keras.Input\(\.\.\., name="):
        export_saved_model(unnamed, base)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="no symbolic inputs"):
        export_saved_model(Subclassed(), base)
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    two_inputs = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match=r"embeddings\['pair'\].*one modality input.*\['a', 'b'\]"):
        export_saved_model(tiny_model(), base, embeddings={"pair": two_inputs})
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        export_saved_model(tiny_model(), base, embeddings={"my image": tiny_model()})
    with pytest.raises(ValueError, match="would both give the signature 'embed_x_bytes'"):
        export_saved_model(
            tiny_model(), base, embeddings={"x": tiny_model(), "x_bytes": tiny_model()}
        )
    with pytest.raises(ValueError, match=r"`modalities`.*\['y'\]"):
        export_saved_model(tiny_model(), base, modalities=["y"])
    assert os.listdir(base) == []


def test_no_bytes_signature_for_images_of_open_size(tmp_path):
    images = keras.Input((None, None, 3), dtype="uint8", name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(images))
    encoder = keras.Model(images, pooled)
    with pytest.warns(UserWarning, match="no embed_image_bytes signature: its input size"):
        folder = export_saved_model(
            encoder, str(tmp_path), embeddings={"image": encoder}, verbose=False
        )
    assert set(tf.saved_model.load(folder).signatures) == {"serving_default", "embed_image"}
