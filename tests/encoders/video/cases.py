"""Registry cases for the video encoder (merged into tests/registry.py).

A `VideoEncoder` owns its frame encoder, so each layer the harness makes gets a fresh one
(a shared instance would carry variables from one strategy scope into another).
"""

import dataclasses

import numpy as np

from mmrep.encoders.video import VideoEncoder
from tests.encoders.video.frame_encoders import conv_frame_encoder
from tests.harness import LayerCase


@dataclasses.dataclass
class VideoCase(LayerCase):
    """A `LayerCase` whose layers each get a new frame encoder (built with `seed`)."""

    frame_encoder_seed: int = 0

    def make_layer(self, **extra):
        frame_encoder = conv_frame_encoder(seed=self.frame_encoder_seed)
        return self.layer_cls(frame_encoder, **self.init_kwargs, **extra)


def _frames(batch=4, time=3, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch, time, size, size, 3)).astype("uint8")


def _mask():
    # A full clip, two short ones and one without any frame. Numbers, not bools: Keras
    # `fit` under MirroredStrategy cannot split bool inputs (bool masks are tested in
    # tests/encoders/video/test_video_encoder.py).
    return {"frame_mask": np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]], "float32")}


VIDEO_CASES = [
    VideoCase(
        name="video_mean_masked_skip",
        layer_cls=VideoEncoder,
        init_kwargs={"pooling": "mean"},
        make_inputs=_frames,
        make_call_tensors=_mask,
        expected_output_shape=(4, 4),
        atol=1e-5,
    ),
    VideoCase(
        name="video_attention_masked_encode_all",
        layer_cls=VideoEncoder,
        init_kwargs={"pooling": "attention", "skip_masked_frames": False},
        make_inputs=_frames,
        make_call_tensors=_mask,
        expected_output_shape=(4, 4),
        atol=1e-5,
    ),
    VideoCase(
        name="video_sequence_no_mask",
        layer_cls=VideoEncoder,
        init_kwargs={"pooling": "sequence"},
        make_inputs=lambda: _frames(time=2),
        expected_output_shape={"sequence_output": (4, 2, 4), "mask": (4, 2)},
        expected_output_dtype={"sequence_output": "float32", "mask": "bool"},
        atol=1e-5,
    ),
    VideoCase(
        name="video_max_masked",
        layer_cls=VideoEncoder,
        init_kwargs={"pooling": "max"},
        make_inputs=_frames,
        make_call_tensors=_mask,
        expected_output_shape=(4, 4),
        atol=1e-5,
    ),
]
