"""Unimodal encoders: text (BERT from local Hugging Face checkpoints) and audio (VGGish).

Each encoder family lives in its own subpackage (`mmrep.encoders.text`,
`mmrep.encoders.audio`); this module re-exports their public names.
"""

from mmrep.encoders import audio, text
from mmrep.encoders.audio import *  # noqa: F403
from mmrep.encoders.text import *  # noqa: F403

__all__ = [*audio.__all__, *text.__all__]
