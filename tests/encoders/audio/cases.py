"""Registry cases for the audio encoders (merged into tests/registry.py)."""

AUDIO_CASES = []
