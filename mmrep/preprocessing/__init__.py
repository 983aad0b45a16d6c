"""Preprocessing: decoding and resampling of image, audio and video files."""
