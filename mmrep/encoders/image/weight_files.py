"""Reading Keras weight files into `{layer name: [arrays]}`, without building their model.

Three layouts hold the weights of a keras.applications model:

- legacy HDF5 (`.h5`): what keras.applications downloads (`*_notop.h5` and the full
  files) and what Keras 2's `save_weights` / `model.save("x.h5")` write. The root (or its
  `model_weights` group, for a whole saved model) lists the layers in `layer_names`; each
  layer's group lists its arrays in `weight_names` (trainable first, then the others).
- Keras 3 `.weights.h5`: `layers/<key>/vars/<i>`, where `<key>` is not the layer's name
  but its class in snake case, numbered in the order of `model.layers`
  (`conv2d`, `conv2d_1`, ...), and `<i>` follows `layer.weights`.
- Keras 3 `.keras`: a zip holding `config.json` (the model's layers, named and in order)
  and `model.weights.h5` in the layout above, so its keys can be named.

The format is recognised from the content, not the suffix. `keras_layer_keys` gives the
`.weights.h5` key of every layer of a model, to name the keys of a file that has no config.
"""

import io
import json
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np


class ImageWeightsError(ValueError):
    """A weights file is unreadable or does not hold the backbone the encoder expects."""


def snake_case(name):
    """Keras's `to_snake_case` for class names: `Conv2D` -> `conv2d`.

    Args:
        name: str, a class name.

    Returns:
        str, the name Keras files and auto-named layers use for the class.
    """
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
    return name[1:] if name.startswith("_") else name


def keras_layer_keys(class_names):
    """The `.weights.h5` keys of a model's layers (Keras's saving_lib numbering).

    Args:
        class_names: the class name of every layer of `model.layers`, in order.

    Returns:
        A list of keys such as `["input_layer", "conv2d", "conv2d_1", ...]`.
    """
    used, keys = {}, []
    for class_name in class_names:
        base = snake_case(class_name)
        if base in used:
            used[base] += 1
            keys.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            keys.append(base)
    return keys


def read_weight_file(path):
    """Reads a weights file into `(kind, layers, keyed_by_class)`.

    Args:
        path: `Path` of an existing file.

    Returns:
        `kind` (a description of the format), `layers` (an insertion-ordered dict from
        the layer name, or for a `.weights.h5` file its class key, to the list of its
        arrays; layers without weights are left out), and `keyed_by_class` (True for a
        `.weights.h5` file, whose keys are class keys rather than names).

    Raises:
        ImageWeightsError: if the file is neither a `.keras` archive nor an HDF5 file in
            one of the layouts above.
    """
    if zipfile.is_zipfile(path):
        return "Keras .keras archive", _read_keras_archive(path), False
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ImageWeightsError(
            f"{path}: neither a .keras archive nor an HDF5 weights file ({error})"
        ) from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if _has_attr(root, "layer_names"):
            return "legacy Keras HDF5 weights", _read_legacy(root, path), False
        if isinstance(handle.get("layers"), h5py.Group):
            return "Keras .weights.h5", _read_keras_layers(handle, path), True
        keys = sorted(handle.keys())
    raise ImageWeightsError(
        f"{path}: an HDF5 file in no Keras weights layout (expected a `layer_names` "
        "attribute, as in keras.applications' .h5 files, or a `layers` group, as in "
        f"Keras 3 .weights.h5 files). Received top-level keys: {keys}"
    )


def _has_attr(group, name):
    return name in group.attrs or f"{name}0" in group.attrs


def _read_attr(group, name):
    """A list-of-strings attribute, possibly chunked (`name0`, `name1`, ...) by Keras."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _read_legacy(root, path):
    layers = {}
    for name in _read_attr(root, "layer_names"):
        if name not in root:
            raise ImageWeightsError(f"{path}: layer {name!r} is listed but has no group")
        group = root[name]
        weight_names = _read_attr(group, "weight_names")
        try:
            arrays = [np.asarray(group[weight]) for weight in weight_names]
        except KeyError as error:
            raise ImageWeightsError(f"{path}: layer {name!r} lacks a weight ({error})") from None
        if arrays:
            layers[name] = arrays
    return layers


def _read_keras_layers(handle, path):
    layers = {}
    for key, group in handle["layers"].items():
        arrays = _read_vars(group, f"{path}: layers/{key}")
        if arrays:
            layers[key] = arrays
    return layers


def _read_vars(group, where):
    variables = group.get("vars")
    if not isinstance(variables, h5py.Group):
        nested = sorted(k for k in group if k != "vars")
        if nested:
            raise ImageWeightsError(
                f"{where}: a nested model ({nested}); save the backbone itself, or load "
                "the whole model with keras.models.load_model"
            )
        return []
    count = len(variables)
    if sorted(variables) != sorted(str(i) for i in range(count)):
        raise ImageWeightsError(f"{where}: unexpected variable keys {sorted(variables)}")
    return [np.asarray(variables[str(i)]) for i in range(count)]


def _read_keras_archive(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names or "model.weights.h5" not in names:
                raise ImageWeightsError(
                    f"{path}: a zip without config.json and model.weights.h5, not a .keras "
                    f"model (sharded weights are not supported). Received: {sorted(names)}"
                )
            config = json.loads(archive.read("config.json"))
            weights = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise ImageWeightsError(f"{path}: unreadable .keras archive ({error})") from None
    layer_configs = config.get("config", {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layer_configs, list):
        raise ImageWeightsError(
            f"{path}: expected a saved functional model such as a keras.applications "
            f"backbone. Received: a {config.get('class_name')!r} without a layer list"
        )
    names = [layer["config"].get("name", layer.get("name")) for layer in layer_configs]
    keys = keras_layer_keys([layer["class_name"] for layer in layer_configs])
    with h5py.File(io.BytesIO(weights), "r") as handle:
        if not isinstance(handle.get("layers"), h5py.Group):
            raise ImageWeightsError(f"{path}: model.weights.h5 has no `layers` group")
        keyed = _read_keras_layers(handle, Path(path).name)
    unknown = sorted(set(keyed) - set(keys))
    if unknown:
        raise ImageWeightsError(
            f"{path}: weights for layers {unknown} that config.json does not list"
        )
    return {name: keyed[key] for name, key in zip(names, keys, strict=True) if key in keyed}
