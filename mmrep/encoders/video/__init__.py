"""Video encoders: a frame encoder over sampled frames, then temporal pooling."""

from mmrep.encoders.video.video_encoder import VideoEncoder

__all__ = ["VideoEncoder"]
