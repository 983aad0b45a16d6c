"""Loading published VGGish weights into a `VGGish` layer, and the PCA parameters.

Three sources hold the same network:

- the TF1 checkpoint of tensorflow/models (`vggish_model.ckpt`; variables
  `vggish/conv1/weights`, `vggish/conv3/conv3_1/biases`, ..., `vggish/fc2/weights`, with
  kernels `[3, 3, in, out]` and `[in, out]`, Keras's layout);
- the TF2 SavedModel of TF Hub (`google/vggish/1`), whose variables keep those names;
- torchvggish's state dict (`features.{0,3,6,8,11,13}`, `embeddings.{0,2,4}`, kernels
  `[out, in, kh, kw]` and `[out, in]`; its fc1 reads the conv map flattened in NHWC
  order like TF's, so only transposes are needed). A pickle: refused unless the caller
  passes `allow_pickle=True`, and then read with `torch.load(weights_only=True)`.

Every weight of the layer must be found with its shape; a missing, unexpected or
wrongly shaped variable raises `VGGishCheckpointError` listing all of them. Training
bookkeeping (`global_step`, optimizer slots) is left out and reported in the log.
"""

import logging
import os
import re
import sys
import time
import types
from pathlib import Path

import numpy as np
import tensorflow as tf

logger = logging.getLogger("mmrep")

_TRAINING_STATE = re.compile(
    r"(^|/)(global_step|beta[12]_power)$|/(Adam|Adam_\d+|Momentum|RMSProp|RMSProp_\d+)$"
)
_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".pkl")
_PCA_MATRIX_KEYS = ("pca_eigen_vectors", "pproc.pca_matrix", "pproc._pca_matrix")
_PCA_MEANS_KEYS = ("pca_means", "pproc.pca_means", "pproc._pca_means")


class VGGishCheckpointError(ValueError):
    """A weights file is unreadable or does not hold the VGGish the layer expects."""


def checkpoint_name(layer_name, weight):
    """`conv3_1`, `"kernel"` -> `vggish/conv3/conv3_1/weights` (the TF1 name)."""
    scope = f"{layer_name.split('_')[0]}/{layer_name}" if "_" in layer_name else layer_name
    return f"vggish/{scope}/{'weights' if weight == 'kernel' else 'biases'}"


def expected_variables(layer):
    """`{tf1 name: keras variable}` for every weight of the VGGish network."""
    if not layer.built:
        layer.build()
    expected = {}
    for name, sublayer in layer.named_layers.items():
        expected[checkpoint_name(name, "kernel")] = sublayer.kernel
        expected[checkpoint_name(name, "bias")] = sublayer.bias
    return expected


def load_vggish_weights(layer, source, *, allow_pickle=False):
    """Copies the weights of `source` into the VGGish `layer` (built first if needed).

    Args:
        layer: a `VGGish` layer; its widths must match the checkpoint's.
        source: path or handle. A TF1 checkpoint (a single V1 file such as
            `vggish_model.ckpt`, a V2 prefix with `.index`, or a folder with a
            `checkpoint` file); a SavedModel folder (`saved_model.pb`); a TF Hub
            handle such as `https://tfhub.dev/google/vggish/1`, resolved with
            `tensorflow_hub.resolve` (offline, only from its cache `TFHUB_CACHE_DIR`);
            or a torchvggish state dict (`.pth`).
        allow_pickle: bool. Whether a pickled `.pth` may be read. Defaults to `False`.

    Raises:
        VGGishCheckpointError: unreadable source, pickle without `allow_pickle`, or
            missing / unexpected / wrongly shaped variables.
        FileNotFoundError: a local path that does not exist.
    """
    text = os.fspath(source)
    start = time.perf_counter()
    if "://" in text and not os.path.exists(text):
        kind, arrays = "TF Hub SavedModel", _read_saved_model(_resolve_hub(text))
    else:
        path = Path(text)
        if path.is_dir() and (path / "saved_model.pb").is_file():
            kind, arrays = "SavedModel", _read_saved_model(path)
        elif path.suffix.lower() in _PICKLE_SUFFIXES:
            kind = "torchvggish state dict"
            arrays = _torch_to_tf1(layer, _read_torch(path, allow_pickle), path)
        elif path.suffix.lower() == ".npz":
            raise VGGishCheckpointError(
                f"{path}: an .npz holds VGGish's PCA parameters, not the network; load it "
                "with VGGishPostprocess.load_pca_params"
            )
        else:
            kind, arrays = "TF1 checkpoint", _read_tf1_checkpoint(path)
    assign_named(layer, arrays, f"{text} ({kind})")
    logger.info("%s: loaded in %.1f s", text, time.perf_counter() - start)


def assign_named(layer, arrays, source):
    """Assigns `{tf1 name: array}` to `layer` after checking every name and shape."""
    expected = expected_variables(layer)
    ignored = sorted(n for n in arrays if n not in expected and _TRAINING_STATE.search(n))
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected) - set(ignored))
    wrong = {
        name: (tuple(arrays[name].shape), tuple(variable.shape))
        for name, variable in expected.items()
        if name in arrays and tuple(arrays[name].shape) != tuple(variable.shape)
    }
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"missing {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected {_listing(unexpected)}")
        if wrong:
            shapes = [f"{n}: {got} (layer {want})" for n, (got, want) in sorted(wrong.items())]
            problems.append(f"wrong shapes {_listing(shapes)}")
        raise VGGishCheckpointError(
            f"{source}: not the VGGish network of {layer.name} (conv_filters="
            f"{layer.conv_filters}, fc_units={layer.fc_units}, embedding_dim="
            f"{layer.embedding_dim}): " + "; ".join(problems)
        )
    if ignored:
        logger.info("%s: left out training state %s", source, ignored)
    total = sum(int(np.prod(a.shape)) for n, a in arrays.items() if n in expected)
    logger.info(
        "%s: copying %d variables (%.1f M parameters) into %s",
        source,
        len(expected),
        total / 1e6,
        layer.name,
    )
    # Every value is checked before the first is assigned: a refused file changes nothing.
    bad = sorted(n for n in expected if not np.all(np.isfinite(arrays[n])))
    if bad:
        raise VGGishCheckpointError(f"{source}: variables {bad} hold NaN or Inf")
    for name, variable in expected.items():
        variable.assign(np.asarray(arrays[name]).astype(variable.dtype))


def _listing(names, limit=20):
    shown = ", ".join(names[:limit])
    more = f", ... and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}{more}]"


def _read_tf1_checkpoint(path):
    text = str(path)
    if path.is_dir():
        found = tf.train.latest_checkpoint(text)
        if found is None:
            raise VGGishCheckpointError(
                f"{path}: a folder with neither saved_model.pb nor a TF1 `checkpoint` file"
            )
        text = found
    elif not (path.is_file() or Path(text + ".index").is_file()):
        raise FileNotFoundError(f"VGGish weights not found: '{path}'")
    try:
        reader = tf.train.load_checkpoint(text)
    except (tf.errors.OpError, ValueError) as error:
        raise VGGishCheckpointError(
            f"{path}: not a TensorFlow checkpoint ({error.__class__.__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    shapes = reader.get_variable_to_shape_map()
    ignored = sorted(name for name in shapes if _TRAINING_STATE.search(name))
    if ignored:
        logger.info("%s: left out training state %s", text, ignored)
    logger.info("%s: reading %d variables of a TF1 checkpoint", text, len(shapes) - len(ignored))
    return {name: reader.get_tensor(name) for name in shapes if name not in ignored}


def _read_saved_model(path):
    logger.info("%s: loading the SavedModel", path)
    try:
        loaded = tf.saved_model.load(str(path))
    except (tf.errors.OpError, ValueError, OSError) as error:
        raise VGGishCheckpointError(f"{path}: cannot load the SavedModel ({error})") from None
    arrays, seen = {}, set()
    for obj in tf.train.TrackableView(loaded).descendants():
        if not isinstance(obj, tf.Variable) or id(obj) in seen:
            continue
        seen.add(id(obj))
        name = obj.name.split(":")[0]
        if name in arrays:
            raise VGGishCheckpointError(f"{path}: two variables are named {name!r}")
        arrays[name] = obj.numpy()
    return arrays


def _resolve_hub(handle):
    """The local SavedModel folder of a TF Hub handle: from the TF Hub cache, else
    downloaded into it by `tensorflow_hub` (which needs the network)."""
    from mmrep.encoders.saved_model_handles import (
        cached_hub_folder,
        fill_cache_hint,
        hub_cache_folder,
    )

    cached = cached_hub_folder(handle)
    if cached is not None:
        return str(cached)
    folder = hub_cache_folder(handle)
    hub = _import_tensorflow_hub()
    logger.info("%s: not in the TF Hub cache; downloading it to %s", handle, folder)
    try:
        return hub.resolve(handle)
    except (OSError, ValueError, tf.errors.OpError) as error:  # URLError is an OSError
        raise VGGishCheckpointError(
            f"VGGish weights {handle!r}: not in the TF Hub cache (looked for the folder "
            f"'{folder}', cache '{folder.parent}', set by TFHUB_CACHE_DIR) and downloading "
            f"them failed: {type(error).__name__}: {error}. To provide them, "
            f"{fill_cache_hint(handle, folder)}; or pass a local SavedModel folder or the TF1 "
            "checkpoint `vggish_model.ckpt`."
        ) from error


def _import_tensorflow_hub():
    if "tensorflow_hub" in sys.modules:
        return sys.modules["tensorflow_hub"]
    try:
        import tensorflow_hub
    except ModuleNotFoundError as error:
        if error.name != "pkg_resources":
            raise
        # tensorflow_hub 0.16 imports pkg_resources (gone from setuptools >= 81) only to
        # compare TensorFlow's version while it is imported; lend it that one function.
        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        sys.modules["pkg_resources"] = shim
        try:
            import tensorflow_hub
        finally:
            if sys.modules.get("pkg_resources") is shim:
                del sys.modules["pkg_resources"]
    return tensorflow_hub


def _read_torch(path, allow_pickle):
    if not path.is_file():
        raise FileNotFoundError(f"VGGish weights not found: '{path}'")
    if not allow_pickle:
        raise VGGishCheckpointError(
            f"{path}: a PyTorch pickle, and unpickling can run code. Pass "
            "allow_pickle=True if you trust the file."
        )
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path}: reading a PyTorch state dict needs `torch`") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file
        raise VGGishCheckpointError(f"{path}: cannot read the state dict ({error})") from None
    if not isinstance(state, dict):
        raise VGGishCheckpointError(
            f"{path}: expected a state dict (name -> tensor). Received: {type(state).__name__}"
        )
    return {
        k: v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)
        for k, v in state.items()
    }


def _torch_to_tf1(layer, state, path):
    """torchvggish keys and layouts -> TF1 names and layouts, for `assign_named`."""
    # torchvggish's nn.Sequential indices: each conv is followed by a ReLU, each stage by
    # a max pool; each linear layer by a ReLU.
    conv_index, index = [], 0
    for count in layer._conv_stages:
        for _ in range(count):
            conv_index.append(index)
            index += 2
        index += 1
    convs = [n for n in layer.named_layers if n.startswith("conv")]
    denses = [n for n in layer.named_layers if n.startswith("fc")]
    names = {f"features.{i}": n for i, n in zip(conv_index, convs, strict=True)}
    names.update({f"embeddings.{2 * i}": n for i, n in enumerate(denses)})
    pca = [k for k in state if k.startswith("pproc.")]
    if pca:
        logger.info("%s: left out %s (load them with VGGishPostprocess.load_pca_params)", path, pca)
    arrays = {}
    for key, value in state.items():
        if key in pca:
            continue
        prefix, _, kind = key.rpartition(".")
        if prefix in names and kind in ("weight", "bias"):
            if kind == "weight":
                value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
            arrays[checkpoint_name(names[prefix], "kernel" if kind == "weight" else "bias")] = value
        else:
            arrays[key] = value  # reported as unexpected under its own name
    return arrays


def read_pca_params(path, *, allow_pickle=False):
    """`(pca_eigen_vectors [D, D], pca_means [D])` from the `.npz` release or a `.pth`."""
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"PCA parameters not found: '{path}'")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        params = _read_torch(path, allow_pickle)
    else:
        try:
            with np.load(path, allow_pickle=False) as data:
                params = {k: data[k] for k in data.files}
        except (OSError, ValueError) as error:
            raise VGGishCheckpointError(f"{path}: not an .npz file ({error})") from None
    matrix = next((params[k] for k in _PCA_MATRIX_KEYS if k in params), None)
    means = next((params[k] for k in _PCA_MEANS_KEYS if k in params), None)
    if matrix is None or means is None:
        raise VGGishCheckpointError(
            f"{path}: expected PCA parameters under {_PCA_MATRIX_KEYS[0]!r} and "
            f"{_PCA_MEANS_KEYS[0]!r}. Received keys: {sorted(params)}"
        )
    return np.asarray(matrix), np.asarray(means).reshape(-1)
