"""Registry cases for the main job's layers (merged into tests/registry.py).

`JobTrainer`'s network is made fresh for every layer the harness builds
(`make_init_kwargs`). Its training objective (classifier plus pair losses) is tested in
tests/job/test_model.py.
"""

import keras
import numpy as np

from mmrep.fusion import CoordinatedEmbedding
from mmrep.job.encoders import PaddingMask
from mmrep.job.graph_layers import (
    BatchConstant,
    LengthFloor,
    PresenceGate,
    PresentMean,
    SelectColumns,
)
from mmrep.job.trainer import JobTrainer
from tests.harness import LayerCase

_PRESENCE = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 1], [1, 1, 1]], "float32")


def _embeddings():
    rng = np.random.default_rng(0)
    return {m: rng.standard_normal((4, 5)).astype("float32") for m in ("a", "b", "c")}


def _clip_with_nan_where_absent():
    """A waveform and its lengths; row 0, absent in column 2 of `_PRESENCE`, is garbage."""
    waveform = np.random.default_rng(2).uniform(-1, 1, (4, 6)).astype("float32")
    waveform[0] = np.nan
    return {"waveform": waveform, "lengths": np.array([-7, 6, 3, 6], "int32")}


def trainer_network():
    """A small network with JobTrainer's outputs: probabilities and two coordinated ones."""
    inputs = {
        "image": keras.Input((6,), name="image"),
        "presence": keras.Input((2,), name="presence"),
        "text": keras.Input((4,), name="text"),
    }
    coordinated = CoordinatedEmbedding(3, modalities=["image", "text"])(
        {"image": inputs["image"], "text": inputs["text"]}, presence=inputs["presence"]
    )
    joined = keras.layers.Concatenate()([coordinated["image"], coordinated["text"]])
    outputs = {
        "probabilities": keras.layers.Dense(3, activation="softmax", dtype="float32")(joined),
        "coordinated_image": coordinated["image"],
        "coordinated_text": coordinated["text"],
        "logit_scale": coordinated["logit_scale"],
    }
    return keras.Model(inputs, outputs, name="network")


def trainer_inputs(batch=6, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((batch, 6)).astype("float32"),
        "presence": np.array([[1, 1], [1, 0], [1, 1], [0, 1], [1, 1], [1, 1]], "float32")[:batch],
        "text": rng.standard_normal((batch, 4)).astype("float32"),
    }


JOB_CASES = [
    LayerCase(
        name="job_padding_mask",
        layer_cls=PaddingMask,
        init_kwargs={},
        make_inputs=lambda: np.array([[5, 2, 0, 0], [1, 0, 0, 0]], "int32"),
        expected_output_shape=(2, 4),
        expected_output_dtype="bool",
        mixed_output_dtype="bool",
        not_applicable={
            "gradients": "integer input, bool output, no weights: nothing to differentiate",
            "distributed": "no weights to train; the SGD step compared across replicas needs some",
        },
    ),
    LayerCase(
        name="job_length_floor",
        layer_cls=LengthFloor,
        init_kwargs={},
        # Absent clips' zero lengths become 1; real lengths pass through.
        make_inputs=lambda: np.array([16000, 0, 9000, 0], "int32"),
        expected_output_shape=(4,),
        expected_output_dtype="int32",
        mixed_output_dtype="int32",
        not_applicable={
            "gradients": "integer lengths in and out, no weights: nothing to differentiate",
            "distributed": "no weights to train; the SGD step compared across replicas needs some",
        },
    ),
    LayerCase(
        name="job_length_floor_int64_minimum",
        layer_cls=LengthFloor,
        init_kwargs={"minimum": 400},
        make_inputs=lambda: np.array([0, 399, 400, 16000], "int64"),
        expected_output_shape=(4,),
        expected_output_dtype="int64",
        mixed_output_dtype="int64",
        not_applicable={
            "gradients": "integer lengths in and out, no weights: nothing to differentiate",
            "distributed": "no weights to train; the SGD step compared across replicas needs some",
        },
    ),
    LayerCase(
        name="job_select_columns",
        layer_cls=SelectColumns,
        init_kwargs={"columns": [2, 0]},
        make_inputs=lambda: _PRESENCE,
        expected_output_shape=(4, 2),
    ),
    LayerCase(
        name="job_batch_constant",
        layer_cls=BatchConstant,
        init_kwargs={"value": [1.0, 0.0, 0.5]},
        make_inputs=lambda: np.zeros((4, 7), "float32"),
        expected_output_shape=(4, 3),
        not_applicable={"gradients": "a constant: no weights, and no gradient to its input"},
    ),
    LayerCase(
        name="job_present_mean",
        layer_cls=PresentMean,
        init_kwargs={"modalities": ["a", "b", "c"]},
        make_inputs=_embeddings,
        make_call_tensors=lambda: {"presence": _PRESENCE},
        expected_output_shape=(4, 5),
    ),
    LayerCase(
        name="job_presence_gate",
        layer_cls=PresenceGate,
        init_kwargs={"column": 2},
        make_inputs=_clip_with_nan_where_absent,
        make_call_tensors=lambda: {"presence": _PRESENCE},
        expected_output_shape={"waveform": (4, 6), "lengths": (4,)},
        expected_output_dtype={"waveform": "float32", "lengths": "int32"},
        # The inputs keep their dtypes under every policy (no autocast).
        mixed_output_dtype="float32",
        not_applicable={
            "distributed": "no weights to train; the SGD step compared across replicas needs some",
        },
    ),
    LayerCase(
        name="job_trainer_coordinated_pair",
        layer_cls=JobTrainer,
        init_kwargs={"contrastive_pairs": [["image", "text"]], "contrastive_weight": 0.5},
        make_init_kwargs=lambda: {"network": trainer_network()},
        make_inputs=trainer_inputs,
        expected_output_shape={
            "probabilities": (6, 3),
            "coordinated_image": (6, 3),
            "coordinated_text": (6, 3),
            "logit_scale": (6, 1),
        },
        expected_output_dtype={
            "probabilities": "float32",
            "coordinated_image": "float32",
            "coordinated_text": "float32",
            "logit_scale": "float32",
        },
        # The trainer returns its outputs in float32 under every policy.
        mixed_output_dtype="float32",
        atol=1e-5,
    ),
]
