"""mmdigits: the embedded four-modality data set (image, text, audio, video) of the digits 0-9.

Built from material that ships offline, so mmrep's main job runs on a fresh machine with
no downloads:

- image: scikit-learn's bundled handwritten digits (1,797 images of 8×8 pixels, 16 grey
  levels), upsampled by cubic interpolation to `image_size` (default 32), white on black,
  uint8 RGB `[S, S, 3]`;
- text: a caption drawn from templates, number forms (word, numeral, Roman numeral,
  synonyms) and handwriting details (`mmrep.data.captions`), a `tf.string`;
- audio: the digit's word spoken by espeak-ng in one of 48 voice/speed/pitch variants
  (committed FLAC files, see `scripts/make_mmdigits_audio.py`), 16 kHz mono float32,
  placed in a window of `audio_seconds`; in training, random gain (±6 dB) and white noise
  (10-40 dB SNR) are drawn afresh every epoch;
- video: `video_frames` frames (default 16) of the example's digit moving or rotating on a
  `video_size` canvas (`mmrep.data.moving_digits`), uint8 RGB `[T, S, S, 3]`;
- label: int32, the digit.

Splits are stratified by digit and fixed: 70 / 15 / 15 % of each digit's images go to
train / validation / test, 1,258 / 269 / 270 examples (per digit: 122-128 / 26-27 /
26-28; `split_summary()` lists them). No image appears in two splits (the 1,797 images
are pairwise distinct), and the 480 spoken clips (48 voice/speed/pitch variants per
digit) are split the same way, so test audio comes from variants never heard in
training. Everything but the training augmentation is a function of `seed` alone.

Reference:
    Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning
    Repository, 1998 (the images, as bundled by scikit-learn).
"""

import functools
import json
import os

import numpy as np

from mmrep.data.captions import make_captions
from mmrep.data.moving_digits import moving_digit_clips
from mmrep.utils.arguments import check_int

SPLITS = ("train", "validation", "test")
MODALITIES = ("image", "text", "audio", "video")
SAMPLE_RATE = 16000
AUDIO_DIR = os.path.join(os.path.dirname(__file__), "mmdigits_audio")
_FRACTIONS = (0.70, 0.15, 0.15)
_SPLIT_SEED = 20191228  # fixed forever: the splits must not move between releases


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"Expected `split` to be one of {SPLITS}. Received: split={split!r}")


def _stratified(labels, split, seed):
    """Positions of `split` in a 70/15/15 split of each class, in ascending order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_train = round(_FRACTIONS[0] * len(members))
        n_val = round(_FRACTIONS[1] * len(members))
        bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val)}
        start, stop = bounds.get(split, (n_train + n_val, len(members)))
        chosen.append(members[start:stop])
    return np.sort(np.concatenate(chosen))


@functools.cache
def _digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype("float32") / 16.0, bunch.target.astype("int32")


def split_indices(split):
    """Indices into scikit-learn's `load_digits()` of the images in `split`."""
    _check_split(split)
    return _stratified(_digits()[1], split, _SPLIT_SEED)


@functools.cache
def _audio_index():
    with open(os.path.join(AUDIO_DIR, "index.json")) as f:
        index = json.load(f)
    return index["clips"]


@functools.cache
def _audio_clip(file):
    import soundfile

    waveform, rate = soundfile.read(os.path.join(AUDIO_DIR, file), dtype="float32")
    if rate != SAMPLE_RATE or waveform.ndim != 1:
        raise ValueError(f"{file}: expected 16 kHz mono, found {rate} Hz, shape {waveform.shape}")
    return waveform


def audio_clips(split):
    """The committed spoken-digit clips of `split`: `{digit: [file, ...]}`."""
    _check_split(split)
    clips = sorted(_audio_index(), key=lambda c: c["file"])
    labels = np.array([c["digit"] for c in clips])
    chosen = _stratified(labels, split, _SPLIT_SEED + 1)
    pools = {d: [] for d in range(10)}
    for i in chosen:
        pools[int(labels[i])].append(clips[i]["file"])
    return pools


def _rngs(seed, split, count):
    """Independent generators for each modality of a split, all from `seed`."""
    sequence = np.random.SeedSequence([seed, SPLITS.index(split)])
    return [np.random.default_rng(s) for s in sequence.spawn(count)]


def _upsample(images, size):
    from scipy import ndimage

    factor = size / images.shape[-1]
    # grid_mode: pixel areas, not corner pixel centres, map onto each other (no half-pixel shift).
    out = np.stack(
        [ndimage.zoom(image, factor, order=3, grid_mode=True, mode="nearest") for image in images]
    )
    return np.clip(out, 0.0, 1.0)


def _place_audio(files, length, rng, random_offset):
    """Each clip in a zero window of `length` samples, centred or at a random offset."""
    audio = np.zeros((len(files), length), "float32")
    for i, file in enumerate(files):
        clip = _audio_clip(file)[:length]
        room = length - len(clip)
        start = int(rng.integers(room + 1)) if random_offset else room // 2
        audio[i, start : start + len(clip)] = clip
    return audio


@functools.lru_cache(maxsize=4)
def _arrays(split, modalities, image_size, video_frames, video_size, audio_seconds, seed, shift):
    images, digits = _digits()
    indices = split_indices(split)
    labels = digits[indices]
    text_rng, audio_rng, video_rng = _rngs(seed, split, 3)
    arrays = {"label": labels}
    if "image" in modalities:
        gray = np.round(_upsample(images[indices], image_size) * 255).astype("uint8")
        arrays["image"] = np.repeat(gray[..., None], 3, axis=-1)
    if "text" in modalities:
        arrays["text"] = make_captions(labels, int(text_rng.integers(2**31)))
    if "audio" in modalities:
        pools = audio_clips(split)
        files = [pools[d][audio_rng.integers(len(pools[d]))] for d in labels]
        length = round(audio_seconds * SAMPLE_RATE)
        arrays["audio"] = _place_audio(files, length, audio_rng, random_offset=shift)
    if "video" in modalities:
        source = _upsample(images[indices], 32)
        arrays["video"], arrays["motion"] = moving_digit_clips(
            source, video_frames, video_size, int(video_rng.integers(2**31))
        )
    for value in arrays.values():
        value.setflags(write=False)  # cached: callers get views they cannot corrupt
    return arrays


def _augment_audio(example, seed):
    """Random gain and white noise, from a per-example stateless seed."""
    import tensorflow as tf

    audio = example["audio"]
    seeds = tf.random.experimental.stateless_split(tf.stack([seed, seed // 7 + 1]), 3)
    gain_db = tf.random.stateless_uniform([], seeds[0], -6.0, 6.0)
    snr_db = tf.random.stateless_uniform([], seeds[1], 10.0, 40.0)
    power = tf.reduce_mean(tf.square(audio)) + 1e-10
    noise = tf.random.stateless_normal(tf.shape(audio), seeds[2]) * tf.sqrt(
        power / 10 ** (snr_db / 10)
    )
    audio = (audio + noise) * 10 ** (gain_db / 20)
    return {**example, "audio": tf.clip_by_value(audio, -1.0, 1.0)}


def load_mmdigits(
    split="train",
    *,
    modalities=MODALITIES,
    image_size=32,
    video_frames=16,
    video_size=32,
    audio_seconds=1.0,
    augment=None,
    seed=0,
    as_numpy=False,
):
    """Loads a split of mmdigits as a `tf.data.Dataset` of example dicts.

    Args:
        split: str. `"train"`, `"validation"` or `"test"`. Defaults to `"train"`.
        modalities: the modalities to include, any of `("image", "text", "audio",
            "video")`. Defaults to all four.
        image_size: int. Side of the square images. Defaults to `32`.
        video_frames: int. Frames per clip. Defaults to `16`.
        video_size: int. Side of the square video frames. Defaults to `32`.
        audio_seconds: float. Length of the audio window; every clip fits in 1 s, and 0.96 s
            is one VGGish example. Defaults to `1.0`.
        augment: bool or `None`. Audio gain and noise drawn afresh at every pass over the
            data, and clips placed at a random offset. `None` means on for `"train"` only.
        seed: int. Seeds captions, audio pairing and placement, video motion and
            augmentation. Defaults to `0`.
        as_numpy: bool. Return a dict of numpy arrays (one pass of augmentation) instead of
            a dataset. Defaults to `False`.

    Returns:
        An unbatched `tf.data.Dataset` of dicts with the requested modalities and `"label"`
        (int32), in a fixed order; or, with `as_numpy=True`, a dict of arrays.

    Example:

    >>> test = load_mmdigits("test", modalities=("image", "text"))
    >>> example = next(iter(test))
    >>> example["image"].shape, example["text"].dtype
    (TensorShape([32, 32, 3]), tf.string)
    """
    _check_split(split)
    modalities = tuple(modalities)
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown or not modalities:
        raise ValueError(
            f"Expected `modalities` to be a non-empty subset of {MODALITIES}. "
            f"Received: modalities={modalities}"
        )
    image_size = check_int("image_size", image_size, minimum=8)
    video_size = check_int("video_size", video_size, minimum=8)
    video_frames = check_int("video_frames", video_frames, minimum=1)
    if not 0.25 <= audio_seconds <= 10:
        raise ValueError(
            f"Expected `audio_seconds` in [0.25, 10] (clips last up to ~1.5 s). "
            f"Received: audio_seconds={audio_seconds}"
        )
    augment = split == "train" if augment is None else bool(augment)
    arrays = _arrays(
        split,
        tuple(m for m in MODALITIES if m in modalities),
        image_size,
        video_frames,
        video_size,
        float(audio_seconds),
        int(seed),
        augment,
    )
    import tensorflow as tf

    keys = [m for m in MODALITIES if m in modalities] + ["label"]
    dataset = tf.data.Dataset.from_tensor_slices({k: arrays[k] for k in keys})
    if augment and "audio" in modalities:
        # A new stream of per-example seeds at every pass, reproducible from `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            _augment_audio, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    if as_numpy:
        return {
            k: v.numpy()
            for k, v in dataset.batch(len(arrays["label"])).get_single_element().items()
        }
    return dataset


def split_summary():
    """Sizes and per-class counts of each split, for documentation and checks."""
    labels = _digits()[1]
    return {
        split: {
            "size": len(split_indices(split)),
            "per_class": np.bincount(labels[split_indices(split)], minlength=10).tolist(),
        }
        for split in SPLITS
    }
