"""Reading a trained run back: `load_run`, and `evaluate_run` on its data or a manifest."""

import os
import zipfile

# What every .keras archive holds (its weights file's name depends on its format).
_KERAS_ARCHIVE_FILES = ("config.json",)


def _check_model_file(path):
    """Refuses a `model.keras` that is not a whole Keras archive, naming what is wrong.

    Keras itself calls a truncated archive "File not found" and lets a damaged one raise
    `zipfile.BadZipFile`; this reads the archive's index and checks every member's CRC
    first (a read of the file, small next to loading it).
    """
    from mmrep.job.run_folder import RunError

    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise RunError(f"{path!r} cannot be read: {error.strerror or error}") from None
    if not zipfile.is_zipfile(path):
        raise RunError(
            f"{path!r} is not a complete .keras file (a zip archive): it may be truncated or "
            "not a Keras model; train the run again or copy the file whole"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [name for name in _KERAS_ARCHIVE_FILES if name not in names]
            if missing:
                raise RunError(
                    f"{path!r} is a zip archive but not a Keras model: it has no "
                    f"{', '.join(missing)} (it holds: {sorted(names)[:10]})"
                )
            damaged = archive.testzip()
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise RunError(f"{path!r} is a damaged .keras archive: {error}") from None
    if damaged is not None:
        raise RunError(
            f"{path!r} is a damaged .keras archive: its member {damaged!r} does not match "
            "its checksum; train the run again or copy the file whole"
        )


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
        RunError: for a model or config that cannot be read (a truncated or damaged
            `model.keras` among them), or that disagree.
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
    _check_model_file(path)
    try:
        serving = keras.models.load_model(path)
        run_model = RunModel.from_serving(serving, config, run_info.get("classes"))
    except (OSError, ValueError, TypeError, zipfile.BadZipFile) as error:
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
        RunError: for a model or config that cannot be read, or (without `manifest`) a
            run folder that cannot be written.
        ManifestError: for a manifest that does not fit the run.
    """
    from mmrep.job import run_folder as rf
    from mmrep.job.config import recheck
    from mmrep.job.data import RunData
    from mmrep.job.metrics import evaluate

    if manifest is None:
        folder = rf.resolve_run(run, runs_dir)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise rf.RunError(
                f"the run folder {folder!r} cannot be written (evaluate rewrites "
                f"{rf.METRICS_FILE} and the plots there): copy it somewhere you can write, "
                "or pass --manifest to evaluate without writing"
            )
    folder, run_model = load_run(run, runs_dir)
    config = run_model.config
    limit = config["train"]["limit"]
    if manifest is None:
        data = RunData(config, folder)
        history = rf.read_json(folder, rf.HISTORY_FILE, required=False)
        metrics = _named(
            data, evaluate, run_model, data, limit=limit, folder=folder, history=history
        )
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
    return _named(data, evaluate, run_model, data, limit=limit, folder=None, verbose=verbose)


def _named(data, function, *args, **kwargs):
    """`function(*args, **kwargs)`, an image the graph cannot decode named by its row."""
    import tensorflow as tf

    try:
        return function(*args, **kwargs)
    except tf.errors.InvalidArgumentError as error:
        named = data.decode_failure()
        if named is None:
            raise
        raise named from error
