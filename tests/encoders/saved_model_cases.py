"""Registry cases for `SavedModelEncoder` (merged into tests/registry.py).

The SavedModels are written on first use (not at import) into one temporary folder per
test session, removed at exit; `make_init_kwargs` hands their paths to the harness.
"""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mmrep.encoders.saved_model import SavedModelEncoder
from tests.encoders import saved_model_files as files
from tests.harness import LayerCase


@functools.cache
def _folder():
    folder = Path(tempfile.mkdtemp(prefix="mmrep_saved_model_cases_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def _keras_export():
    return str(files.export_keras(files.image_model(seed=3), _folder() / "keras_export"))


@functools.cache
def _multi_io():
    return str(files.save_multi_io(files.image_model(seed=4), _folder() / "multi_io"))


@functools.cache
def _hub_module():
    path = _folder() / "hub_module"
    files.save_hub_module(path, seed=5)
    return str(path)


def _two_inputs():
    return {
        "image": files.images(batch=4, seed=6),
        "gain": np.random.default_rng(7).uniform(0.5, 2.0, (4, 1)).astype("float32"),
    }


# The SavedModels compute in float32; the layer casts floating outputs to the policy's
# compute dtype (LayerCase.mixed_output_dtype="compute", the default, said explicitly).
SAVED_MODEL_CASES = [
    LayerCase(
        name="saved_model_keras_export_trainable",
        layer_cls=SavedModelEncoder,
        init_kwargs={"signature": "serve", "trainable": True},
        make_init_kwargs=lambda: {"handle": _keras_export()},
        make_inputs=lambda: files.images(batch=4, seed=8),
        expected_output_shape=(4, files.NUM_CLASSES),
        mixed_output_dtype="compute",
    ),
    LayerCase(
        name="saved_model_two_inputs_dict_outputs",
        layer_cls=SavedModelEncoder,
        init_kwargs={"signature": "two_in_three_out", "trainable": True},
        make_init_kwargs=lambda: {"handle": _multi_io()},
        make_inputs=_two_inputs,
        expected_output_shape={
            "features": (4, 4),
            "logits": (4, files.NUM_CLASSES),
            "top": (4,),
        },
        expected_output_dtype={"features": "float32", "logits": "float32", "top": "int32"},
    ),
    LayerCase(
        name="saved_model_hub_call_frozen_output_key",
        layer_cls=SavedModelEncoder,
        init_kwargs={"signature": None, "output_key": "features"},
        make_init_kwargs=lambda: {"handle": _multi_io()},
        make_inputs=lambda: files.images(batch=4, seed=9),
        expected_output_shape=(4, 4),
        # training=True runs batch norm on per-replica batch statistics, which differ
        # from the global batch's (the harness's BatchCentred case).
        deterministic_training=False,
    ),
    LayerCase(
        name="saved_model_hub_call_training_trainable",
        layer_cls=SavedModelEncoder,
        init_kwargs={"signature": None, "trainable": True},
        make_init_kwargs=lambda: {"handle": _hub_module()},
        make_inputs=lambda: np.random.default_rng(10).standard_normal((4, 6)).astype("float32"),
        expected_output_shape=(4, 3),
    ),
]
