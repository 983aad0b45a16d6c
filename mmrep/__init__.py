"""mmrep: multimodal representation learning on TensorFlow / Keras 3.

Encoders, fusion layers and generative heads that compose as ordinary Keras layers,
train under `tf.distribute` and export as SavedModels.

`import mmrep` imports every subpackage, so every mmrep layer and model is registered
with Keras: a `.keras` file saved with mmrep layers loads with `keras.saving.load_model`
after `import mmrep` (or after importing the subpackage that defines its layers), with no
other call. `MODALITY_ORDER` is the one order of modalities (presence-mask columns,
fusion defaults, manifests, export metadata).
"""

import os

# mmrep's layers are written with keras.ops, but training, export and tf.data paths are
# TensorFlow's own: pin the backend unless the user already chose one.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

# Importing every subpackage registers every mmrep layer with Keras.
from mmrep import (
    data,
    encoders,
    export,
    fusion,
    heads,
    job,
    losses,
    metrics,
    preprocessing,
    training,
    utils,
)
from mmrep.utils.modalities import MODALITY_ORDER, ordered_modalities

__all__ = [
    "MODALITY_ORDER",
    "__version__",
    "data",
    "encoders",
    "export",
    "fusion",
    "heads",
    "job",
    "losses",
    "metrics",
    "ordered_modalities",
    "preprocessing",
    "training",
    "utils",
]
