"""The main job's input: mmdigits pipelines with random modality dropout, and absent inputs.

Training drops each modality of each example with probability `DROP_RATE` (never all of
them), so one model learns every subset of modalities; evaluation fills an absent
modality's input with junk that would mislead if it were read (`junk_like`), to show that
the presence mask keeps it out. `mmrep.demo` uses the same two functions.
"""

import numpy as np

from mmrep.data.mmdigits import MODALITIES, load_mmdigits

DROP_RATE = 0.5


def with_modality_dropout(dataset, seed, rate=DROP_RATE, rerandomize=True):
    """Adds a random presence mask `"presence"` (float32 `[4]`) to each example.

    Each modality is dropped with probability `rate`; an example that would lose all of
    them keeps one (the example's seed modulo 4), since an example with no modality
    teaches nothing.

    Args:
        dataset: `tf.data.Dataset` of example dicts.
        seed: int. Seed of the draws.
        rate: float in [0, 1). Drop probability. Defaults to `DROP_RATE` (0.5).
        rerandomize: bool. Draw new masks at every pass over the data (training), or
            the same ones (a fixed validation set). Defaults to `True`.

    Returns:
        The dataset with `"presence"` added (columns in `MODALITIES` order).

    Raises:
        ValueError: for a rate outside [0, 1).
    """
    import tensorflow as tf

    if not 0 <= rate < 1:
        raise ValueError(f"Expected `rate` in [0, 1). Received: rate={rate}")

    def drop(example, example_seed):
        keep = tf.random.stateless_uniform((len(MODALITIES),), tf.stack([example_seed, 0])) >= rate
        fallback = tf.one_hot(example_seed % len(MODALITIES), len(MODALITIES)) > 0
        keep = tf.where(tf.reduce_any(keep), keep, fallback)
        return {**example, "presence": tf.cast(keep, tf.float32)}

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=rerandomize)
    return tf.data.Dataset.zip(dataset, seeds).map(drop, num_parallel_calls=tf.data.AUTOTUNE)


def junk_like(modality, values, nan_audio=False):
    """What an absent modality holds in evaluation: values that would mislead if read.

    Full-scale white noise for audio (or NaN), noise images and videos, and a caption
    naming the wrong digit (nine). The main job's audio encoder (VGGish) refuses
    non-finite waveforms, so its junk audio is finite noise; the demo's encoder takes NaN.

    Args:
        modality: str. One of `MODALITIES`.
        values: the real values (array), for their shape.
        nan_audio: bool. NaN instead of noise for audio. Defaults to `False`.

    Returns:
        An array of the same shape (object array of bytes for text).

    Raises:
        ValueError: for an unknown modality.
    """
    if modality not in MODALITIES:
        raise ValueError(f"Expected a modality in {MODALITIES}. Received: {modality!r}")
    rng = np.random.default_rng(0)
    if modality == "audio":
        if nan_audio:
            return np.full(values.shape, np.nan, "float32")
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
    dataset = with_modality_dropout(dataset, seed + 1, rerandomize=rerandomize)

    def prepare(example):
        ids = tf.cast(tokenizer(example["text"][None])[0], tf.int32)
        features = {m: example[m] for m in MODALITIES if m != "text"}
        features.update(text_ids=ids, presence=example["presence"])
        return features, example["label"]

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
