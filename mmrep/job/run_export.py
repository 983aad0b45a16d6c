"""`export_run`: a trained run's model as a SavedModel for TF Serving."""

import os


def export_run(
    run, runs_dir="runs", export_dir="saved_models", version=None, overwrite=False, verbose=True
):
    """Exports a run's serving model with its per-modality embedding signatures.

    Reloads `model.keras` and `config.toml`, rebuilds the single-modality embedding
    models from its layers (by name: they share the reloaded weights) and calls
    `mmrep.export.export_saved_model` into `export_dir/<run name>/<version>/`, where the
    run name is the run folder's name.

    Args:
        run: str or path. A run folder, or a run name in `runs_dir`.
        runs_dir: str or path. Where run names are looked up. Defaults to `"runs"`.
        export_dir: str or path. The folder of TF Serving base folders.
            Defaults to `"saved_models"`.
        version: int or `None` (one more than the largest version there).
        overwrite: bool. Replace an existing version. Defaults to `False`.
        verbose: bool. Print the version folder. Defaults to `True`.

    Returns:
        str. The version folder written.

    Raises:
        RunNotFoundError: (a `RunError` and `FileNotFoundError`) for a missing run or
            model file.
        RunError: for a model or config that cannot be read.
        ServingError: for an `export_dir` that is a file (or under one) or cannot be
            written; checked before the model is loaded.
        FileExistsError: (from `export_saved_model`) when the version exists and
            `overwrite` is `False`.
    """
    from mmrep.export import export_saved_model
    from mmrep.export.versions import check_destination
    from mmrep.job import run_folder as rf
    from mmrep.job.evaluate import load_run

    name = os.path.basename(os.path.normpath(os.path.abspath(rf.resolve_run(run, runs_dir))))
    base = os.path.join(os.fspath(export_dir), name)
    check_destination(base, version, overwrite)  # before the model is loaded
    _, run_model = load_run(run, runs_dir)
    return export_saved_model(
        run_model.serving,
        base,
        version=version,
        embeddings=run_model.embeddings,
        overwrite=overwrite,
        verbose=verbose,
        modalities=list(run_model.config["modalities"]),
    )
