"""`train_run`: a run config to a trained, evaluated and exported run folder."""

import os
import time


def _versions():
    import keras
    import tensorflow as tf

    from mmrep import __version__

    return {"mmrep": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def _options(config):
    from mmrep.training import TrainingOptions

    train = config["train"]
    return TrainingOptions(precision=train["precision"], jit_compile=train["jit_compile"])


def _fit(run_model, data, strategy, verbose):
    from mmrep.training import distribute_dataset

    train_config = run_model.config["train"]
    batch, limit = train_config["batch_size"], train_config["limit"]
    layers = run_model.layers
    train = data.training("train", layers, rerandomize=True, limit=limit)
    validation = data.training("validation", layers, rerandomize=False, limit=limit)
    train = distribute_dataset(train, batch, strategy)
    if train_config["steps_per_epoch"] is not None:
        train = train.repeat()
    validation = distribute_dataset(validation, batch, strategy)
    start = time.perf_counter()
    history = run_model.training.fit(
        train,
        validation_data=validation,
        epochs=train_config["epochs"],
        steps_per_epoch=train_config["steps_per_epoch"],
        verbose=verbose,
        shuffle=False,  # the dataset shuffles itself, every epoch
    )
    seconds = time.perf_counter() - start
    return {k: [float(v) for v in values] for k, values in history.history.items()}, seconds


def train_run(config, *, runs_dir="runs", verbose="auto"):
    """Trains a run config, evaluates it, writes `runs_dir/<name>/`, exports it.

    Builds the model of `build_run_model(config)` under
    `mmrep.training.select_strategy()` (every local GPU, or a multi-worker cluster from
    `TF_CONFIG`), trains it with random modality dropout (Keras progress output), then
    writes the run folder (into a temporary folder, renamed into place; an existing run
    of the same name is replaced): `model.keras` (the serving model), `config.toml` (the
    full config: `mmrep train --config runs/NAME/config.toml` runs it again),
    `run.json` (classes, strategy, versions, timings), `history.json`, `metrics.json`
    (see `mmrep.job.metrics`) and the plots `training_curves.png`,
    `embedding_projection.png` and (with text and images) `retrieval_examples.png`.
    Prints a results table and, with `[export] enabled`, exports the serving model with
    its per-modality embedding signatures to `<export.dir>/<name>/<version>/`.

    Args:
        config: dict. A checked run config (`mmrep.job.load_config`, `builtin_config`).
        runs_dir: str. Where run folders go. Defaults to `"runs"`.
        verbose: `"auto"`, 0, 1 or 2. Keras' progress output. Defaults to `"auto"`.

    Returns:
        str. The run folder.

    Raises:
        ConfigError: for a config that does not check; `ManifestError` for manifests
            that cannot be read (image files corrupt inside, which fail in the graph's
            decoder, are named with their rows); the encoders' errors for weights that
            cannot be found.
        RunError: for a `runs_dir` that is a file (or under one) or cannot be written.
        ServingError: with `[export] enabled`, for an `export.dir` that is a file (or
            under one) or cannot be written. Both are checked before any work.
    """
    import keras
    import tensorflow as tf

    from mmrep.export.versions import check_destination
    from mmrep.job import run_folder as rf
    from mmrep.job.config import config_to_toml, recheck
    from mmrep.job.data import RunData
    from mmrep.job.metrics import evaluate
    from mmrep.job.model import build_run_model, has_classifier
    from mmrep.training import select_strategy
    from mmrep.utils.atomic_write import atomic_write

    config = recheck(config)
    name = config["name"]
    options = _options(config)
    total_start = time.perf_counter()
    if config["export"]["enabled"]:
        check_destination(os.path.join(config["export"]["dir"], name), None)
    temporary = rf.new_run_folder(runs_dir, name)
    previous_policy = keras.config.dtype_policy()
    try:
        data = RunData(config, temporary)
        options.apply()
        strategy = select_strategy()
        with strategy.scope():
            run_model = build_run_model(config, classes=data.classes, captions=data.captions())
            compile_kwargs = {}
            if has_classifier(config):
                compile_kwargs = {
                    "loss": "sparse_categorical_crossentropy",
                    "metrics": ["accuracy"],
                }
            run_model.training.compile(
                optimizer=keras.optimizers.Adam(config["train"]["learning_rate"]),
                **compile_kwargs,
                **options.compile_kwargs(),
            )
        train = config["train"]
        print(
            f"Training {name}: task {config['task']}, modalities "
            f"{', '.join(config['modalities'])}, fusion {config['fusion']['kind']}, head "
            f"{config['head']['kind']}, {train['epochs']} epochs, batch {train['batch_size']}, "
            f"modality dropout {train['modality_dropout']}, {options}"
        )
        try:
            history, seconds = _fit(run_model, data, strategy, verbose)
        except tf.errors.InvalidArgumentError as error:
            named = data.decode_failure()
            if named is None:
                raise
            raise named from error
        with atomic_write(os.path.join(temporary, rf.MODEL_FILE), mode=None) as path:
            run_model.serving.save(path)  # the temporary path keeps the ".keras" suffix
        with atomic_write(os.path.join(temporary, rf.CONFIG_FILE), encoding="utf-8") as f:
            f.write(config_to_toml(config))
        rf.write_json(temporary, rf.HISTORY_FILE, history)
        try:
            evaluate(run_model, data, limit=train["limit"], folder=temporary, history=history)
        except tf.errors.InvalidArgumentError as error:
            named = data.decode_failure()
            if named is None:
                raise
            raise named from error
        run = {
            "name": name,
            "classes": data.classes,
            "strategy": type(strategy).__name__,
            "replicas": int(strategy.num_replicas_in_sync),
            "versions": _versions(),
            "training_seconds": round(seconds, 1),
            # Data, model building, saving, evaluation and plots (not the export).
            "other_seconds": round(time.perf_counter() - total_start - seconds, 1),
        }
        # The stratified split's manifests are in the run folder once it is in place.
        final = os.path.join(runs_dir, name)
        run["manifests"] = {
            split: os.path.join(final, os.path.relpath(path, temporary))
            if os.path.dirname(path) == temporary
            else path
            for split, path in data.manifests.items()
        }
        rf.write_json(temporary, rf.RUN_FILE, run)
        folder = rf.commit_run_folder(temporary, runs_dir, name)
    except BaseException:
        import shutil

        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        keras.config.set_dtype_policy(previous_policy)
    print(f"Run folder: {folder} (training {seconds:.0f} s)")
    if config["export"]["enabled"]:
        from mmrep.export import export_saved_model

        # Prints the version folder and the signatures.
        export_saved_model(
            run_model.serving,
            os.path.join(config["export"]["dir"], name),
            embeddings=run_model.embeddings,
            modalities=list(config["modalities"]),
        )
    print(f"Total time: {time.perf_counter() - total_start:.0f} s")
    return folder
