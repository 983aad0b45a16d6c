"""Reading a trained run back: `load_run`, and `evaluate_run` on its data or a manifest."""

import os


def load_run(run, runs_dir="runs"):
    """A run folder's model, config and classes, as a `RunModel`.

    Args:
        run: str or path. A run folder, or a run name in `runs_dir`.
        runs_dir: str or path. Where run names are looked up. Defaults to `"runs"`.

    Returns:
        `(folder, run_model)`: the folder and a `RunModel` (`training` is `None`).

    Raises:
        RunNotFoundError: (a `RunError` and `FileNotFoundError`) for a missing run, model
            or config file.
        RunError: for a model or config that cannot be read, or that disagree.
    """
    import keras

    from mmrep.job import run_folder as rf
    from mmrep.job.config import ConfigError, load_config
    from mmrep.job.model import RunModel

    folder = rf.resolve_run(run, runs_dir)
    config_path = os.path.join(folder, rf.CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise rf.RunNotFoundError(
            f"{config_path!r} is missing: the folder is not a run of this mmrep version "
            "(train it again with `mmrep train`)"
        )
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise rf.RunError(f"the run's config does not check: {error}") from None
    run_info = rf.read_json(folder, rf.RUN_FILE, required=False) or {}
    path = os.path.join(folder, rf.MODEL_FILE)
    try:
        serving = keras.models.load_model(path)
        run_model = RunModel.from_serving(serving, config, run_info.get("classes"))
    except (OSError, ValueError, TypeError) as error:
        raise rf.RunError(f"{path!r} is not a run model that loads: {error}") from None
    return folder, run_model


def evaluate_run(run, runs_dir="runs", manifest=None, verbose=True):
    """Recomputes a run's metrics and plots from its saved model.

    Reloads `model.keras` and `config.toml` and evaluates on the run's own evaluated
    split (rewriting `metrics.json`, the plots, and `training_curves.png` from
    `history.json`), or on another manifest (`manifest`: its metrics are printed and
    returned, and nothing in the run folder changes).

    Args:
        run: str or path. A run folder, or a run name in `runs_dir`.
        runs_dir: str or path. Where run names are looked up. Defaults to `"runs"`.
        manifest: str or `None`. A manifest with the run's modality columns (and labels,
            for accuracy) to evaluate on instead; the run's training split trains the
            linear probes.
        verbose: bool. Print the table. Defaults to `True`.

    Returns:
        dict. The metrics.

    Raises:
        RunNotFoundError: for a missing run, model or config file.
        RunError: for a model or config that cannot be read.
        ManifestError: for a manifest that does not fit the run.
    """
    from mmrep.job import run_folder as rf
    from mmrep.job.config import recheck
    from mmrep.job.data import RunData
    from mmrep.job.metrics import evaluate

    folder, run_model = load_run(run, runs_dir)
    config = run_model.config
    limit = config["train"]["limit"]
    if manifest is None:
        data = RunData(config, folder)
        history = rf.read_json(folder, rf.HISTORY_FILE, required=False)
        metrics = evaluate(run_model, data, limit=limit, folder=folder, history=history)
        if verbose:
            print(f"Wrote {os.path.join(folder, rf.METRICS_FILE)} and the plots")
        return metrics
    if not os.path.isfile(manifest):
        raise FileNotFoundError(f"manifest not found: {manifest}")
    other = dict(config)
    other["data"] = {**config["data"], "test": os.path.abspath(manifest)}
    if other["data"].get("builtin"):
        raise rf.RunError("a run on the built-in mmdigits data is evaluated on mmdigits only")
    data = RunData(recheck(other), folder)
    data.classes = run_model.classes
    return evaluate(run_model, data, limit=limit, folder=None, verbose=verbose)
