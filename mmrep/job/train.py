"""`train_run`: the `mmrep train` main job, from mmdigits to a run folder and an export."""

import dataclasses
import os
import time

from mmrep.job.names import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_FUSION,
    FUSIONS,
    HEADS,
    check_choice,
    default_run_name,
)
from mmrep.utils.arguments import check_int

LEARNING_RATE = 2e-3


def _check_count(name, value, allow_none=True):
    if value is None and allow_none:
        return None
    return check_int(name, value, minimum=1)


def _versions():
    import keras
    import tensorflow as tf

    from mmrep import __version__

    return {"mmrep": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def _fit(job, strategy, seed, epochs, batch_size, steps_per_epoch, limit, verbose):
    from mmrep.job.data import training_dataset
    from mmrep.training import distribute_dataset

    tokenizer = job.layers["text_tokenizer"]
    train = training_dataset("train", tokenizer, seed, rerandomize=True, limit=limit)
    validation = training_dataset("validation", tokenizer, seed, rerandomize=False, limit=limit)
    train = distribute_dataset(train, batch_size, strategy)
    if steps_per_epoch is not None:
        train = train.repeat()
    validation = distribute_dataset(validation, batch_size, strategy)
    start = time.perf_counter()
    history = job.training.fit(
        train,
        validation_data=validation,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        verbose=verbose,
        shuffle=False,  # the dataset shuffles itself, every epoch
    )
    seconds = time.perf_counter() - start
    return {k: [float(v) for v in values] for k, values in history.history.items()}, seconds


def train_run(
    fusion=DEFAULT_FUSION,
    head=None,
    epochs=None,
    seed=0,
    name=None,
    runs_dir="runs",
    export_dir="saved_models",
    export=True,
    batch_size=DEFAULT_BATCH_SIZE,
    options=None,
    *,
    steps_per_epoch=None,
    limit=None,
    verbose="auto",
    sizes=None,
):
    """Trains the main job on mmdigits, evaluates it, writes `runs/<name>/`, exports it.

    Builds the model of `build_job_model(fusion, head)` under
    `mmrep.training.select_strategy()`, trains it with random modality dropout (Keras
    progress output), then writes the run folder (into a temporary folder, renamed into
    place; an existing run of the same name is replaced): `model.keras` (the serving
    model), `config.json`, `history.json`, `metrics.json` (test split; see
    `mmrep.job.metrics`) and the plots `training_curves.png`, `embedding_projection.png`,
    `retrieval_examples.png`. Prints a results table, and exports the serving model with
    its per-modality embedding signatures to `export_dir/<name>/<version>/`.

    Args:
        fusion: str. One of `FUSIONS`. Defaults to `DEFAULT_FUSION`.
        head: str or `None`. One of `HEADS`. Defaults to `None`.
        epochs: int or `None` (the job's default, `DEFAULT_EPOCHS`).
        seed: int. Seeds the weights, the data and the dropout. Defaults to `0`.
        name: str or `None` (`mmdigits_<fusion>[_<head>]`). The run's folder name.
        runs_dir: str. Where run folders go. Defaults to `"runs"`.
        export_dir: str. Where exports go. Defaults to `"saved_models"`.
        export: bool. Export a SavedModel after training. Defaults to `True`.
        batch_size: int. The global batch size. Defaults to `64`.
        options: `mmrep.training.TrainingOptions` or `None` (float32, no XLA). Its dtype
            policy is set for the run and restored afterwards.
        steps_per_epoch: int or `None`. Cap the steps per epoch (tests). Defaults to
            `None` (whole epochs).
        limit: int or `None`. Use only the first `limit` examples of every split, in
            training and evaluation (tests). Defaults to `None`.
        verbose: `"auto"`, 0, 1 or 2. Keras' progress output. Defaults to `"auto"`.
        sizes: `mmrep.job.encoders.EncoderSizes` or `None` (the defaults).

    Returns:
        str. The run folder.

    Raises:
        ValueError: for an unknown fusion or head, or bad counts or name.
    """
    import keras

    from mmrep.job import plots
    from mmrep.job import run_folder as rf
    from mmrep.job.data import DROP_RATE
    from mmrep.job.encoders import EncoderSizes, caption_vocabulary
    from mmrep.job.metrics import compute_metrics, evaluation_splits, format_table, split_arrays
    from mmrep.job.model import build_job_model
    from mmrep.training import TrainingOptions, select_strategy

    check_choice("fusion", fusion, FUSIONS)
    check_choice("head", head, HEADS, allow_none=True)
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    epochs = _check_count("epochs", epochs, allow_none=False)
    batch_size = _check_count("batch_size", batch_size, allow_none=False)
    steps_per_epoch = _check_count("steps_per_epoch", steps_per_epoch)
    limit = _check_count("limit", limit)
    options = options or TrainingOptions()
    sizes = sizes or EncoderSizes()
    name = name or default_run_name(fusion, head)
    total_start = time.perf_counter()
    temporary = rf.new_run_folder(runs_dir, name)
    previous_policy = keras.config.dtype_policy()
    try:
        options.apply()
        strategy = select_strategy()
        captions = split_arrays("train", seed)[0]["text"]
        with strategy.scope():
            job = build_job_model(
                fusion, head, vocabulary=caption_vocabulary(captions), seed=seed, sizes=sizes
            )
            job.training.compile(
                optimizer=keras.optimizers.Adam(LEARNING_RATE),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
                **options.compile_kwargs(),
            )
        print(
            f"Training {name}: fusion {fusion}, head {head}, {epochs} epochs, batch "
            f"{batch_size}, modality dropout {DROP_RATE}, {options}"
        )
        history, seconds = _fit(
            job, strategy, seed, epochs, batch_size, steps_per_epoch, limit, verbose
        )
        job.serving.save(os.path.join(temporary, rf.MODEL_FILE))
        splits = evaluation_splits(seed, limit)
        metrics, outputs = compute_metrics(job.serving, splits, embeddings=job.embeddings)
        rf.write_json(temporary, rf.METRICS_FILE, metrics)
        rf.write_json(temporary, rf.HISTORY_FILE, history)
        plots.training_curves(history, os.path.join(temporary, plots.CURVES_FILE))
        plots.save_evaluation_plots(temporary, outputs, *splits["test"], seed)
        config = {
            "name": name,
            "dataset": "mmdigits",
            "fusion": fusion,
            "head": head,
            "epochs": epochs,
            "seed": seed,
            "batch_size": batch_size,
            "steps_per_epoch": steps_per_epoch,
            "limit": limit,
            "precision": options.precision,
            "jit_compile": options.jit_compile,
            "learning_rate": LEARNING_RATE,
            "strategy": type(strategy).__name__,
            "replicas": int(strategy.num_replicas_in_sync),
            "sizes": dataclasses.asdict(sizes),
            "versions": _versions(),
            "training_seconds": round(seconds, 1),
            # Data, model building, saving, evaluation and plots (not the export).
            "other_seconds": round(time.perf_counter() - total_start - seconds, 1),
        }
        rf.write_json(temporary, rf.CONFIG_FILE, config)
        folder = rf.commit_run_folder(temporary, runs_dir, name)
    except BaseException:
        import shutil

        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        keras.config.set_dtype_policy(previous_policy)
    print(format_table(metrics))
    print(f"Run folder: {folder} (training {seconds:.0f} s)")
    if export:
        from mmrep.export import export_saved_model

        # Prints the version folder and the signatures.
        export_saved_model(job.serving, os.path.join(export_dir, name), embeddings=job.embeddings)
    print(f"Total time: {time.perf_counter() - total_start:.0f} s")
    return folder
