"""`export_run`: a trained run's model as a SavedModel for TF Serving."""

import os


def export_run(
    run, runs_dir="runs", export_dir="saved_models", version=None, overwrite=False, verbose=True
):
    """Exports a run's serving model with its per-modality embedding signatures.

    Reloads `model.keras`, rebuilds the single-modality embedding models from its layers
    (by name: they share the reloaded weights) and calls
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
        RunError: for a model that is not a main-job model.
        FileExistsError: (from `export_saved_model`) when the version exists and
            `overwrite` is `False`.
    """
    from mmrep.export import export_saved_model
    from mmrep.job.metrics import load_serving_model
    from mmrep.job.model import embedding_models, layers_of
    from mmrep.job.run_folder import resolve_run

    folder = resolve_run(run, runs_dir)
    serving = load_serving_model(folder)
    layers, fusion, head = layers_of(serving)
    embeddings = embedding_models(layers, fusion, head, serving.name)
    name = os.path.basename(os.path.normpath(os.path.abspath(folder)))
    return export_saved_model(
        serving,
        os.path.join(os.fspath(export_dir), name),
        version=version,
        embeddings=embeddings,
        overwrite=overwrite,
        verbose=verbose,
    )
