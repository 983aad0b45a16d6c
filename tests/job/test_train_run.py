"""`train_run`, `evaluate_run` and `export_run` end to end on a reduced main job.

One small run (the session's `tiny_run`: the built-in config with tiny encoders, the
first 64 examples of each split, two epochs of two steps) writes every file; the tests
read them back, re-evaluate the run from its saved model, export it and serve the
export with TensorFlow alone. The full-size job runs through the `mmrep train` command
in tests/test_cli.py.
"""

import json
import os
import shutil
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.data.mmdigits import MODALITIES, load_mmdigits
from mmrep.job import (
    RunData,
    RunError,
    evaluate_run,
    export_run,
    load_config,
    load_run,
    train_run,
    with_overrides,
)
from mmrep.job import run_folder as rf
from mmrep.job.plots import CURVES_FILE, PROJECTION_FILE, RETRIEVAL_FILE
from tests.job.tiny import TINY_RUN_LIMIT, tiny_config

# The slow tier (--run-slow): the main job end to end, on the session's one tiny run.
pytestmark = pytest.mark.slow

PNGS = (CURVES_FILE, PROJECTION_FILE, RETRIEVAL_FILE)
LIMIT = TINY_RUN_LIMIT
CLASSES = [str(d) for d in range(10)]


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
    expected = {
        rf.MODEL_FILE,
        rf.CONFIG_FILE,
        rf.RUN_FILE,
        rf.HISTORY_FILE,
        rf.METRICS_FILE,
        *PNGS,
    }
    assert set(os.listdir(folder)) == expected
    assert os.listdir(run["runs"]) == ["mmdigits_coordinated"], "a temporary folder is left"
    for png in PNGS:
        width, height = png_size(os.path.join(folder, png))
        assert 400 <= width <= 2500 and 300 <= height <= 2000, (png, width, height)

    # config.toml is the full config the run was trained with: it runs the run again.
    config = load_config(os.path.join(folder, rf.CONFIG_FILE))
    assert config["fusion"]["kind"] == "coordinated" and config["head"]["kind"] == "none"
    assert config["task"] == "classification" and config["data"] == {"builtin": "mmdigits"}
    train = config["train"]
    assert (train["epochs"], config["seed"], train["batch_size"]) == (2, 3, 16)
    assert (train["precision"], train["limit"], train["steps_per_epoch"]) == ("float32", LIMIT, 2)
    given = with_overrides(
        tiny_config(),
        epochs=2,
        seed=3,
        export_dir=run["exports"],
        batch_size=16,
        steps_per_epoch=2,
        limit=LIMIT,
    )
    assert config == given

    info = json.load(open(os.path.join(folder, rf.RUN_FILE)))
    assert info["name"] == "mmdigits_coordinated" and info["classes"] == CLASSES
    assert info["versions"]["tensorflow"] == tf.__version__
    assert info["versions"]["keras"] == keras.__version__
    assert info["training_seconds"] > 0 and info["other_seconds"] > 0
    assert info["replicas"] >= 1 and info["strategy"]

    history = json.load(open(os.path.join(folder, rf.HISTORY_FILE)))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == 2 and all(np.isfinite(history[key])), (key, history)
    printed = run["printed"]
    assert f"Results on the test split ({LIMIT} rows" in printed and "Run folder:" in printed
    version = os.path.join(run["exports"], "mmdigits_coordinated", "1")
    assert f"to {version} (signatures: serving_default" in printed
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))


def test_metrics_json_has_every_number_in_range(run):
    metrics = json.load(open(os.path.join(run["folder"], rf.METRICS_FILE)))
    assert metrics["split"] == "test" and metrics["examples"] == LIMIT
    assert metrics["modalities"] == list(MODALITIES) and metrics["classes"] == CLASSES
    assert metrics["rows_with"] == dict.fromkeys(MODALITIES, LIMIT)
    assert metrics["retrieval"]["positives"] == "every row of the query's class"
    assert metrics["retrieval"]["similarity"] == "cosine"
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
        assert set(scores) == {"recall@1", "recall@5", "queries"}
        assert scores["queries"] == LIMIT
        assert scores["recall@1"] <= scores["recall@5"]
        numbers += [scores["recall@1"], scores["recall@5"]]
    assert all(x is not None and 0.0 <= x <= 1.0 for x in numbers), numbers


def test_evaluate_run_reproduces_the_metrics_from_the_saved_model(run, capsys):
    folder = run["folder"]
    written = json.load(open(os.path.join(folder, rf.METRICS_FILE)))
    before = {png: os.stat(os.path.join(folder, png)).st_mtime_ns for png in PNGS}
    recomputed = evaluate_run("mmdigits_coordinated", runs_dir=run["runs"])
    assert f"Results on the test split ({LIMIT} rows" in capsys.readouterr().out
    assert json.load(open(os.path.join(folder, rf.METRICS_FILE))) == recomputed
    assert recomputed["rows_with"] == written["rows_with"]
    # The reloaded model gives the in-memory model's outputs (to float round-off), so the
    # classifier accuracies match exactly; probes and retrieval may flip a near tie.
    assert recomputed["accuracy"] == written["accuracy"]
    assert recomputed["validation_accuracy"] == written["validation_accuracy"]
    for m, value in written["linear_probe_accuracy"].items():
        assert abs(recomputed["linear_probe_accuracy"][m] - value) <= 2 / LIMIT, m
    for pair, scores in written["retrieval"]["pairs"].items():
        for k, value in scores.items():
            assert abs(recomputed["retrieval"]["pairs"][pair][k] - value) <= 2 / LIMIT, pair
    for png in PNGS:
        assert os.stat(os.path.join(folder, png)).st_mtime_ns >= before[png]
        png_size(os.path.join(folder, png))


def test_evaluation_reads_the_training_split_unaugmented(run):
    """The linear probes are trained on the training split as it is, every time."""
    config = load_config(os.path.join(run["folder"], rf.CONFIG_FILE))
    data = RunData(config)
    plain = load_mmdigits("train", seed=config["seed"], augment=False, as_numpy=True)
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        batch = next(iter(data.examples("train", limit=8).batch(8)))
        for m in MODALITIES:
            got = batch[m].numpy()
            assert got.shape == plain[m][:8].shape, m
            np.testing.assert_array_equal(got, plain[m][:8], err_msg=f"{m}, global seed {seed}")


def test_export_run_serves_the_run_with_tensorflow_alone(run, tmp_path):
    version = export_run(run["folder"], export_dir=str(tmp_path), version=7, verbose=False)
    assert version == os.path.join(str(tmp_path), "mmdigits_coordinated", "7")
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))
    with pytest.raises(FileExistsError):
        export_run(run["folder"], export_dir=str(tmp_path), version=7, verbose=False)
    served = tf.saved_model.load(version)
    expected_signatures = {"serving_default", "embed_image_bytes"}
    expected_signatures |= {f"embed_{m}" for m in MODALITIES}
    assert set(served.signatures) == expected_signatures
    serving_inputs = served.signatures["serving_default"].structured_input_signature[1]
    assert set(serving_inputs) == {*MODALITIES, "audio_length", "video_frame_mask", "presence"}
    embed_audio = served.signatures["embed_audio"].structured_input_signature[1]
    embed_video = served.signatures["embed_video"].structured_input_signature[1]
    assert set(embed_audio) == {"audio", "audio_length"}
    assert set(embed_video) == {"video", "video_frame_mask"}

    test = load_mmdigits("test", seed=3, as_numpy=True)
    inputs = {m: tf.constant(test[m][:5]) for m in MODALITIES}
    inputs["audio_length"] = tf.fill([5], tf.shape(inputs["audio"])[1])
    inputs["video_frame_mask"] = tf.ones(tf.shape(inputs["video"])[:2], tf.bool)
    inputs["presence"] = tf.constant(
        [[1, 1, 1, 1], [1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [1, 1, 0, 1]], tf.float32
    )
    keras_model = load_run(run["folder"])[1].serving
    expected = keras_model(inputs)
    got = served.signatures["serving_default"](**inputs)
    assert set(got) == {"embedding", "probabilities"}
    for key in ("embedding", "probabilities"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)

    # Each one-modality signature is the Keras model with only that modality present.
    feeds = {
        "image": {"image": inputs["image"]},
        "text": {"text": inputs["text"]},
        "audio": {"audio": inputs["audio"], "audio_length": inputs["audio_length"]},
        "video": {"video": inputs["video"], "video_frame_mask": inputs["video_frame_mask"]},
    }
    for i, m in enumerate(MODALITIES):
        embedded = served.signatures[f"embed_{m}"](**feeds[m])["embedding"]
        alone = dict(inputs, presence=tf.constant([np.eye(4)[i]] * 5, tf.float32))
        np.testing.assert_allclose(embedded, keras_model(alone)["embedding"], atol=1e-5, err_msg=m)
    pngs = tf.stack([tf.io.encode_png(image) for image in inputs["image"]])
    from_bytes = served.signatures["embed_image_bytes"](image_bytes=pngs)["embedding"]
    np.testing.assert_allclose(
        from_bytes, served.signatures["embed_image"](image=inputs["image"])["embedding"], atol=1e-5
    )


def test_missing_runs_are_clear_errors(run, tmp_path):
    with pytest.raises(RunError, match=r"no run 'nothing'.*holds: mmdigits_coordinated"):
        evaluate_run("nothing", runs_dir=run["runs"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_run("nothing", runs_dir=str(tmp_path / "absent"))
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(os.path.join(run["folder"], rf.CONFIG_FILE), half / rf.CONFIG_FILE)
    with pytest.raises(RunError, match=r"has no model\.keras \(it holds: config\.toml\)"):
        evaluate_run(str(half))
    (half / "model.keras").write_text("not a zip")
    with pytest.raises(RunError, match=r"model\.keras' is not a complete \.keras file"):
        evaluate_run(str(half))
    (half / rf.CONFIG_FILE).write_text('task = "everything"\n')
    with pytest.raises(RunError, match=r"the run's config does not check: .*`task`"):
        evaluate_run(str(half))
    # A folder of an older mmrep (no config.toml beside the model) says what is missing.
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(os.path.join(run["folder"], rf.MODEL_FILE), old / rf.MODEL_FILE)
    (old / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"config\.toml' is missing"):
        export_run(str(old), export_dir=str(tmp_path / "exports"))
    # A run on the built-in data is evaluated on mmdigits only.
    manifest = tmp_path / "rows.csv"
    manifest.write_text("image,text,label\n,a caption,1\n")
    with pytest.raises(RunError, match="evaluated on mmdigits only"):
        evaluate_run(run["folder"], manifest=str(manifest))
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        evaluate_run(run["folder"], manifest=str(tmp_path / "absent.csv"))


def test_training_options_apply_to_the_run_only(tmp_path):
    config = with_overrides(
        tiny_config("concat", "vae", task="classification"),
        precision="mixed_bfloat16",
        jit_compile=True,
        epochs=1,
        batch_size=8,
        steps_per_epoch=1,
        limit=16,
        export=False,
    )
    folder = train_run(config, runs_dir=str(tmp_path), verbose=0)
    saved = load_config(os.path.join(folder, rf.CONFIG_FILE))
    assert (saved["train"]["precision"], saved["train"]["jit_compile"]) == ("mixed_bfloat16", True)
    assert (saved["train"]["epochs"], saved["train"]["batch_size"]) == (1, 8)
    assert (saved["train"]["steps_per_epoch"], saved["train"]["limit"]) == (1, 16)
    assert saved["export"]["enabled"] is False and saved == config
    assert (saved["head"]["kind"], os.path.basename(folder)) == ("vae", "mmdigits_concat_vae")
    assert keras.config.dtype_policy().name == "float32"
    reloaded = keras.models.load_model(os.path.join(folder, rf.MODEL_FILE))
    assert reloaded.get_layer("joint").dtype_policy.name == "mixed_bfloat16"
