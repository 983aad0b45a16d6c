"""Audio encoders: the VGGish log-mel frontend and network (Hershey et al. 2017)."""

from mmrep.encoders.audio.audio_examples import AudioExamples
from mmrep.encoders.audio.log_mel import LogMelSpectrogram, mel_weight_matrix
from mmrep.encoders.audio.vggish import VGGish
from mmrep.encoders.audio.vggish_postprocess import VGGishPostprocess
from mmrep.encoders.audio.vggish_weights import (
    VGGishCheckpointError,
    load_vggish_weights,
    read_pca_params,
)

__all__ = [
    "AudioExamples",
    "LogMelSpectrogram",
    "VGGish",
    "VGGishCheckpointError",
    "VGGishPostprocess",
    "load_vggish_weights",
    "mel_weight_matrix",
    "read_pca_params",
]
