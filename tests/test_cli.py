"""The `mmrep` command."""

import os
import subprocess
import sys

import pytest
import tomllib

from mmrep import __version__
from mmrep.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mmrep {__version__}"
    assert main([]) == 0
    usage = capsys.readouterr().out
    for command in ("train", "evaluate", "export", "embed"):
        assert command in usage
    assert "demo" not in usage  # the demo is a recipe now


def test_bad_epochs_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "0"])
    assert "argument --epochs: must be at least 1, got 0" in capsys.readouterr().err


def printed_config(capsys, *args):
    """`mmrep train --print-config ARGS`: the TOML text and the config it checks to."""
    from mmrep.job import check_config

    assert main(["train", "--print-config", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    mapping = tomllib.loads(captured.out)
    return captured.out, check_config(mapping, source="printed")


def test_print_config_prints_the_built_in_config_with_the_overrides(capsys, tmp_path):
    from mmrep.job import DEFAULT_FUSION, builtin_config, config_to_toml, load_config

    text, config = printed_config(capsys)
    assert text == config_to_toml(builtin_config())
    assert config == builtin_config()
    assert config["data"] == {"builtin": "mmdigits"} and config["task"] == "classification"
    assert config["fusion"]["kind"] == DEFAULT_FUSION and config["head"]["kind"] == "none"
    assert list(config["modalities"]) == ["image", "text", "audio", "video"]

    exports = str(tmp_path / "exports")
    args = ["--epochs", "3", "--batch-size", "8", "--learning-rate", "0.01", "--seed", "7"]
    args += ["--fusion", "concat", "--head", "vae", "--precision", "mixed_bfloat16"]
    args += ["--export-dir", exports, "--no-export"]
    text, config = printed_config(capsys, *args)
    assert "epochs = 3" in text.splitlines()
    train = config["train"]
    assert (train["epochs"], train["batch_size"], train["learning_rate"]) == (3, 8, 0.01)
    assert (train["precision"], config["seed"]) == ("mixed_bfloat16", 7)
    assert (config["fusion"]["kind"], config["head"]["kind"]) == ("concat", "vae")
    assert config["name"] == "mmdigits_concat_vae"  # named after the fusion and head
    assert config["export"] == {"enabled": False, "dir": exports}
    # What the command did not override keeps the built-in value.
    assert train["modality_dropout"] == builtin_config()["train"]["modality_dropout"]
    assert config["modalities"] == builtin_config()["modalities"]

    # --name wins over the name a fusion gives; a printed config is a config file.
    text, config = printed_config(capsys, "--fusion", "bilinear", "--name", "mine")
    assert config["name"] == "mine" and config["fusion"]["kind"] == "bilinear"
    path = tmp_path / "printed.toml"
    path.write_text(text)
    assert load_config(path) == config
    again, _ = printed_config(capsys, "--config", str(path), "--epochs", "2")
    assert tomllib.loads(again)["train"]["epochs"] == 2
    assert tomllib.loads(again)["name"] == "mine"


def built_in_toml(old, new):
    """The built-in config's TOML with `old` replaced by `new` (once)."""
    from mmrep.job import builtin_config, config_to_toml

    text = config_to_toml(builtin_config())
    assert old in text, old
    return text.replace(old, new, 1)


BAD_CONFIGS = {
    "bad_value": (("epochs = 20\n", "epochs = 0\n"), "`train.epochs`: expected an integer >= 1"),
    "unknown_key": (("[fusion]\n", "[fusion]\nsize = 3\n"), "unknown key `fusion.size`"),
    "not_toml": (("[train]\n", "[train\n"), "not a TOML file"),
    "no_manifest": (('builtin = "mmdigits"', 'train = "absent.csv"'), "`data.train`: no manifest"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_file_is_one_error_line(case, capsys, tmp_path):
    edit, key = BAD_CONFIGS[case]
    path = tmp_path / "bad.toml"
    path.write_text(built_in_toml(*edit))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(path)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mmrep train: error: "), lines
    assert key in lines[0] and str(path) in lines[0], lines


def test_config_errors_of_the_overrides_and_a_missing_file(capsys, tmp_path):
    retrieval = tmp_path / "retrieval.toml"
    retrieval.write_text(built_in_toml('task = "classification"', 'task = "retrieval"'))
    for args, words in (
        # A retrieval task needs the coordinated fusion: the override is refused.
        (["--config", str(retrieval), "--fusion", "concat"], "`fusion.kind`"),
        (["--config", str(tmp_path / "absent.toml")], "no config file at"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--print-config", *args])
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("mmrep train: error: "), lines
        assert words in lines[0], lines


@pytest.mark.slow  # a fresh process: TensorFlow's start-up
def test_a_bad_config_file_exits_2_without_a_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(built_in_toml("image_size = 32", "image_size = 4"))
    command = [sys.executable, "-m", "mmrep", "train", "--config", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("mmrep train:")]
    assert len(errors) == 1, done.stderr
    assert "`modalities.image.image_size`" in errors[0] and str(path) in errors[0], errors


@pytest.mark.slow  # CLI end to end
def test_train_command(tmp_path, capsys):
    """`mmrep train`: the built-in job, one epoch, in a subprocess, as a user runs it."""
    import json

    from mmrep.job import DEFAULT_FUSION, load_config

    runs, exports = str(tmp_path / "runs"), str(tmp_path / "saved_models")
    command = [sys.executable, "-m", "mmrep", "train", "--epochs", "1", "--name", "cli"]
    command += ["--runs-dir", runs, "--export-dir", exports, "--no-export"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # Keras' progress output: 1,258 training examples in batches of 64 are 20 steps.
    assert "20/20" in done.stdout and "Results on the test split (270 rows" in done.stdout
    folder = os.path.join(runs, "cli")
    assert f"Run folder: {folder}" in done.stdout
    assert sorted(os.listdir(folder)) == [
        "config.toml",
        "embedding_projection.png",
        "history.json",
        "metrics.json",
        "model.keras",
        "retrieval_examples.png",
        "run.json",
        "training_curves.png",
    ]
    config = load_config(os.path.join(folder, "config.toml"))
    assert (config["fusion"]["kind"], config["head"]["kind"]) == (DEFAULT_FUSION, "none")
    assert (config["train"]["epochs"], config["name"]) == (1, "cli")
    assert config["export"] == {"enabled": False, "dir": exports}
    assert json.load(open(os.path.join(folder, "run.json")))["classes"] == [
        str(d) for d in range(10)
    ]
    assert not os.path.exists(exports)
    # The run's config.toml runs the run again: printed back, it is the same file.
    assert main(["train", "--config", os.path.join(folder, "config.toml"), "--print-config"]) == 0
    assert capsys.readouterr().out == open(os.path.join(folder, "config.toml")).read()


@pytest.mark.slow  # CLI end to end, on the session's one tiny run
def test_evaluate_export_and_embed_commands(tiny_run, tmp_path, capsys):
    import csv
    import shutil

    import numpy as np

    from mmrep.data import export_mmdigits

    # A copy: `evaluate` rewrites the run's files, which other tests read meanwhile.
    name = os.path.basename(tiny_run["folder"])
    runs = str(tmp_path / "runs")
    shutil.copytree(tiny_run["folder"], os.path.join(runs, name))
    assert main(["evaluate", name, "--runs-dir", runs]) == 0
    assert "Results on the test split" in capsys.readouterr().out
    exports = str(tmp_path / "saved_models")
    assert main(["export", name, "--runs-dir", runs, "--export-dir", exports]) == 0
    version = os.path.join(exports, name, "1")
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))

    # An mmdigits manifest has the modality columns and a label: nothing to ignore.
    manifest = export_mmdigits(str(tmp_path / "data"), limit=6, progress=False)
    output = str(tmp_path / "embeddings.npz")
    assert main(["embed", "--model", version, "--manifest", manifest, "--output", output]) == 0
    with np.load(output) as saved:
        assert saved["embedding"].shape[0] == 6 and np.isfinite(saved["embedding"]).all()
        assert saved["probabilities"].shape == (6, 10)
        assert saved["label"].shape == (6,)
    capsys.readouterr()

    # A manifest with another column: refused, naming it, unless --ignore leaves it unread.
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    extra = str(tmp_path / "data" / "with_id.csv")
    with open(extra, "w", newline="") as f:
        writer = csv.DictWriter(f, [*rows[0], "id"])
        writer.writeheader()
        writer.writerows({**row, "id": f"row{i}"} for i, row in enumerate(rows))
    ignored = str(tmp_path / "ignored.npz")
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "--model", version, "--manifest", extra, "--output", ignored])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("mmrep embed: error: ") and "['id']" in error, error
    command = ["embed", "--model", version, "--manifest", extra, "--output", ignored]
    assert main([*command, "--ignore", "id"]) == 0
    with np.load(output) as saved, np.load(ignored) as again:
        np.testing.assert_allclose(again["embedding"], saved["embedding"], atol=1e-6)
    capsys.readouterr()

    for command in ("evaluate", "export"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "missing", "--runs-dir", runs])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert error.startswith(f"mmrep {command}: error: no run 'missing'"), error
        assert f"holds: {name}" in error
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "--model", version, "--manifest", manifest, "--output", output])
    assert exit_info.value.code == 2  # the output exists
