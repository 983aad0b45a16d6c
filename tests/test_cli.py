"""The `mmrep` command and its built-in demo."""

import subprocess
import sys

import pytest

from mmrep import __version__
from mmrep.cli import main
from mmrep.demo import MODALITIES, run_demo


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mmrep {__version__}"
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_help_does_not_start_tensorflow():
    code = "import sys; from mmrep.cli import main; main([]); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def test_bad_epochs_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--epochs", "0"])
    assert "--epochs must be at least 1, got 0" in capsys.readouterr().err


def test_demo_learns_every_modality_and_ignores_absent_ones(tmp_path, capsys):
    results = run_demo(epochs=4, save=str(tmp_path / "demo.keras"))
    assert results["all modalities"] > 0.95
    # Each missing modality's input holds junk (NaN audio, noise pixels, a caption naming
    # the wrong digit): the presence mask keeps it out, so accuracy stays high.
    for m in MODALITIES:
        assert results[f"{m} missing"] > 0.9, results
    # Not only the captions: the image and audio encoders learn on their own too.
    assert results["image only"] > 0.6 and results["audio only"] > 0.6, results
    assert "identical predictions" in capsys.readouterr().out
