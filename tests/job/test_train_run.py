"""`train_run`, `evaluate_run` and `export_run` end to end on a reduced main job.

One small run (the session's `tiny_run`: tiny encoders, the first 64 examples of each
split, two epochs of two steps) writes every file; the tests read them back, re-evaluate the run from its saved
model, export it and serve the export with TensorFlow alone. The full-size job runs
through the `mmrep train` command in tests/test_cli.py.
"""

import json
import os
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.data.mmdigits import MODALITIES, load_mmdigits
from mmrep.job import RunError, evaluate_run, export_run, train_run
from mmrep.job import run_folder as rf
from mmrep.job.plots import CURVES_FILE, PROJECTION_FILE, RETRIEVAL_FILE
from mmrep.training import TrainingOptions
from tests.job.test_model import TINY, TINY_RUN_LIMIT

# The slow tier (--run-slow): the main job end to end, on the session's one tiny run.
pytestmark = pytest.mark.slow

PNGS = (CURVES_FILE, PROJECTION_FILE, RETRIEVAL_FILE)
LIMIT = TINY_RUN_LIMIT


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_run_folder_holds_every_file(run):
    folder = run["folder"]
    assert folder == os.path.join(run["runs"], "mmdigits_coordinated")
    expected = {rf.MODEL_FILE, rf.CONFIG_FILE, rf.HISTORY_FILE, rf.METRICS_FILE, *PNGS}
    assert set(os.listdir(folder)) == expected
    assert os.listdir(run["runs"]) == ["mmdigits_coordinated"], "a temporary folder is left"
    for png in PNGS:
        width, height = png_size(os.path.join(folder, png))
        assert 400 <= width <= 2500 and 300 <= height <= 2000, (png, width, height)
    config = json.load(open(os.path.join(folder, rf.CONFIG_FILE)))
    assert config["fusion"] == "coordinated" and config["head"] is None
    assert (config["epochs"], config["seed"], config["batch_size"]) == (2, 3, 16)
    assert (config["precision"], config["limit"]) == ("float32", LIMIT)
    assert config["versions"]["tensorflow"] == tf.__version__
    assert config["training_seconds"] > 0
    history = json.load(open(os.path.join(folder, rf.HISTORY_FILE)))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == 2 and all(np.isfinite(history[key])), key
    printed = run["printed"]
    assert f"Test results ({LIMIT} examples" in printed and "Run folder:" in printed
    version = os.path.join(run["exports"], "mmdigits_coordinated", "1")
    assert f"to {version} (signatures: serving_default" in printed
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))


def test_metrics_json_has_every_number_in_range(run):
    metrics = json.load(open(os.path.join(run["folder"], rf.METRICS_FILE)))
    assert metrics["split"] == "test" and metrics["examples"] == LIMIT
    assert "same digit" in metrics["retrieval"]["positives"]
    numbers = []
    for key in ("accuracy", "validation_accuracy"):
        accuracy = metrics[key]
        assert set(accuracy["missing"]) == set(accuracy["only"]) == set(MODALITIES)
        numbers += [accuracy["all_modalities"], *accuracy["missing"].values()]
        numbers += list(accuracy["only"].values())
    assert set(metrics["linear_probe_accuracy"]) == {*MODALITIES, "fused"}
    numbers += list(metrics["linear_probe_accuracy"].values())
    pairs = metrics["retrieval"]["pairs"]
    assert len(pairs) == 12 and "text->image" in pairs and "image->text" in pairs
    for scores in pairs.values():
        assert set(scores) == {"recall@1", "recall@5"}
        assert scores["recall@1"] <= scores["recall@5"]
        numbers += list(scores.values())
    assert all(0.0 <= x <= 1.0 for x in numbers), numbers


def test_evaluate_run_reproduces_the_metrics_from_the_saved_model(run, capsys):
    folder = run["folder"]
    written = json.load(open(os.path.join(folder, rf.METRICS_FILE)))
    before = {png: os.stat(os.path.join(folder, png)).st_mtime_ns for png in PNGS}
    recomputed = evaluate_run("mmdigits_coordinated", runs_dir=run["runs"])
    assert "Test results" in capsys.readouterr().out
    assert json.load(open(os.path.join(folder, rf.METRICS_FILE))) == recomputed
    # The reloaded model gives the in-memory model's outputs (to float round-off), so the
    # classifier accuracies match exactly; probes and retrieval may flip a near tie.
    assert recomputed["accuracy"] == written["accuracy"]
    for m, value in written["linear_probe_accuracy"].items():
        assert abs(recomputed["linear_probe_accuracy"][m] - value) <= 2 / LIMIT, m
    for pair, scores in written["retrieval"]["pairs"].items():
        for k, value in scores.items():
            assert abs(recomputed["retrieval"]["pairs"][pair][k] - value) <= 2 / LIMIT, pair
    for png in PNGS:
        assert os.stat(os.path.join(folder, png)).st_mtime_ns >= before[png]
        png_size(os.path.join(folder, png))


def test_export_run_serves_the_run_with_tensorflow_alone(run, tmp_path):
    version = export_run(run["folder"], export_dir=str(tmp_path), version=7, verbose=False)
    assert version == os.path.join(str(tmp_path), "mmdigits_coordinated", "7")
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))
    with pytest.raises(FileExistsError):
        export_run(run["folder"], export_dir=str(tmp_path), version=7, verbose=False)
    served = tf.saved_model.load(version)
    expected_signatures = {"serving_default", "embed_image_bytes"}
    expected_signatures |= {f"embed_{m}" for m in (*MODALITIES, "text_ids")}
    assert set(served.signatures) == expected_signatures
    test = load_mmdigits("test", seed=3, as_numpy=True)
    inputs = {m: tf.constant(test[m][:5]) for m in MODALITIES}
    inputs["presence"] = tf.constant(
        [[1, 1, 1, 1], [1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [1, 1, 0, 1]], tf.float32
    )
    from mmrep.job.metrics import load_serving_model

    keras_model = load_serving_model(run["folder"])
    expected = keras_model(inputs)
    got = served.signatures["serving_default"](**inputs)
    for key in ("embedding", "probabilities"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
    text = served.signatures["embed_text"](text=inputs["text"])["embedding"]
    alone = dict(inputs, presence=tf.constant([[0, 1, 0, 0]] * 5, tf.float32))
    np.testing.assert_allclose(text, keras_model(alone)["embedding"], atol=1e-5)


def test_missing_runs_are_clear_errors(run, tmp_path):
    with pytest.raises(RunError, match=r"no run 'nothing'.*holds: mmdigits_coordinated"):
        evaluate_run("nothing", runs_dir=run["runs"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_run("nothing", runs_dir=str(tmp_path / "absent"))
    empty = tmp_path / "half"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(RunError, match=r"has no model\.keras \(it holds: config\.json\)"):
        evaluate_run(str(empty))
    (empty / "model.keras").write_text("not a zip")
    with pytest.raises(RunError, match="not a main-job model that loads"):
        evaluate_run(str(empty))


def test_training_options_apply_to_the_run_only(tmp_path):
    options = TrainingOptions("mixed_bfloat16", jit_compile=True)
    folder = train_run(
        "concat",
        "vae",
        epochs=1,
        runs_dir=str(tmp_path),
        export=False,
        batch_size=8,
        steps_per_epoch=1,
        limit=16,
        verbose=0,
        sizes=TINY,
        options=options,
    )
    config = json.load(open(os.path.join(folder, rf.CONFIG_FILE)))
    assert (config["precision"], config["jit_compile"]) == ("mixed_bfloat16", True)
    assert (config["head"], os.path.basename(folder)) == ("vae", "mmdigits_concat_vae")
    assert keras.config.dtype_policy().name == "float32"
    reloaded = keras.models.load_model(os.path.join(folder, rf.MODEL_FILE))
    assert reloaded.get_layer("joint").dtype_policy.name == "mixed_bfloat16"
