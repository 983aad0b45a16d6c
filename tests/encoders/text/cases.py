"""Registry cases for the text encoders (merged into tests/registry.py)."""

TEXT_CASES = []
