"""Runs: a TOML config to a trained, evaluated and exported model (`mmrep train`).

`load_config` reads a run config (`mmrep.job.config` documents the schema) and
`builtin_config("mmdigits")` is the main job's own; `build_run_model` builds the
training, serving and per-modality embedding models of a config; `train_run` trains a
config and writes `runs/<name>/`; `evaluate_run` recomputes a run's metrics (or
evaluates it on another manifest); `export_run` exports it for TF Serving;
`embedding_model` gives the one-modality model of a run's layers. Importing this package
registers the job's own layers (`PaddingMask`, `LengthFloor`, `SelectColumns`,
`BatchConstant`, `PresentMean`, `JobTrainer`) with Keras, so a saved run model loads with
`keras.saving.load_model`.
"""

from mmrep.job.config import (
    ConfigError,
    builtin_config,
    check_config,
    config_to_toml,
    load_config,
    with_overrides,
)
from mmrep.job.data import RunData
from mmrep.job.evaluate import evaluate_run, load_run
from mmrep.job.model import RunModel, build_run_model, embedding_model, embedding_models
from mmrep.job.names import DEFAULT_FUSION, FUSIONS, HEADS
from mmrep.job.run_export import export_run
from mmrep.job.run_folder import RunError
from mmrep.job.train import train_run
from mmrep.job.trainer import JobTrainer  # noqa: F401 (registers the training model)

__all__ = [
    "DEFAULT_FUSION",
    "FUSIONS",
    "HEADS",
    "ConfigError",
    "RunData",
    "RunError",
    "RunModel",
    "build_run_model",
    "builtin_config",
    "check_config",
    "config_to_toml",
    "embedding_model",
    "embedding_models",
    "evaluate_run",
    "export_run",
    "load_config",
    "load_run",
    "train_run",
    "with_overrides",
]
