"""`mmrep train --config` on a user's own files, end to end (the README's example).

The data is real-format files (`tests.job.own_data`: PNG and JPEG photos, captions, FLAC
and WAV speech, MP4 clips, rows missing a modality); the text encoder is a MiniLM-shaped
tiny BERT named by its Hugging Face id and read from a Hugging Face cache in its real
layout, offline. The config is the README's block. The tests train it for
classification and for retrieval through the command, check the run folder and the
metrics, embed the test manifest with `mmrep embed`, and serve raw inputs (strings,
encoded images, waveforms of two lengths in one padded batch) in a process that imports
only TensorFlow and tensorflow_text, against the Keras model.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tomllib

from mmrep.cli import main
from mmrep.job.config import mapping_to_toml
from tests.encoders.text.bert_checkpoints import make_bert, save
from tests.encoders.text.checkpoints import build_vocabulary, write_tokenizer
from tests.hf_cache import write_hf_cache
from tests.job.own_data import readme_config, write_own_data

pytestmark = pytest.mark.slow

REPO = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The data folder, the README's config beside it, and an offline HF cache."""
    root = tmp_path_factory.mktemp("own")
    facts = write_own_data(root)
    checkpoint = root / "minilm"
    write_tokenizer(checkpoint, lowercase=True)
    vocabulary = len(build_vocabulary(lowercase=True))
    # all-MiniLM-L6-v2's architecture (BERT, 12 heads of 32 in 384), made tiny.
    save(make_bert(seed=5, vocab_size=vocabulary, max_position_embeddings=32), checkpoint)
    cache = root / "hf-cache"
    write_hf_cache(cache, REPO, checkpoint)
    (root / "photos.toml").write_text(readme_config())
    retrieval = tomllib.loads(readme_config())
    retrieval.update(name="photos_retrieval", task="retrieval")
    retrieval["fusion"]["kind"] = "coordinated"
    (root / "retrieval.toml").write_text(mapping_to_toml(retrieval))
    return {"root": root, "facts": facts, "cache": cache}


@pytest.fixture
def offline(world, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(world["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(world["root"])


def train(config, capsys):
    code = main(["train", "--config", config, "--runs-dir", "runs", "--export-dir", "exports"])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_classification_run_end_to_end(world, offline, capsys, tmp_path):
    out = train("photos.toml", capsys)
    folder = world["root"] / "runs" / "photos"
    assert {"model.keras", "config.toml", "run.json", "metrics.json", "history.json"} <= set(
        os.listdir(folder)
    )
    assert {"training_curves.png", "embedding_projection.png", "retrieval_examples.png"} <= set(
        os.listdir(folder)
    )
    run = json.loads((folder / "run.json").read_text())
    assert run["classes"] == ["blue", "green", "red"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["examples"] == world["facts"]["counts"]["test"]
    accuracy = metrics["accuracy"]
    assert set(accuracy["only"]) == {"image", "text", "audio", "video"}
    # Colour is plain in the images and the video: the classifier learns it in six epochs.
    assert accuracy["all_modalities"] >= 0.6, metrics
    assert set(metrics["linear_probe_accuracy"]) == {"image", "text", "audio", "video", "fused"}
    assert len(metrics["retrieval"]["pairs"]) == 12
    assert "Results on the test split" in out and "Exported photos to" in out
    # The run's config.toml runs the run again: the config with the command line's
    # overrides, every default filled in, read back.
    from mmrep.job import load_config, with_overrides

    again = load_config(folder / "config.toml")
    given = with_overrides(load_config(world["root"] / "photos.toml"), export_dir="exports")
    assert again == given

    # mmrep embed on the export, over the JSON Lines test manifest.
    output = tmp_path / "test.npz"
    code = main(
        [
            "embed",
            "--model",
            "exports/photos",
            "--manifest",
            world["facts"]["jsonl"]["test"],
            "--ignore",
            "source",
            "--output",
            str(output),
        ]
    )
    assert code == 0, capsys.readouterr()
    embedded = np.load(output, allow_pickle=False)
    assert embedded["embedding"].shape == (world["facts"]["counts"]["test"], 32)
    assert np.isfinite(embedded["embedding"]).all()
    assert embedded["probabilities"].shape[1] == 3

    # The export serves raw inputs in a process with TensorFlow and tensorflow_text only.
    serve_in_fresh_process(world, folder, tmp_path)


def serve_in_fresh_process(world, folder, tmp_path):
    import tensorflow as tf

    from mmrep.preprocessing.audio_io import load_audio
    from mmrep.preprocessing.image_io import decode_image

    data = world["facts"]["data"]
    rows = world["facts"]["rows"]["test"]
    with_audio = [r for r in rows if r["audio"]][:2]
    waves = [load_audio(os.path.join(data, r["audio"]), 16000) for r in with_audio]
    waves[1] = waves[1][: len(waves[1]) // 2]  # two different lengths
    length = max(len(w) for w in waves)
    audio = np.zeros((2, length), np.float32)
    for i, w in enumerate(waves):
        audio[i, : len(w)] = w
    images = [open(os.path.join(data, r["image"]), "rb").read() for r in with_audio]
    pixels = np.stack([decode_image(b, size=32).numpy() for b in images])
    inputs = {
        "image": pixels,
        "text": np.array([r["text"].encode() for r in with_audio], dtype=object),
        "audio": audio,
        "audio_length": np.array([len(w) for w in waves], np.int32),
        "video": np.zeros((2, 4, 32, 32, 3), np.uint8),
        "video_frame_mask": np.zeros((2, 4), bool),
        "presence": np.array([[1, 1, 1, 0], [1, 1, 1, 0]], np.float32),
    }
    model = keras.models.load_model(folder / "model.keras")
    feed = {k: tf.constant(v.astype(bytes) if k == "text" else v) for k, v in inputs.items()}
    expected = {k: np.asarray(v) for k, v in model(feed).items()}
    np.savez(tmp_path / "inputs.npz", **{k: v for k, v in inputs.items() if k != "text"})
    script = f"""
import sys, json
import numpy as np
import tensorflow as tf
import tensorflow_text  # the BERT tokenizer's ops
loaded = tf.saved_model.load({str(world["root"] / "exports" / "photos" / "1")!r})
arrays = dict(np.load({str(tmp_path / "inputs.npz")!r}))
arrays["text"] = tf.constant({[t.decode() for t in inputs["text"]]!r})
out = loaded.signatures["serving_default"](**{{k: tf.constant(v) for k, v in arrays.items()}})
images = tf.constant({images!r})
alone = loaded.signatures["embed_image_bytes"](image_bytes=images)["embedding"]
text = loaded.signatures["embed_text"](text=arrays["text"])["embedding"]
audio = loaded.signatures["embed_audio"](audio=tf.constant(arrays["audio"]),
                                         audio_length=tf.constant(arrays["audio_length"]))
print(json.dumps({{"embedding": out["embedding"].numpy().tolist(),
                  "probabilities": out["probabilities"].numpy().tolist(),
                  "image": alone.numpy().tolist(), "text": text.numpy().tolist(),
                  "audio": audio["embedding"].numpy().tolist(),
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("mmrep", "keras"))}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert not [m for m in served["modules"] if m.startswith("mmrep")], served["modules"]
    for key in ("embedding", "probabilities"):
        np.testing.assert_allclose(served[key], expected[key], atol=1e-4)
    # Each one-modality signature is the serving model with only that modality present.
    for modality, column in (
        ("image", [1, 0, 0, 0]),
        ("text", [0, 1, 0, 0]),
        ("audio", [0, 0, 1, 0]),
    ):
        only = dict(feed, presence=tf.constant([column, column], tf.float32))
        np.testing.assert_allclose(
            served[modality], np.asarray(model(only)["embedding"]), atol=1e-4, err_msg=modality
        )


def test_retrieval_run_and_evaluate_on_another_manifest(world, offline, capsys):
    train("retrieval.toml", capsys)
    folder = world["root"] / "runs" / "photos_retrieval"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert "accuracy" not in metrics
    assert metrics["retrieval"]["positives"] == "the query's own row"
    pairs = metrics["retrieval"]["pairs"]
    assert len(pairs) == 12 and all(
        0 <= p["recall@1"] <= p["recall@5"] <= 1 for p in pairs.values()
    )
    code = main(["evaluate", "photos_retrieval", "--manifest", world["facts"]["manifests"]["val"]])
    out = capsys.readouterr().out
    assert code == 0 and "Results on the test split" in out
