"""mmrep: multimodal representation learning on TensorFlow / Keras 3.

Encoders, fusion layers and generative heads that compose as ordinary Keras layers,
train under `tf.distribute` and export as SavedModels.

Subpackages are imported on first use (`mmrep.fusion`, ...), so `import mmrep` and the
`mmrep` command stay fast and do not start TensorFlow until a layer is needed.
"""

import importlib
import os

# mmrep's layers are written with keras.ops, but training, export and tf.data paths are
# TensorFlow's own: pin the backend unless the user already chose one.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

_SUBPACKAGES = (
    "data",
    "encoders",
    "fusion",
    "heads",
    "losses",
    "metrics",
    "preprocessing",
    "training",
)

__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'mmrep' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
