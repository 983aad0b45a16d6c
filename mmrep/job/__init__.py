"""The `mmrep` main job: a four-modality model on mmdigits, trained, evaluated and exported.

`train_run` trains image, text, audio and video encoders joined by a fusion (and an
optional head) on mmdigits and writes `runs/<name>/`; `evaluate_run` recomputes a run's
metrics and plots from its saved model; `export_run` exports it for TF Serving;
`build_job_model` builds the model itself. The constants (`FUSIONS`, `HEADS`,
`DEFAULT_FUSION`) import without TensorFlow, so the `mmrep` command's `--help` stays
instant; the functions import TensorFlow when first used.
"""

from mmrep.job.names import DEFAULT_FUSION, FUSIONS, HEADS, default_run_name
from mmrep.lazy_exports import lazy_getattr

# Public name -> module inside mmrep.job (imported on first use: they import TensorFlow).
_EXPORTS = {
    "RunError": "run_folder",
    "build_job_model": "model",
    "train_run": "train",
    "evaluate_run": "metrics",
    "export_run": "run_export",
}

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

__getattr__ = lazy_getattr(__name__, _EXPORTS)
