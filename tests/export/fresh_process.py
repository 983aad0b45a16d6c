"""Running an exported SavedModel in a fresh Python process that has only TensorFlow.

The child runs `python -I -c CHILD` (isolated: no PYTHONPATH, no user site, no current
folder on `sys.path`) in a temporary folder, with an import hook that refuses `mmrep`,
so any attempt of the SavedModel to need mmrep fails loudly. It loads the model with
`tf.saved_model.load`, calls the requested signatures, and writes their outputs and a
description of every signature; the parent compares them with the Keras model.
"""

import json
import os
import subprocess
import sys

import numpy as np

# The first lines of every serving child (here and in tests/benchmarks/bench_serving.py):
# an import hook that makes any import of mmrep fail.
REFUSE_MMREP = r"""
import importlib.abc, sys

class RefuseMmrep(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "mmrep" or name.startswith("mmrep."):
            raise ImportError(f"the serving process must not import {name}")
        return None

sys.meta_path.insert(0, RefuseMmrep())
"""

CHILD = (
    REFUSE_MMREP
    + r"""
import json
import numpy as np
import tensorflow as tf

request = json.load(open(sys.argv[1]))
arrays = np.load(request["arrays"], allow_pickle=False)
loaded = tf.saved_model.load(request["model"])

def entry(spec):
    return {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}

description = {}
for name, function in loaded.signatures.items():
    description[name] = {
        "inputs": {k: entry(v) for k, v in function.structured_input_signature[1].items()},
        "outputs": {k: entry(v) for k, v in function.structured_outputs.items()},
    }
outputs = {}
for call, (signature, feeds) in request["calls"].items():
    kwargs = {}
    for name, source in feeds.items():
        if "files" in source:
            files = [open(f, "rb").read() for f in source["files"]]
            kwargs[name] = tf.constant(files, dtype=tf.string)
        else:
            kwargs[name] = tf.constant(arrays[source["array"]])
    for key, value in loaded.signatures[signature](**kwargs).items():
        outputs[f"{call}/{key}"] = value.numpy()
np.savez(request["outputs"], **outputs)
json.dump(
    {
        "signatures": description,
        "mmrep_modules": sorted(m for m in sys.modules if m.split(".")[0] == "mmrep"),
        "loaded_type": type(loaded).__module__ + "." + type(loaded).__qualname__,
    },
    open(request["description"], "w"),
)
"""
)


def run_signatures(model_folder, calls, workdir, timeout=240):
    """Calls signatures of `model_folder` in a fresh TensorFlow-only process.

    Args:
        model_folder: str. The SavedModel version folder.
        calls: dict `{call: (signature, {input: numpy array | {"files": [paths]}})}`;
            a files entry is read as bytes (a `tf.string` vector). Names of calls are
            free; a signature may be called several times.
        workdir: folder for the request and results (also the child's cwd).
        timeout: seconds.

    Returns:
        `(outputs, info)`: `{call: {output: array}}` and a dict with `"signatures"`
        (every signature's input/output names, dtypes, shapes as the child sees them),
        `"mmrep_modules"` (mmrep modules imported in the child) and `"loaded_type"`.
    """
    workdir = os.fspath(workdir)
    arrays, request_calls = {}, {}
    for call, (signature, feeds) in calls.items():
        sources = {}
        for name, value in feeds.items():
            if isinstance(value, dict):
                sources[name] = value
                continue
            key = f"{call}/{name}"
            value = np.asarray(value)
            arrays[key] = value.astype(bytes) if value.dtype == object else value
            sources[name] = {"array": key}
        request_calls[call] = [signature, sources]
    request = {
        "model": os.path.abspath(model_folder),
        "arrays": os.path.join(workdir, "inputs.npz"),
        "outputs": os.path.join(workdir, "outputs.npz"),
        "description": os.path.join(workdir, "description.json"),
        "calls": request_calls,
    }
    np.savez(request["arrays"], **arrays)
    request_file = os.path.join(workdir, "request.json")
    with open(request_file, "w") as f:
        json.dump(request, f)
    result = subprocess.run(
        [sys.executable, "-I", "-c", CHILD, request_file],
        cwd=workdir,
        env=serving_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"the serving process failed:\n{result.stderr[-4000:]}")
    outputs = {}
    with np.load(request["outputs"]) as saved:
        for key in saved.files:
            call, name = key.split("/", 1)
            outputs.setdefault(call, {})[name] = saved[key]
    with open(request["description"]) as f:
        info = json.load(f)
    return outputs, info


def serving_environment():
    """This process's environment without PYTHON* variables, TensorFlow's C++ logs quieted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env
