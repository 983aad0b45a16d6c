"""Handles: TF Hub / Kaggle URLs from a local cache without network, and unusable folders.

The cache layout is checked against `tensorflow_hub.resolve` itself; outputs against the
Keras model the SavedModel was exported from.
"""

import hashlib
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from mmrep.encoders.audio.vggish_weights import _import_tensorflow_hub
from mmrep.encoders.saved_model import SavedModelEncoder
from mmrep.encoders.saved_model_handles import SavedModelError
from tests.encoders import saved_model_files as files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = files.image_model(seed=1)
    export = files.export_keras(model, tmp_path_factory.mktemp("handles") / "export")
    return {"model": model, "export": export}


@pytest.fixture
def no_network(monkeypatch):
    """Makes every socket connection or name lookup raise; fails the test if one was tried."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert not attempts, f"network access was attempted: {attempts}"


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, "float64"), expected, rtol=0, atol=1e-6)


# === TF Hub handles, offline ===


def _populate(cache, handle, source):
    folder = Path(cache) / hashlib.sha1(handle.encode("utf8")).hexdigest()
    shutil.copytree(source, folder)
    return folder


def test_hub_handles_resolve_from_a_populated_cache(saved, tmp_path, monkeypatch, no_network):
    x = files.images()
    expected = saved["model"](x, training=False).numpy()
    cache = tmp_path / "tfhub_cache"
    handles = (
        "https://tfhub.dev/mmrep-tests/image-model/1",
        "https://www.kaggle.com/models/mmrep-tests/image-model/TensorFlow2/default/1",
    )
    folders = [_populate(cache, handle, saved["export"]) for handle in handles]
    for handle in handles:
        encoder = SavedModelEncoder(handle, signature="serve", cache_dir=cache)
        _close(encoder(x), expected)
        assert encoder.get_config()["handle"] == handle
        assert encoder.get_config()["cache_dir"] == str(cache)

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    _close(SavedModelEncoder(handles[0], signature="serve")(x), expected)
    # tensorflow_hub itself resolves the handles to the same folders (from its cache).
    hub = _import_tensorflow_hub()
    for handle, folder in zip(handles, folders, strict=True):
        assert Path(hub.resolve(handle)) == folder


def test_uncached_handle_raises_without_touching_the_network(tmp_path, monkeypatch, no_network):
    handle = "https://tfhub.dev/mmrep-tests/not-downloaded/1"
    cache = tmp_path / "tfhub_cache"
    folder = cache / hashlib.sha1(handle.encode("utf8")).hexdigest()
    with pytest.raises(FileNotFoundError, match="not in the TF Hub cache") as error:
        SavedModelEncoder(handle, cache_dir=cache)
    assert str(folder) in str(error.value) and "never downloads" in str(error.value)
    assert "cache_dir argument" in str(error.value)
    folder.mkdir(parents=True)  # an empty folder is an unfinished download
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    with pytest.raises(FileNotFoundError, match="TFHUB_CACHE_DIR environment variable"):
        SavedModelEncoder(handle)


def test_bad_handles_and_folders(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="SavedModel folder not found"):
        SavedModelEncoder(tmp_path / "missing")
    (tmp_path / "file.pb").write_bytes(b"x")
    with pytest.raises(SavedModelError, match="Received a file"):
        SavedModelEncoder(tmp_path / "file.pb")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "weights.h5").write_bytes(b"x")
    with pytest.raises(SavedModelError, match=r"not a SavedModel.*\['weights.h5'\]"):
        SavedModelEncoder(tmp_path / "other")
    tf1 = shutil.copytree(saved["export"], tmp_path / "tf1_hub")
    (tf1 / "tfhub_module.pb").write_bytes(b"")
    with pytest.raises(SavedModelError, match="TF1 Hub module"):
        SavedModelEncoder(tf1)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"\xff not a protobuf \x00" * 8)
    with pytest.raises(SavedModelError, match=r"'.*corrupt': cannot load the SavedModel"):
        SavedModelEncoder(corrupt)
    with pytest.raises(SavedModelError, match="remote storage would need the network"):
        SavedModelEncoder("gs://bucket/model")
    with pytest.raises(TypeError, match="Expected `handle` to be a path"):
        SavedModelEncoder(123)
    with pytest.raises(TypeError, match="Expected `signature` to be a str or None"):
        SavedModelEncoder(saved["export"], signature=0)
