"""Preprocessing: decoding and resampling of image, audio and video files; video frame sampling."""

from mmrep.preprocessing.audio_io import SAMPLE_RATE, AudioDecodeError, load_audio, resample
from mmrep.preprocessing.frame_sampling import SampledFrames, sample_frames
from mmrep.preprocessing.image_io import ImageDecodeError, decode_image, load_image, resize_image
from mmrep.preprocessing.video_io import VideoDecodeError, read_video, write_video

__all__ = [
    "SAMPLE_RATE",
    "AudioDecodeError",
    "ImageDecodeError",
    "SampledFrames",
    "VideoDecodeError",
    "decode_image",
    "load_audio",
    "load_image",
    "read_video",
    "resample",
    "resize_image",
    "sample_frames",
    "write_video",
]
