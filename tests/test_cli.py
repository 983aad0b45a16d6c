"""The `mmrep` command."""

import os
import subprocess
import sys

import pytest

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


@pytest.mark.slow  # CLI end to end
def test_train_command(tmp_path):
    """`mmrep train`: the full-size job, one epoch, in a subprocess, as a user runs it."""
    import json

    from mmrep.job import DEFAULT_FUSION

    runs, exports = str(tmp_path / "runs"), str(tmp_path / "saved_models")
    command = [sys.executable, "-m", "mmrep", "train", "--epochs", "1", "--name", "cli"]
    command += ["--runs-dir", runs, "--export-dir", exports, "--no-export"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # Keras' progress output: 1,258 training examples in batches of 64 are 20 steps.
    assert "20/20" in done.stdout and "Test results (270 examples" in done.stdout
    folder = os.path.join(runs, "cli")
    assert f"Run folder: {folder}" in done.stdout
    assert sorted(os.listdir(folder)) == [
        "config.json",
        "embedding_projection.png",
        "history.json",
        "metrics.json",
        "model.keras",
        "retrieval_examples.png",
        "training_curves.png",
    ]
    config = json.load(open(os.path.join(folder, "config.json")))
    assert (config["fusion"], config["head"], config["epochs"]) == (DEFAULT_FUSION, None, 1)
    assert not os.path.exists(exports)


@pytest.mark.slow  # CLI end to end, on the session's one tiny run
def test_evaluate_export_and_embed_commands(tiny_run, tmp_path, capsys):
    import shutil

    import numpy as np

    from mmrep.data import export_mmdigits

    # A copy: `evaluate` rewrites the run's files, which other tests read meanwhile.
    name = os.path.basename(tiny_run["folder"])
    runs = str(tmp_path / "runs")
    shutil.copytree(tiny_run["folder"], os.path.join(runs, name))
    assert main(["evaluate", name, "--runs-dir", runs]) == 0
    assert "Test results" in capsys.readouterr().out
    exports = str(tmp_path / "saved_models")
    assert main(["export", name, "--runs-dir", runs, "--export-dir", exports]) == 0
    version = os.path.join(exports, name, "1")
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))

    manifest = export_mmdigits(str(tmp_path / "data"), limit=6, progress=False)
    output = str(tmp_path / "embeddings.npz")
    assert main(["embed", "--model", version, "--manifest", manifest, "--output", output]) == 0
    with np.load(output) as saved:
        assert saved["embedding"].shape[0] == 6 and np.isfinite(saved["embedding"]).all()
        assert saved["label"].shape == (6,)
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
