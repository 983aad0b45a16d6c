"""Unimodal encoders: image (keras.applications CNNs), text (BERT), audio (VGGish), video
(frame encoder + temporal pooling), and any TF2 SavedModel or TF Hub module.

Each encoder family lives in its own subpackage (`mmrep.encoders.image`, `.text`, `.audio`,
`.video`); this module re-exports their public names.
"""

from mmrep.encoders import audio, image, text, video
from mmrep.encoders.audio import *  # noqa: F403
from mmrep.encoders.image import *  # noqa: F403
from mmrep.encoders.saved_model import SavedModelEncoder
from mmrep.encoders.saved_model_handles import SavedModelError
from mmrep.encoders.text import *  # noqa: F403
from mmrep.encoders.video import *  # noqa: F403

__all__ = [
    *audio.__all__,
    *image.__all__,
    *text.__all__,
    *video.__all__,
    "SavedModelEncoder",
    "SavedModelError",
]
