"""Fusion layers: combine per-modality representations `{modality: tensor}` into one."""

from mmrep.fusion.autoencoder import MultimodalAutoencoder
from mmrep.fusion.bilinear import BilinearFusion
from mmrep.fusion.concat import ConcatFusion
from mmrep.fusion.contrastive_model import ContrastiveModel
from mmrep.fusion.coordinated import CoordinatedEmbedding
from mmrep.fusion.tensor_fusion import LowRankTensorFusion, TensorFusion

__all__ = [
    "BilinearFusion",
    "ConcatFusion",
    "ContrastiveModel",
    "CoordinatedEmbedding",
    "LowRankTensorFusion",
    "MultimodalAutoencoder",
    "TensorFusion",
]
