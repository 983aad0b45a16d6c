"""The `mmrep` main job: a four-modality model on mmdigits, trained, evaluated and exported.

`train_run` trains image, text, audio and video encoders joined by a fusion (and an
optional head) on mmdigits and writes `runs/<name>/`; `evaluate_run` recomputes a run's
metrics and plots from its saved model; `export_run` exports it for TF Serving;
`build_job_model` builds the model itself. Importing this package registers the main
job's own layers (`PaddingMask`, `SelectColumns`, `BatchConstant`, `PresentMean`,
`JobTrainer`) with Keras, so a saved main-job model loads with `keras.saving.load_model`.
"""

from mmrep.job.metrics import evaluate_run
from mmrep.job.model import build_job_model
from mmrep.job.names import DEFAULT_FUSION, FUSIONS, HEADS, default_run_name
from mmrep.job.run_export import export_run
from mmrep.job.run_folder import RunError
from mmrep.job.train import train_run
from mmrep.job.trainer import JobTrainer  # noqa: F401 (registers the training model)

__all__ = [
    "DEFAULT_FUSION",
    "FUSIONS",
    "HEADS",
    "RunError",
    "build_job_model",
    "default_run_name",
    "evaluate_run",
    "export_run",
    "train_run",
]
