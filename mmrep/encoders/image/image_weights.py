"""Loading local weight files into an image backbone, every layer checked before any is set.

`resolve_weights` checks the `weights` argument of `ImageEncoder`: a local file, or
`"imagenet"`, keras.applications' no-top ImageNet file of the backbone, read from Keras's
cache (`$KERAS_HOME/models/`, by default `~/.keras/models/`) where keras.applications keeps
it, else downloaded into that cache with its MD5 checked, as keras.applications does (URLs
are refused: their content is not known to fit); `load_backbone_weights`
reads the file (see `weight_files` for the three layouts) and matches it to the backbone by
layer name. A file of another backbone, width multiplier or depth leaves some layers
missing, unexpected or wrongly shaped; all of them are listed in one `ImageWeightsError` and
nothing is assigned. The classification top of a full (`include_top=True`) file is set
aside. Layers that keras.applications leaves unnamed (EfficientNet's `Normalization`, named
`normalization`, `normalization_1`, ... in the order a process creates them) are matched by
their base name and order.

EfficientNet's ImageNet files store the per-channel standard deviations of ImageNet,
`(0.229, 0.224, 0.225)`, as the variance of that `Normalization` layer, which divides by the
square root of its variance; keras.applications adds a `Rescaling(1 / sqrt(stddev))` after it
only when it downloads the weights itself (tensorflow/tensorflow#49930). Loading such a file,
the variance is squared instead, so that the encoder computes `(x / 255 - mean) / stddev`,
exactly what `EfficientNetB0(weights="imagenet")` computes. The change is logged, and travels
in the encoder's own saved weights.
"""

import logging
import os
import re
import time
from pathlib import Path

import keras
import numpy as np

from mmrep.encoders.image.backbones import BACKBONES, get_backbone
from mmrep.encoders.image.weight_files import (
    ImageWeightsError,
    keras_layer_keys,
    read_weight_file,
    snake_case,
)

logger = logging.getLogger("mmrep")

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def resolve_weights(weights, spec):
    """The local file `weights` names, or `None` for random initialisation.

    Args:
        weights: `None`, `"imagenet"` (keras.applications' ImageNet weights of the
            backbone, from Keras's cache or downloaded into it), or a path (str or
            `os.PathLike`) to a `.h5`, `.keras` or `.weights.h5` file.
        spec: the `BackboneSpec` the weights are for (named in the messages).

    Returns:
        `None` or the `Path` of an existing file.

    Raises:
        ValueError: for a URL, `"imagenet"` for a backbone without ImageNet weights, or
            a value that is not a path.
        FileNotFoundError: if the file does not exist.
        ImageWeightsError: `"imagenet"` neither cached nor downloadable (offline); the
            message names the file, the cache searched and how to fill it.
    """
    if weights is None:
        return None
    if not isinstance(weights, str | os.PathLike):
        raise ValueError(
            "Expected `weights` to be None or the path of a local .h5, .keras or "
            f".weights.h5 file. Received: weights={weights!r}"
        )
    text = os.fspath(weights)
    if text.lower() == "imagenet":
        return imagenet_weights(spec)
    if "://" in text:
        raise ValueError(
            f"Expected `weights` to be None, 'imagenet' or a local file. Received the URL "
            f"{text!r}: download the file and pass its path (a keras.applications .h5, a "
            ".keras model or a .weights.h5 file)."
        )
    path = Path(text).expanduser()
    if path.is_dir():
        raise ValueError(
            f"Expected `weights` to name a file (.h5, .keras or .weights.h5). "
            f"Received: the folder '{path}'"
        )
    if not path.is_file():
        raise FileNotFoundError(f"Image backbone weights not found: '{path}'")
    return path


def keras_cache_dir():
    """The folder Keras caches downloads in: `$KERAS_HOME`, else `~/.keras` (or
    `/tmp/.keras` when the home folder is not writable), as `keras.utils.get_file` has it."""
    if os.environ.get("KERAS_HOME"):
        return Path(os.environ["KERAS_HOME"])
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def imagenet_weights(spec):
    """The local path of keras.applications' no-top ImageNet file for `spec`.

    Read from Keras's cache (`keras_cache_dir() / "models"`) when it is there; else
    downloaded into it by `keras.utils.get_file`, which checks the file's MD5.

    Raises:
        ValueError: if the backbone has no ImageNet weights.
        ImageWeightsError: if the file is not cached and cannot be downloaded.
    """
    if not spec.imagenet_file:
        with_weights = sorted(name for name, s in BACKBONES.items() if s.imagenet_file)
        raise ValueError(
            f"Backbone {spec.name!r} has no ImageNet weights; these do: {with_weights}. "
            "Received: weights='imagenet'"
        )
    cache = keras_cache_dir()
    cached = cache / "models" / spec.imagenet_file
    if cached.is_file():
        logger.info("%s ImageNet weights: %s (Keras cache)", spec.name, cached)
        return cached
    logger.info("%s ImageNet weights: downloading %s to %s", spec.name, spec.imagenet_url, cached)
    # get_file falls back to /tmp/.keras for a cache folder it cannot write, which
    # includes one that does not exist yet.
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    try:
        path = keras.utils.get_file(
            spec.imagenet_file,
            spec.imagenet_url,
            cache_dir=str(cache),
            cache_subdir="models",
            file_hash=spec.imagenet_md5 or None,
        )
    except Exception as error:  # get_file wraps network failures in a bare Exception
        raise ImageWeightsError(
            f"ImageNet weights of {spec.name}: {spec.imagenet_file!r} is not in the Keras "
            f"cache (looked for '{cached}'; the cache is $KERAS_HOME, else ~/.keras) and "
            f"downloading {spec.imagenet_url} failed: {error}. On a machine with network, "
            f"run `ImageEncoder({spec.name!r}, weights='imagenet')` once (or download that "
            f"URL) and copy the file to '{cached}', or pass the file's path as `weights`."
        ) from error
    return Path(path)


def load_backbone_weights(model, spec, path, backbone_kwargs=None):
    """Copies the weights in the file `path` into the backbone `model`.

    Args:
        model: the backbone (a functional `keras.Model` built by `spec`), such as
            `ImageEncoder.backbone_model`.
        spec: its `BackboneSpec`, or the name of one.
        path: `Path` of the file: legacy HDF5 `.h5` (keras.applications' no-top or full
            files, Keras 2 `save_weights`, `model.save("x.h5")`), a `.keras` saved
            functional model, or a Keras 3 `.weights.h5` (of the no-top or the full
            model).
        backbone_kwargs: dict or `None`, the builder arguments, named in error messages.

    Raises:
        ImageWeightsError: if the file cannot be read, holds another network (missing,
            unexpected or wrongly shaped layers), or holds NaN or Inf.
    """
    if isinstance(spec, str):
        spec = get_backbone(spec)
    start = time.perf_counter()
    kind, layers, keyed_by_class = read_weight_file(path)
    source = f"{path} ({kind})"
    if keyed_by_class:
        layers = _name_class_keys(model, spec, layers)
    pairs, skipped, problems = _match(model, spec, layers)
    if problems:
        described = f"{spec.name!r}" + (f" with {backbone_kwargs}" if backbone_kwargs else "")
        note = (
            " (a .weights.h5 file keys layers by class and position, so they are matched "
            "by position)"
            if keyed_by_class
            else ""
        )
        raise ImageWeightsError(
            f"{source}: not the weights of backbone {described}{note}: " + "; ".join(problems)
        )
    bad = sorted(name for name, (_, arrays) in pairs.items() if not _all_finite(arrays))
    if bad:
        raise ImageWeightsError(f"{source}: layers {bad} hold NaN or Inf")
    if skipped:
        logger.info("%s: set aside the classification top %s", source, skipped)
    _fix_imagenet_normalization(pairs, source)
    for layer, arrays in pairs.values():
        for variable, array in zip(layer.weights, arrays, strict=True):
            variable.assign(np.asarray(array).astype(variable.dtype))
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    total = sum(int(np.prod(a.shape)) for _, arrays in pairs.values() for a in arrays)
    logger.info(
        "%s: loaded %d layers (%.2f M values) into %s in %.1f s",
        source,
        len(pairs),
        total / 1e6,
        spec.name,
        time.perf_counter() - start,
    )


def _name_class_keys(model, spec, layers):
    """`.weights.h5` class keys -> this backbone's layer names (and its top layers')."""
    classes = [type(layer).__name__ for layer in model.layers]
    names = [layer.name for layer in model.layers]
    # A full model's top comes after every layer of the no-top one, so its keys continue
    # the numbering of their classes.
    classes += [class_name for _, class_name in spec.top_layers]
    names += [name for name, _ in spec.top_layers]
    name_of = dict(zip(keras_layer_keys(classes), names, strict=True))
    return {name_of.get(key, f"layers/{key}"): arrays for key, arrays in layers.items()}


def _auto_base(layer):
    """`"normalization"` for a layer Keras named after its class, else `None`."""
    base = snake_case(type(layer).__name__)
    return base if re.fullmatch(rf"{re.escape(base)}(_\d+)?", layer.name) else None


def _match(model, spec, layers):
    """`({name: (layer, arrays)}, skipped top layers, [problems])`."""
    expected = {layer.name: layer for layer in model.layers if layer.weights}
    pairs = {name: (layer, layers[name]) for name, layer in expected.items() if name in layers}
    missing = [name for name in expected if name not in layers]
    left = [name for name in layers if name not in expected]
    for name in list(missing):
        base = _auto_base(expected[name])
        same_base = [n for n in left if base and re.fullmatch(rf"{re.escape(base)}(_\d+)?", n)]
        if same_base:
            pairs[name] = (expected[name], layers[same_base[0]])
            missing.remove(name)
            left.remove(same_base[0])
    top = {name for name, _ in spec.top_layers}
    skipped = [name for name in left if name in top]
    unexpected = [name for name in left if name not in top]
    wrong = []
    for name, (layer, arrays) in pairs.items():
        if len(arrays) != len(layer.weights):
            wrong.append(f"{name}: {len(arrays)} array(s) (layer {len(layer.weights)})")
            continue
        # One entry per layer: its first misshapen variable.
        for variable, array in zip(layer.weights, arrays, strict=True):
            if tuple(array.shape) != tuple(variable.shape):
                wrong.append(
                    f"{name}/{variable.name}: {tuple(array.shape)} (layer {tuple(variable.shape)})"
                )
                break
    problems = []
    if missing:
        blocks = list(dict.fromkeys(spec.block_of(name) or name for name in missing))
        problems.append(
            f"missing {len(missing)} layers (of blocks {_listing(blocks)}) {_listing(missing)}"
        )
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} layers {_listing(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes in {len(wrong)} layers {_listing(wrong)}")
    return pairs, skipped, problems


def _fix_imagenet_normalization(pairs, source):
    for name, (layer, arrays) in list(pairs.items()):
        if not isinstance(layer, keras.layers.Normalization) or len(arrays) < 2:
            continue
        mean, variance = np.asarray(arrays[0]), np.asarray(arrays[1])
        if (
            mean.shape == (3,)
            and variance.shape == (3,)
            and np.allclose(mean, IMAGENET_MEAN_RGB, rtol=0, atol=1e-6)
            and np.allclose(variance, IMAGENET_STDDEV_RGB, rtol=0, atol=1e-6)
        ):
            pairs[name] = (layer, [mean, np.square(variance), *arrays[2:]])
            logger.info(
                "%s: layer %s holds ImageNet standard deviations as its variance "
                "(tensorflow/tensorflow#49930); squared them, as keras.applications "
                "compensates for weights='imagenet'",
                source,
                name,
            )


def _all_finite(arrays):
    return all(
        np.all(np.isfinite(a)) for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)
    )


def _listing(names, limit=12):
    shown = ", ".join(names[:limit])
    more = f", ... and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}{more}]"
