"""Finding and reading a SavedModel: handle -> local folder -> loaded object -> its function.

Where a handle lives on disk: a local folder or TF Hub's cache, never the network.

A handle is either a local path or a model URL (`https://tfhub.dev/google/...`,
`https://www.kaggle.com/models/...`). A URL is looked up in the folder where
`tensorflow_hub` caches compressed downloads: `<cache>/<sha1(handle)>`, the hex SHA-1 of
the handle's UTF-8 bytes (tensorflow_hub/compressed_module_resolver.py, `_module_dir`),
counted as present when that folder exists and is not empty (resolver.py,
`atomic_download`). The cache is the `cache_dir` argument, else the `TFHUB_CACHE_DIR`
environment variable, else tensorflow_hub's default `<system temp>/tfhub_modules`. A
handle that is not there is an error: nothing here opens a connection.

`read_endpoint` then describes the function a `SavedModelEncoder` calls: a signature, or
the restored `__call__` of a Reusable SavedModel (tensorflow.org/hub/reusable_saved_models),
with its input and output specs and the variables it reads.
"""

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import tensorflow as tf
from google.protobuf.message import DecodeError

logger = logging.getLogger("mmrep")

_URL_SCHEMES = ("http://", "https://")
_HUB_CACHE_ENV = "TFHUB_CACHE_DIR"


class SavedModelError(ValueError):
    """A handle or folder that does not hold a TF2 SavedModel this layer can use."""


def hub_cache_dir(cache_dir=None):
    """The TF Hub cache folder: `cache_dir`, else `$TFHUB_CACHE_DIR`, else tensorflow_hub's default.

    Args:
        cache_dir: str, path or `None`. An explicit cache folder.

    Returns:
        A `Path` (which may not exist).
    """
    if cache_dir is not None:
        return Path(os.fspath(cache_dir)).expanduser()
    from_env = os.environ.get(_HUB_CACHE_ENV, "")
    if from_env:
        return Path(from_env).expanduser()
    return Path(tempfile.gettempdir()) / "tfhub_modules"


def hub_cache_folder(handle, cache_dir=None):
    """The folder in which tensorflow_hub caches the model of the URL `handle`.

    Args:
        handle: str. A model URL, exactly as it would be given to `hub.resolve`.
        cache_dir: str, path or `None`. See `hub_cache_dir`.

    Returns:
        `Path` `<cache>/<sha1 hex of handle>`.
    """
    return hub_cache_dir(cache_dir) / hashlib.sha1(handle.encode("utf8")).hexdigest()


def cached_hub_folder(handle, cache_dir=None):
    """The model of the URL `handle` in the TF Hub cache: its folder, or `None` if absent.

    A folder tensorflow_hub has created but not filled (an interrupted download) counts
    as absent.
    """
    folder = hub_cache_folder(handle, cache_dir)
    if folder.is_dir() and any(folder.iterdir()):
        logger.info("%s: found in the TF Hub cache at %s", handle, folder)
        return folder
    return None


def fill_cache_hint(handle, folder):
    """How to put the model of `handle` into the TF Hub cache folder `folder` by hand."""
    return (
        "download it once where there is network, e.g. "
        f'`TFHUB_CACHE_DIR={folder.parent} python -c "import tensorflow_hub as hub; '
        f"hub.resolve('{handle}')\"`, and copy that cache here; or extract the model's "
        f".tar.gz into '{folder}'"
    )


def resolve_handle(handle, cache_dir=None):
    """The local folder that `handle` names, without any network access.

    Args:
        handle: str or path. A local SavedModel folder, or an `http(s)://` model URL
            (TF Hub or Kaggle) whose download is in the TF Hub cache.
        cache_dir: str, path or `None`. The TF Hub cache; see `hub_cache_dir`.

    Returns:
        A `Path` to an existing folder or file.

    Raises:
        TypeError: `handle` is neither a string nor a path.
        FileNotFoundError: a local path that does not exist, or a URL that is not cached;
            the message says where it was looked for and how to provide it.
        SavedModelError: another remote scheme (such as `gs://`), which would need the
            network.
    """
    if not isinstance(handle, (str, os.PathLike)):
        raise TypeError(
            f"Expected `handle` to be a path or a model URL (str). Received: {handle!r}"
        )
    text = os.fspath(handle)
    if text.startswith(_URL_SCHEMES):
        folder = cached_hub_folder(text, cache_dir)
        if folder is not None:
            return folder
        folder = hub_cache_folder(text, cache_dir)
        source = "cache_dir argument" if cache_dir is not None else _cache_source()
        raise FileNotFoundError(
            f"SavedModel handle {text!r} is not in the TF Hub cache: looked for the folder "
            f"'{folder}' (cache '{folder.parent}', from the {source}). mmrep never downloads. "
            f"To provide it, either {fill_cache_hint(text, folder)}; or pass the extracted "
            "SavedModel folder as `handle`."
        )
    if "://" in text:
        raise SavedModelError(
            f"SavedModel handle {text!r}: remote storage would need the network. Expected a "
            "local folder or an http(s):// model URL that is in the TF Hub cache; copy the "
            "SavedModel folder to local disk and pass its path."
        )
    path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"SavedModel folder not found: '{path}'")
    return path


def check_saved_model_folder(path):
    """Raises unless `path` is a folder holding a TF2-loadable SavedModel.

    Args:
        path: `Path` to an existing file or folder.

    Raises:
        SavedModelError: a file, a folder without `saved_model.pb`, or a TF1 Hub module.
    """
    if not path.is_dir():
        raise SavedModelError(
            f"'{path}': expected a SavedModel folder (holding saved_model.pb and "
            "variables/). Received a file."
        )
    if (path / "tfhub_module.pb").is_file():
        raise SavedModelError(
            f"'{path}': a TF1 Hub module (tfhub_module.pb), made for `hub.Module` in "
            "TensorFlow 1 graphs; it cannot be called from TF2. Use the TF2 SavedModel "
            "version of the model (on tfhub.dev / Kaggle: the 'TF2' format)."
        )
    if not any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
        found = sorted(p.name for p in path.iterdir())[:10]
        raise SavedModelError(
            f"'{path}': not a SavedModel. Expected saved_model.pb (and variables/). "
            f"Received a folder holding {found or 'nothing'}"
        )


def load_saved_model(handle, cache_dir=None):
    """Resolves `handle` and loads it with `tf.saved_model.load`.

    Args:
        handle: str or path. See `resolve_handle`.
        cache_dir: str, path or `None`. The TF Hub cache; see `hub_cache_dir`.

    Returns:
        `(loaded object, folder Path)`.

    Raises:
        FileNotFoundError, SavedModelError: see `resolve_handle`,
            `check_saved_model_folder`; also a SavedModel TensorFlow cannot read.
    """
    path = resolve_handle(handle, cache_dir)
    check_saved_model_folder(path)
    logger.info("%s: loading the SavedModel", path)
    try:
        loaded = tf.saved_model.load(str(path))
    except (tf.errors.OpError, ValueError, OSError, DecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SavedModelError(
            f"'{path}': cannot load the SavedModel ({type(error).__name__}: {first_line})"
        ) from None
    return loaded, path


def _cache_source():
    if os.environ.get(_HUB_CACHE_ENV):
        return f"{_HUB_CACHE_ENV} environment variable"
    return f"default, since neither cache_dir nor {_HUB_CACHE_ENV} is set"


class TracedForm(NamedTuple):
    """One traced form of a SavedModel function.

    Attributes:
        inputs: a `tf.TensorSpec`, or a dict `{name: tf.TensorSpec}`.
        training: the `training` value it was traced for, or `None`.
        outputs: a structure of objects with `.shape` and `.dtype`.
    """

    inputs: Any
    training: bool | None
    outputs: Any


class Endpoint(NamedTuple):
    """The function a `SavedModelEncoder` calls, as `read_endpoint` found it.

    Attributes:
        forms: list of `TracedForm`, one per traced input signature.
        variables: list of the `tf.Variable`s the function reads, without repeats.
        trainable_ids: set of `id()`s of those meant to be trained.
        takes_training: bool. Whether the function takes a `training` argument.
    """

    forms: list
    variables: list
    trainable_ids: set
    takes_training: bool


def read_endpoint(loaded, signature, folder):
    """Describes the signature `signature` of `loaded`, or its `__call__` when `None`.

    For a signature, variables are trainable as the SavedModel marks them. For
    `__call__`, the Reusable SavedModel's `trainable_variables` list decides when the
    object has one.

    Args:
        loaded: the object `tf.saved_model.load` returned.
        signature: str or `None`.
        folder: `Path`, for messages.

    Returns:
        An `Endpoint`.

    Raises:
        SavedModelError: an unknown signature (the available ones are listed), no
            `__call__`, or a `__call__` whose first argument is not a tensor or a flat
            dict of tensors.
    """
    if signature is not None:
        available = sorted(loaded.signatures.keys())
        if signature not in loaded.signatures:
            hint = "" if available else " (none; signature=None calls `__call__`)"
            raise SavedModelError(
                f"'{folder}': unknown signature={signature!r}. Available signatures: "
                f"{available}{hint}"
            )
        function = loaded.signatures[signature]
        _, inputs = function.structured_input_signature
        return Endpoint(
            forms=[TracedForm(dict(inputs), None, function.structured_outputs)],
            variables=list(function.variables),
            trainable_ids={id(v) for v in function.trainable_variables},
            takes_training=False,
        )
    # The restored tf.function, when the object was saved with one (not `callable()`).
    function = getattr(loaded, "__call__", None)  # noqa: B004
    traced_functions = getattr(function, "concrete_functions", None)
    if not traced_functions:
        raise SavedModelError(
            f"'{folder}': signature=None calls the restored object's `__call__`, but it has "
            f"none. Available signatures: {sorted(loaded.signatures.keys())}"
        )
    function_type = getattr(function, "function_type", None)
    params = list(function_type.parameters) if function_type is not None else []
    forms, variables, seen = [], [], set()
    for traced in traced_functions:
        args, kwargs = traced.structured_input_signature
        bound = {**dict(zip(params, args, strict=False)), **kwargs}
        first = args[0] if args else bound.get(params[0] if params else None)
        training = bound.get("training")
        if _is_spec_structure(first):
            training = training if isinstance(training, bool) else None
            forms.append(TracedForm(first, training, traced.structured_outputs))
        for variable in traced.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    if not forms:
        raise SavedModelError(
            f"'{folder}': `__call__` takes inputs of the form "
            f"{[t.structured_input_signature for t in traced_functions]}; SavedModelEncoder "
            "feeds a tensor or a flat dict of tensors as its first argument."
        )
    listed = getattr(loaded, "trainable_variables", None)
    if isinstance(listed, (list, tuple)):
        trainable_ids = {id(v) for v in listed}
    else:
        trainable_ids = {id(v) for v in variables if v.trainable}
    return Endpoint(forms, variables, trainable_ids, "training" in params)


def _is_spec_structure(value):
    if isinstance(value, tf.TensorSpec):
        return True
    return isinstance(value, dict) and all(isinstance(v, tf.TensorSpec) for v in value.values())
