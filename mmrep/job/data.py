"""The main job's input: mmdigits pipelines with random modality dropout, and absent inputs.

Training drops each modality of each example with probability `DROP_RATE` (never all of
them), so one model learns every subset of modalities; evaluation fills an absent
modality's input with junk that would mislead if it were read (`junk_like`), to show that
the presence mask keeps it out. The dropout is `mmrep.data.with_modality_dropout`.
"""

import numpy as np

from mmrep.data.mmdigits import MODALITIES, load_mmdigits
from mmrep.data.modality_dropout import with_modality_dropout

DROP_RATE = 0.5


def junk_like(modality, values):
    """What an absent modality holds in evaluation: values that would mislead if read.

    Full-scale white noise for audio, noise images and videos, and a caption naming the
    wrong digit (nine). The main job's audio encoder (VGGish) refuses non-finite
    waveforms, so its junk audio is finite noise.

    Args:
        modality: str. One of `MODALITIES`.
        values: the real values (array), for their shape.

    Returns:
        An array of the same shape (object array of bytes for text).

    Raises:
        ValueError: for an unknown modality.
    """
    if modality not in MODALITIES:
        raise ValueError(f"Expected a modality in {MODALITIES}. Received: {modality!r}")
    rng = np.random.default_rng(0)
    if modality == "audio":
        return rng.uniform(-1.0, 1.0, values.shape).astype("float32")
    if modality == "text":
        return np.full(values.shape, b"a handwritten nine", dtype=object)
    return rng.integers(0, 256, values.shape, dtype=np.uint8)


def with_absent(features, present):
    """Serving-model inputs for a condition: junk in absent modalities, their presence.

    Args:
        features: dict `{modality: array}` of one split (text as str or bytes).
        present: collection of the modalities to keep.

    Returns:
        dict with the four modalities (text as a bytes array) and `"presence"` float32
        `[N, 4]`.
    """
    count = len(features[MODALITIES[0]])
    out = {m: features[m] if m in present else junk_like(m, features[m]) for m in MODALITIES}
    out["text"] = np.asarray([t if isinstance(t, bytes) else str(t).encode() for t in out["text"]])
    out["presence"] = np.tile(np.array([[m in present for m in MODALITIES]], "float32"), (count, 1))
    return out


def training_dataset(split, tokenizer, seed, *, rerandomize, limit=None):
    """Single examples `(features, label)` for `fit`, tokenised.

    Args:
        split: str. `"train"` or `"validation"` (augmented for train only).
        tokenizer: the `TextVectorization` layer of the model.
        seed: int. Seeds the data (captions, audio pairing, video motion) and dropout.
        rerandomize: bool. New dropout masks every epoch (and a reshuffle, for train).
        limit: int or `None`. Keep only the first `limit` examples (tests).

    Returns:
        An unbatched `tf.data.Dataset` whose features are `image`, `text_ids` (int32),
        `audio`, `video` and `presence`.
    """
    import tensorflow as tf

    dataset = load_mmdigits(split, seed=seed)
    if limit is not None:
        dataset = dataset.take(limit)
    if split == "train":
        dataset = dataset.shuffle(2048, seed=seed, reshuffle_each_iteration=True)
    dataset = with_modality_dropout(
        dataset, MODALITIES, seed + 1, rate=DROP_RATE, rerandomize=rerandomize
    )

    def prepare(example):
        ids = tf.cast(tokenizer(example["text"][None])[0], tf.int32)
        features = {m: example[m] for m in MODALITIES if m != "text"}
        features.update(text_ids=ids, presence=example["presence"])
        return features, example["label"]

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
