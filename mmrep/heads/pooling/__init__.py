"""Learnable pooling of descriptor sets: NetVLAD, NetRVLAD, soft bag-of-words and NetFV
over one soft-assignment core, with Context Gating."""

from mmrep.heads.pooling.context_gating import ContextGating
from mmrep.heads.pooling.net_fisher_vector import NetFV
from mmrep.heads.pooling.netvlad import NetRVLAD, NetVLAD, SoftBagOfWords
from mmrep.heads.pooling.soft_assignment import SoftAssignmentPooling

__all__ = [
    "ContextGating",
    "NetFV",
    "NetRVLAD",
    "NetVLAD",
    "SoftAssignmentPooling",
    "SoftBagOfWords",
]
