"""The registry of every public mmrep layer with an example input.

Each entry is a `LayerCase` that the conformance tests (tests/test_conformance.py) run
through every check of the shared harness. A public layer without an entry makes
tests/test_registry.py fail: adding a layer to mmrep means adding it here (or to the
case list of its area, such as tests/encoders/text/cases.py, which this module merges).
"""

import numpy as np

from mmrep.fusion import ConcatFusion
from tests.encoders.audio.cases import AUDIO_CASES
from tests.encoders.image.cases import IMAGE_CASES
from tests.encoders.saved_model_cases import SAVED_MODEL_CASES
from tests.encoders.text.bert_cases import BERT_CASES
from tests.encoders.text.cases import TEXT_CASES
from tests.encoders.video.cases import VIDEO_CASES
from tests.fusion.autoencoder_cases import AUTOENCODER_CASES
from tests.fusion.bilinear_cases import BILINEAR_CASES
from tests.fusion.contrastive_model_cases import CONTRASTIVE_MODEL_CASES
from tests.fusion.coordinated_cases import COORDINATED_CASES
from tests.harness import LayerCase
from tests.heads.afv_cases import AFV_CASES
from tests.heads.ebm_gan_cases import EBM_GAN_CASES
from tests.heads.fisher_cases import FISHER_CASES
from tests.heads.mixture_prior_cases import MIXTURE_PRIOR_CASES
from tests.heads.mvae_cases import MVAE_CASES
from tests.heads.netvlad_cases import NETVLAD_CASES
from tests.heads.vae_cases import VAE_CASES
from tests.job.cases import JOB_CASES


def _features(batch=4, **dims):
    rng = np.random.default_rng(0)
    return {m: rng.standard_normal((batch, d)).astype("float32") for m, d in dims.items()}


def _presence():
    # Every pattern a batch of 4 can hold for two modalities except "none present".
    return {"presence": np.array([[1, 1], [1, 0], [0, 1], [1, 1]], "float32")}


def _sequence_features():
    rng = np.random.default_rng(1)
    return {
        "audio": rng.standard_normal((4, 3, 5)).astype("float32"),
        "video": rng.standard_normal((4, 3, 7)).astype("float32"),
    }


FUSION_CASES = [
    LayerCase(
        name="concat_projection_l2_presence",
        layer_cls=ConcatFusion,
        init_kwargs={
            "modalities": ["image", "text"],
            "projection_dim": 6,
            "projection_activation": "relu",
            "normalization": "l2",
        },
        make_inputs=lambda: _features(image=8, text=5),
        make_call_tensors=_presence,
        expected_output_shape=(4, 14),
    ),
    LayerCase(
        name="concat_raw_no_mask",
        layer_cls=ConcatFusion,
        init_kwargs={"presence_indicators": False},
        make_inputs=lambda: _features(audio=3, image=8, text=5),
        expected_output_shape=(4, 16),
    ),
    LayerCase(
        name="concat_layer_norm_sequences",
        layer_cls=ConcatFusion,
        init_kwargs={
            "modalities": ["video", "audio"],
            "projection_dim": {"video": 4},
            "normalization": "layer",
        },
        make_inputs=_sequence_features,
        make_call_tensors=_presence,
        expected_output_shape=(4, 3, 11),
    ),
]

REGISTRY = [
    *FUSION_CASES,
    *BILINEAR_CASES,
    *AUTOENCODER_CASES,
    *COORDINATED_CASES,
    *CONTRASTIVE_MODEL_CASES,
    *BERT_CASES,
    *TEXT_CASES,
    *AUDIO_CASES,
    *IMAGE_CASES,
    *VIDEO_CASES,
    *SAVED_MODEL_CASES,
    *VAE_CASES,
    *FISHER_CASES,
    *NETVLAD_CASES,
    *MIXTURE_PRIOR_CASES,
    *MVAE_CASES,
    *EBM_GAN_CASES,
    *AFV_CASES,
    *JOB_CASES,
]
