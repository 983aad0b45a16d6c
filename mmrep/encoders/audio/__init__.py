"""Audio encoders: the VGGish log-mel frontend and network (Hershey et al. 2017)."""

__all__ = []
