"""What a SavedModel needs at run time beyond TensorFlow: the packages of its custom ops.

A model whose graph holds `tensorflow_text` ops (mmrep's in-graph WordPiece tokenizer:
`RegexSplitWithOffsets`, `FastWordpieceTokenizeWithOffsets`, ...) loads only in a process
that has imported `tensorflow_text`, which registers them; otherwise TensorFlow refuses
it with "Op type not registered". `export_saved_model` records the ops and packages in
`assets.extra/mmrep.json` (`custom_ops`, `requires`), and `embed_manifest` imports the
packages before loading, or names the one missing.
"""

import importlib
import os
import re
import sys

from mmrep.export.errors import MissingDependencyError, ServingError

# Packages that register ops a mmrep export may hold, and the pip name to install.
PACKAGES = {"tensorflow_text": "tensorflow-text"}
_UNREGISTERED = re.compile(r"Op type not registered '([^']+)'")


def graph_ops(folder):
    """The op types of a SavedModel's graphs and functions.

    Args:
        folder: str. A SavedModel folder (holding `saved_model.pb`).

    Returns:
        A sorted list of op type names.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel()
    with open(os.path.join(folder, "saved_model.pb"), "rb") as f:
        model.ParseFromString(f.read())
    ops = set()
    for meta_graph in model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return sorted(ops)


def custom_ops(folder):
    """The op types of a SavedModel that core TensorFlow does not define."""
    import tensorflow as tf

    return [op for op in graph_ops(folder) if not hasattr(tf.raw_ops, op)]


def _owner(op):
    """The loaded package (among `PACKAGES`) that registered `op`, or `None`."""
    from tensorflow.python.framework import op_def_registry

    if op_def_registry.get(op) is None:
        return None
    for package in PACKAGES:
        if package in sys.modules:
            return package
    return None


def requirements(folder):
    """`(custom ops, packages)` a SavedModel needs: what `mmrep.json` records.

    A custom op is credited to a package of `PACKAGES` that the exporting process has
    loaded; an op no such package explains is listed without one.
    """
    ops = custom_ops(folder)
    packages = sorted({p for p in map(_owner, ops) if p is not None})
    return ops, packages


def import_requirements(description, folder):
    """Imports the packages an export records under `requires`.

    Raises:
        MissingDependencyError: a package is not installed; the message names it and
            how to install it.
    """
    for package in (description or {}).get("requires", []):
        try:
            importlib.import_module(package)
        except ImportError as error:
            raise MissingDependencyError(
                f"the SavedModel in {folder} needs the package {package!r} (its graph holds "
                f"{package} ops), which is not installed: pip install "
                f"{PACKAGES.get(package, package)}"
            ) from error


def load_saved_model(folder, description=None):
    """`tf.saved_model.load(folder)` after importing what it needs; errors made clear.

    An export without `requires` (written before mmrep recorded it) that fails with an
    unregistered op is retried after importing every package of `PACKAGES` installed.

    Raises:
        MissingDependencyError: a recorded package is not installed.
        ServingError: the folder cannot be loaded (a truncated or corrupt SavedModel,
            or an op no known package registers: the op named).
    """
    import tensorflow as tf

    import_requirements(description, folder)
    tried = False
    while True:
        try:
            return tf.saved_model.load(folder)
        except (OSError, ValueError, RuntimeError, tf.errors.OpError) as error:
            unregistered = _UNREGISTERED.search(str(error))
            if unregistered and not tried:
                tried = True
                for package in PACKAGES:
                    try:
                        importlib.import_module(package)
                    except ImportError:
                        pass
                continue
            if unregistered:
                raise ServingError(
                    f"the SavedModel in {folder} uses the op {unregistered.group(1)!r}, which "
                    "no loaded package registers (it comes from a package the exporting "
                    f"process imported; mmrep knows {sorted(PACKAGES)})"
                ) from error
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise ServingError(
                f"could not load the SavedModel in {folder} (truncated or corrupt?): {first}"
            ) from error
