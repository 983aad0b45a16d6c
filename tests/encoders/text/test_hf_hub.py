"""Hugging Face ids for BERT checkpoints: resolved through the real Hugging Face cache.

The cache is written in its on-disk layout by `tests.hf_cache.write_hf_cache`, or filled
by `huggingface_hub.snapshot_download` itself from the loopback Hub of
`tests.hf_hub_server`; nothing reaches the network. The environment variables are set per
test and read by `resolve_checkpoint` at each call.
"""

import os
import pathlib
import re
import shutil

import numpy as np
import pytest
import torch

from mmrep.encoders import BertEncoder, TextTokenizer
from mmrep.encoders.text import CheckpointError
from mmrep.encoders.text.hf_hub import resolve_checkpoint
from tests.encoders.text.bert_checkpoints import make_bert, save
from tests.encoders.text.checkpoints import build_vocabulary, write_tokenizer
from tests.hf_cache import write_hf_cache
from tests.hf_hub_server import serve_hub_repo

REPO = "sentence-transformers/tiny-test"
LENGTH = 32  # the checkpoint's max_position_embeddings
TEXTS = ["The quick brown fox jumps.", "Café naïve", ""]
LOADED = {
    "config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A BERT checkpoint folder with its tokenizer, as on the Hub."""
    directory = tmp_path_factory.mktemp("tiny-test")
    write_tokenizer(directory, lowercase=True)
    save(bert(seed=11), directory)
    assert LOADED <= set(os.listdir(directory))
    return directory


@pytest.fixture(scope="module")
def hub_repo(checkpoint, tmp_path_factory):
    """The checkpoint with what a Hub repo also holds and the loaders must not fetch."""
    directory = tmp_path_factory.mktemp("hub-repo")
    shutil.copytree(checkpoint, directory, dirs_exist_ok=True)
    torch.save({"weight": torch.zeros(2)}, directory / "pytorch_model.bin")
    (directory / "onnx").mkdir()
    (directory / "onnx" / "model.onnx").write_bytes(b"\x08\x07onnx")
    (directory / "README.md").write_text("# tiny-test\n")
    return directory


@pytest.fixture
def hf_env(monkeypatch, tmp_path):
    """An empty cache in tmp_path, offline, with no other Hugging Face setting."""
    from huggingface_hub import constants

    for name in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Also what huggingface_hub read at import, so that no request can leave even unasked.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def online(monkeypatch, hf_env):
    """Downloads on; yields `start(folder)`, which serves `folder` as `REPO` on a loopback Hub
    and returns the `HubServer`."""

    def start(folder):
        from huggingface_hub import constants

        server = serve_hub_repo(REPO, folder)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        servers.append(server)
        return server

    servers = []
    yield start
    for server in servers:
        server.close()


def bert(seed):
    vocabulary_size = len(build_vocabulary(lowercase=True))
    return make_bert(seed=seed, vocab_size=vocabulary_size, max_position_embeddings=32)


def outputs(encoder, tokenizer):
    return np.asarray(encoder(tokenizer(TEXTS, sequence_length=LENGTH)))


def test_an_id_in_the_cache_loads_offline_like_its_folder(checkpoint, hf_env):
    snapshot = write_hf_cache(hf_env, REPO, checkpoint)
    assert os.path.islink(snapshot / "model.safetensors")

    tokenizer = TextTokenizer.from_pretrained(REPO, sequence_length=LENGTH)
    encoder = BertEncoder.from_pretrained(REPO, pooling="mean", normalize=True)
    assert tokenizer.directory == str(snapshot)

    plain_tokenizer = TextTokenizer.from_pretrained(checkpoint, sequence_length=LENGTH)
    plain_encoder = BertEncoder.from_pretrained(checkpoint, pooling="mean", normalize=True)
    inputs, plain_inputs = tokenizer(TEXTS), plain_tokenizer(TEXTS)
    for key in ("token_ids", "padding_mask", "segment_ids"):
        np.testing.assert_array_equal(inputs[key], plain_inputs[key])
    np.testing.assert_array_equal(
        outputs(encoder, tokenizer), outputs(plain_encoder, plain_tokenizer)
    )
    # A folder is returned as it was given.
    assert resolve_checkpoint(str(checkpoint)) == str(checkpoint)


def test_hf_home_gives_the_cache_when_hf_hub_cache_is_unset(checkpoint, hf_env, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(hf_env.parent / "hf-home"))
    snapshot = write_hf_cache(hf_env.parent / "hf-home" / "hub", REPO, checkpoint)
    assert resolve_checkpoint(REPO) == str(snapshot)


def test_a_revision_resolves_its_own_snapshot(checkpoint, hf_env, tmp_path):
    first = write_hf_cache(hf_env, REPO, checkpoint, revision_sha="a" * 40)
    changed = tmp_path / "changed"
    shutil.copytree(checkpoint, changed)
    save(bert(seed=12), changed)
    latest = write_hf_cache(hf_env, REPO, changed, revision_sha="b" * 40)

    assert resolve_checkpoint(REPO) == str(latest)
    assert resolve_checkpoint(f"{REPO}@main") == str(latest)
    assert resolve_checkpoint(f"{REPO}@{'a' * 40}") == str(first)
    assert resolve_checkpoint(REPO, revision="a" * 40) == str(first)
    tokenizer = TextTokenizer.from_pretrained(checkpoint, sequence_length=LENGTH)
    old = BertEncoder.from_pretrained(f"{REPO}@{'a' * 40}", pooling="mean")
    plain = BertEncoder.from_pretrained(checkpoint, pooling="mean")
    np.testing.assert_array_equal(outputs(old, tokenizer), outputs(plain, tokenizer))
    with pytest.raises(ValueError, match=r"asks for 'main' but revision='v1'"):
        resolve_checkpoint(f"{REPO}@main", revision="v1")
    with pytest.raises(ValueError, match=r"after '@'"):
        resolve_checkpoint(f"{REPO}@")


def test_a_missing_id_offline_names_the_id_the_cache_and_how_to_fill_it(hf_env):
    with pytest.raises(FileNotFoundError) as error:
        BertEncoder.from_pretrained("bert-base-uncased")
    message = str(error.value)
    assert "'bert-base-uncased'" in message
    assert f"'{hf_env / 'models--bert-base-uncased'}'" in message
    assert "HF_HUB_CACHE environment variable" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "`hf download bert-base-uncased`" in message
    assert "huggingface-cli download" in message

    with pytest.raises(FileNotFoundError) as error:
        TextTokenizer.from_pretrained(f"{REPO}@v2")
    assert f"{REPO}@v2" in str(error.value) and "revision 'v2'" in str(error.value)
    assert f"`hf download {REPO} --revision v2`" in str(error.value)


@pytest.mark.parametrize("name", ["./missing/dir", "a/b/c", "a--b", "/no/such/folder"])
def test_neither_a_folder_nor_an_id_says_the_folder_does_not_exist(hf_env, name):
    for load in (BertEncoder.from_pretrained, TextTokenizer.from_pretrained):
        with pytest.raises(FileNotFoundError, match=re.escape(f"No such path: '{name}'")):
            load(name)


def test_a_path_object_is_never_an_id(checkpoint, hf_env):
    write_hf_cache(hf_env, "tiny", checkpoint)
    with pytest.raises(FileNotFoundError, match="No such path: 'tiny'"):
        resolve_checkpoint(pathlib.Path("tiny"))
    with pytest.raises(TypeError, match="Received: 3"):
        resolve_checkpoint(3)


def test_an_id_downloads_the_loaded_files_only_then_reads_the_cache_offline(
    hub_repo, hf_env, online, monkeypatch
):
    server = online(hub_repo)
    encoder = BertEncoder.from_pretrained(REPO, pooling="mean")
    snapshot = hf_env / "models--sentence-transformers--tiny-test" / "snapshots" / server.commit
    assert sorted(os.listdir(snapshot)) == sorted(LOADED)
    assert server.downloaded() == sorted(LOADED)
    assert (snapshot.parent.parent / "refs" / "main").read_text() == server.commit
    for name in LOADED:
        link = snapshot / name
        assert os.path.islink(link) and not os.path.isabs(os.readlink(link))
        assert os.path.realpath(link).startswith(str(snapshot.parent.parent / "blobs"))
        assert link.read_bytes() == (hub_repo / name).read_bytes()

    # Offline, the cache answers without a request.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(server.requests)
    again = BertEncoder.from_pretrained(REPO, pooling="mean")
    tokenizer = TextTokenizer.from_pretrained(REPO, sequence_length=LENGTH)
    assert len(server.requests) == before
    np.testing.assert_array_equal(outputs(again, tokenizer), outputs(encoder, tokenizer))


def test_a_tokenizer_downloads_no_weights_and_a_pickle_needs_opt_in(
    hub_repo, hf_env, online, monkeypatch
):
    server = online(hub_repo)
    TextTokenizer.from_pretrained(REPO, sequence_length=LENGTH)
    assert "model.safetensors" not in server.downloaded()
    assert "config.json" in server.downloaded()
    # Offline, the encoder finds the weights missing from the snapshot, and says so.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises((FileNotFoundError, CheckpointError), match=r"model\.safetensors"):
        BertEncoder.from_pretrained(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    resolve_checkpoint(REPO, allow_pickle=True)
    assert "pytorch_model.bin" in server.downloaded()
    assert not any(name.startswith("onnx/") for name in server.downloaded())


def test_an_unreachable_hub_falls_back_to_the_cache(
    checkpoint, hub_repo, hf_env, online, monkeypatch
):
    server = online(hub_repo)
    server.close()  # a closed port on 127.0.0.1: connections are refused
    with pytest.raises(FileNotFoundError, match=r"could not be reached .*hf download"):
        resolve_checkpoint(REPO)
    snapshot = write_hf_cache(hf_env, REPO, checkpoint)
    assert resolve_checkpoint(REPO) == str(snapshot)


def test_hub_errors_become_clear_errors(hub_repo, hf_env, online):
    server = online(hub_repo)
    with pytest.raises(FileNotFoundError) as error:
        resolve_checkpoint("someone/unknown")
    assert "no model repository 'someone/unknown'" in str(error.value)
    assert str(hf_env / "models--someone--unknown") in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"no revision 'v9'"):
        resolve_checkpoint(REPO, revision="v9")
    server.fail_downloads.add("vocab.txt")
    with pytest.raises(
        OSError,
        match=r"downloading the Hugging Face id .* from http://127\.0\.0\.1:\d+ into the cache",
    ):
        resolve_checkpoint(REPO)
