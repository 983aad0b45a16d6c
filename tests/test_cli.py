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


def test_demo_fusion_beats_every_single_modality_and_survives_missing_ones(tmp_path, capsys):
    results = run_demo(epochs=4, num_train=2000, num_test=500, save=str(tmp_path / "demo.keras"))
    singles = [results[f"{m} only"] for m in MODALITIES]
    assert results["all modalities"] > max(singles) + 0.05
    for m in MODALITIES:
        # NaN-filled, masked-out inputs: still far above chance (0.1), never NaN.
        assert results[f"{m} missing (NaN input)"] > 0.5
    assert "identical predictions" in capsys.readouterr().out
