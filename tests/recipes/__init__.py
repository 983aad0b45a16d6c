"""Tests of the recipes' own pieces (tests/test_recipes.py runs every recipe end to end)."""

import importlib.util
import os

RECIPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "recipes")


def load_recipe(filename):
    """The recipe `recipes/<filename>` imported as a module (recipes are scripts, not a
    package), so that tests and benchmarks can call its functions."""
    name = "recipe_" + os.path.splitext(filename)[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(RECIPES, filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
