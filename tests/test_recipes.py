"""Every recipe runs end to end at its smoke size, through the public API only.

Each file in recipes/ is run as a script in a child process with `--smoke` (tiny data and
epochs), the way a user runs it; the full-size numbers are reported in docs/recipes.md.
"""

import os
import subprocess
import sys

import pytest

# The slow tier (--run-slow): recipes.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(f for f in os.listdir(os.path.join(ROOT, "recipes")) if f.endswith(".py"))


def test_there_are_recipes():
    assert RECIPES, "recipes/ holds no scripts"


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_at_smoke_size(recipe, tmp_path):
    _run_smoke(recipe, tmp_path)


# Every recipe takes `--precision` and `--jit-compile` (mmrep.training.options); two of
# them, one with a custom `compute_loss` (the MVAE), run with both flags here.
@pytest.mark.parametrize("recipe", ["image_vae.py", "mvae_mmdigits.py"])
def test_recipe_runs_in_mixed_bfloat16_with_xla(recipe, tmp_path):
    _run_smoke(recipe, tmp_path, "--precision", "mixed_bfloat16", "--jit-compile")


def _run_smoke(recipe, tmp_path, *flags):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", recipe), "--smoke", *flags],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"{recipe} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    assert "|" in result.stdout, f"{recipe} printed no results table:\n{result.stdout[-2000:]}"
