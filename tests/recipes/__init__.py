"""Tests of the recipes' own pieces (tests/test_recipes.py runs every recipe end to end)."""
