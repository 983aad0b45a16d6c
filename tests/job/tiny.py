"""The built-in mmdigits config with tiny encoders, and inputs of its serving model."""

import copy

import numpy as np
import tensorflow as tf

from mmrep.job import builtin_config, check_config
from mmrep.job.config import _as_mapping

MODALITIES = ("image", "text", "audio", "video")
# The examples per split of the session's tiny main-job run (`tiny_run` in tests/conftest.py).
TINY_RUN_LIMIT = 64
VOCABULARY = ["a", "the", "digit", "one", "two", "three", "seven", "handwritten", "nine"]
TINY_TABLES = {
    "image": {"filters": [4, 8]},
    "text": {"sequence_length": 8, "layers": 1, "hidden_size": 16, "heads": 2},
    "audio": {"conv_filters": [4, 4, 4, 4], "fc_units": [8], "embedding_dim": 8},
    "video": {"frame": {"encoder": "small_cnn", "image_size": 8, "filters": [4], "pooling": "max"}},
}


def tiny_config(fusion="coordinated", head="none", *, task="classification", **train):
    """The built-in config with tiny encoders (`vector_dim` and fusion `dim` 16)."""
    mapping = _as_mapping(builtin_config())
    for name, table in TINY_TABLES.items():
        mapping["modalities"][name].update(copy.deepcopy(table))
    mapping["fusion"] = {"kind": fusion, "dim": 16, "vector_dim": 16}
    mapping["head"] = {"kind": head}
    mapping["task"] = task
    mapping["train"].update(train)
    mapping["name"] = f"mmdigits_{fusion}" + ("" if head == "none" else f"_{head}")
    return check_config(mapping, source="tiny config")


def raw_inputs(batch=8, seed=0):
    """Serving inputs of mmdigits' shapes and dtypes (text as bytes), all present."""
    rng = np.random.default_rng(seed)
    words = np.array(VOCABULARY + ["unknownword"])
    return {
        "image": rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
        "text": np.array(
            [" ".join(rng.choice(words, 4)).encode() for _ in range(batch)], dtype=object
        ),
        "audio": (0.1 * rng.standard_normal((batch, 16000))).astype("float32"),
        "audio_length": np.full((batch,), 16000, "int32"),
        "video": rng.integers(0, 256, (batch, 16, 32, 32, 3), dtype=np.uint8),
        "video_frame_mask": np.ones((batch, 16), bool),
    }


def with_presence(inputs, present):
    """The inputs with a presence mask for `present` (the other values stay as they are)."""
    count = len(inputs["image"])
    flags = np.array([[m in present for m in MODALITIES]], "float32")
    return {**inputs, "presence": np.tile(flags, (count, 1))}


def serve(model, inputs):
    """Runs a serving model on numpy inputs (strings as a string tensor)."""
    feed = {k: tf.constant(v) for k, v in inputs.items() if k != "text"}
    feed["text"] = tf.constant(np.asarray(inputs["text"]).astype(bytes))
    return {k: np.asarray(v) for k, v in model(feed).items()}
