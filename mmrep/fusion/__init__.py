"""Fusion layers: combine per-modality representations `{modality: tensor}` into one."""

from mmrep.fusion.concat import ConcatFusion

__all__ = ["ConcatFusion"]
