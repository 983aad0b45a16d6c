"""The main job's evaluation: accuracy per modality condition, linear probes, retrieval.

Every number comes from the serving model on raw inputs. A condition is a set of present
modalities; the absent ones hold junk (`mmrep.job.data.junk_like`) and are marked absent
in `presence`, so a number that stays high shows that the mask keeps the junk out.

- `accuracy`: the classifier's test accuracy with all modalities, with each one missing
  and with each one alone;
- `linear_probe_accuracy`: a logistic-regression probe (`mmrep.metrics`) trained on the
  training split's embeddings and scored on the test split's, for each modality alone and
  for all of them fused;
- `retrieval`: recall@1 and recall@5 for every ordered pair of modalities (queries with
  one modality alone, gallery with another alone, cosine similarity), where any test
  example of the query's digit counts as a correct item.
"""

import os

import numpy as np

from mmrep.data.mmdigits import MODALITIES, load_mmdigits
from mmrep.job.data import with_absent

RETRIEVAL_KS = (1, 5)
POSITIVES = "same digit: every gallery example of the query's digit is a correct item"


def conditions():
    """The evaluated modality conditions: `{name: set of present modalities}`.

    Returns:
        dict with `"all"`, `"<m> missing"` and `"<m> only"` for each modality.
    """
    out = {"all": set(MODALITIES)}
    out.update({f"{m} missing": set(MODALITIES) - {m} for m in MODALITIES})
    out.update({f"{m} only": {m} for m in MODALITIES})
    return out


def split_arrays(split, seed, limit=None):
    """The numpy arrays of an mmdigits split as evaluation sees them (no augmentation).

    Args:
        split: str. `"train"`, `"validation"` or `"test"`.
        seed: int. The data seed of the run.
        limit: int or `None`. Keep only the first `limit` examples (tests).

    Returns:
        `(features, labels)`: dict `{modality: array}` and int labels `[N]`.
    """
    arrays = load_mmdigits(split, seed=seed, augment=False, as_numpy=True)
    stop = len(arrays["label"]) if limit is None else limit
    return {m: arrays[m][:stop] for m in MODALITIES}, np.asarray(arrays["label"][:stop])


def evaluation_splits(seed, limit=None):
    """The three splits as `split_arrays` gives them: `{split: (features, labels)}`.

    Args:
        seed: int. The data seed of the run.
        limit: int or `None`. Keep only the first `limit` examples of each (tests).

    Returns:
        dict with `"train"`, `"validation"` and `"test"`.
    """
    return {s: split_arrays(s, seed, limit) for s in ("train", "validation", "test")}


def predict(serving, features, present, batch_size=128):
    """Runs the serving model with only `present` modalities (junk in the others).

    Args:
        serving: the serving `keras.Model`.
        features: dict `{modality: array}`.
        present: collection of modality names.
        batch_size: int. Defaults to `128`.

    Returns:
        dict `{"embedding": [N, D], "probabilities": [N, 10]}` of float numpy arrays.
    """
    import tensorflow as tf

    inputs = with_absent(features, present)
    inputs["text"] = tf.constant(inputs["text"])
    out = serving.predict(inputs, batch_size=batch_size, verbose=0)
    return {k: np.asarray(out[k]) for k in ("embedding", "probabilities")}


def embed(model, values, batch_size=128):
    """Runs a single-modality embedding model on one modality's array.

    Args:
        model: a model of `mmrep.job.model.embedding_models`.
        values: array of that modality (text: str or bytes).
        batch_size: int. Defaults to `128`.

    Returns:
        float array `[N, D]`.
    """
    import tensorflow as tf

    if values.dtype == object or values.dtype.kind in "SU":
        values = tf.constant([v if isinstance(v, bytes) else str(v).encode() for v in values])
    return np.asarray(model.predict(values, batch_size=batch_size, verbose=0))


def accuracies(outputs, labels):
    """Classifier accuracy per condition.

    Args:
        outputs: dict `{condition: predict(...) result}` with every name of `conditions()`.
        labels: int array `[N]`.

    Returns:
        dict `{"all_modalities": float, "missing": {m: float}, "only": {m: float}}`.
    """

    def score(name):
        return float(np.mean(outputs[name]["probabilities"].argmax(-1) == labels))

    return {
        "all_modalities": score("all"),
        "missing": {m: score(f"{m} missing") for m in MODALITIES},
        "only": {m: score(f"{m} only") for m in MODALITIES},
    }


def retrieval(embeddings, labels, ks=RETRIEVAL_KS):
    """Recall@k for every ordered pair of modalities, positives = same digit.

    Args:
        embeddings: dict `{modality: [N, D]}`, each with only that modality present.
        labels: int array `[N]`, the digit of each row.
        ks: tuple of ints. Defaults to `(1, 5)`.

    Returns:
        dict `{"<query>-><gallery>": {"recall@k": float}}`.
    """
    from mmrep.metrics import retrieval_scores

    positives = labels[:, None] == labels[None, :]
    out = {}
    for query in MODALITIES:
        for gallery in MODALITIES:
            if query == gallery:
                continue
            scores = retrieval_scores(embeddings[query], embeddings[gallery], ks, positives)
            out[f"{query}->{gallery}"] = {f"recall@{k}": scores[f"recall@{k}"] for k in ks}
    return out


def compute_metrics(serving, splits, embeddings=None):
    """All metrics of a serving model on the test split (probes trained on train).

    Args:
        serving: the serving `keras.Model`.
        splits: dict `{split: (features, labels)}` from `evaluation_splits`.
        embeddings: dict `{modality: keras.Model}` of the single-modality models, or
            `None` to rebuild them from the serving model's layers.

    Returns:
        `(metrics, outputs)`: the JSON-ready metrics dict and the test outputs per
        condition (`{condition: {"embedding", "probabilities"}}`), for plots.
    """
    from mmrep.metrics import linear_probe_accuracy

    train_features, train_labels = splits["train"]
    test_features, test_labels = splits["test"]
    outputs = {
        name: predict(serving, test_features, present) for name, present in conditions().items()
    }
    if embeddings is None:
        from mmrep.job.model import embedding_models, layers_of

        embeddings = embedding_models(*layers_of(serving), serving.name)
    probes = {}
    for m in (*MODALITIES, "fused"):
        if m == "fused":
            train_embedding = predict(serving, train_features, MODALITIES)["embedding"]
        else:
            # The single-modality model equals the serving model with only `m` present,
            # and encodes one modality instead of four.
            train_embedding = embed(embeddings[m], train_features[m])
        key = "all" if m == "fused" else f"{m} only"
        probes[m] = linear_probe_accuracy(
            train_embedding, train_labels, outputs[key]["embedding"], test_labels
        )
    alone = {m: outputs[f"{m} only"]["embedding"] for m in MODALITIES}
    validation_features, validation_labels = splits["validation"]
    validation_outputs = {
        name: predict(serving, validation_features, present)
        for name, present in conditions().items()
    }
    metrics = {
        "split": "test",
        "examples": len(test_labels),
        "accuracy": accuracies(outputs, test_labels),
        "linear_probe_accuracy": probes,
        # On the validation split, as the default fusion was chosen.
        "validation_accuracy": accuracies(validation_outputs, validation_labels),
        "retrieval": {
            "positives": POSITIVES,
            "similarity": "cosine",
            "pairs": retrieval(alone, test_labels),
        },
    }
    return metrics, outputs


def format_table(metrics):
    """The short results table `train_run` and `evaluate_run` print.

    Args:
        metrics: the dict of `compute_metrics`.

    Returns:
        str.
    """
    acc, probe = metrics["accuracy"], metrics["linear_probe_accuracy"]
    pairs = metrics["retrieval"]["pairs"]
    lines = [
        f"Test results ({metrics['examples']} examples, chance 0.10)",
        f"{'modality':<10}{'missing':>10}{'alone':>10}{'probe':>10}{'->others R@1':>15}",
    ]
    for m in MODALITIES:
        r1 = np.mean([v["recall@1"] for k, v in pairs.items() if k.startswith(f"{m}->")])
        lines.append(
            f"{m:<10}{acc['missing'][m]:>10.3f}{acc['only'][m]:>10.3f}{probe[m]:>10.3f}{r1:>15.3f}"
        )
    lines.append(
        f"{'all':<10}{acc['all_modalities']:>10.3f}{'':>10}{probe['fused']:>10.3f}"
        "   (accuracy, fused probe)"
    )
    return "\n".join(lines)


def evaluate_run(run, runs_dir="runs", verbose=True):
    """Recomputes a run's metrics and plots from its saved model.

    Reloads `model.keras`, recomputes `metrics.json`, `embedding_projection.png` and
    `retrieval_examples.png` on the test split, redraws `training_curves.png` from
    `history.json` (when present), and prints the results table.

    Args:
        run: str or path. A run folder, or a run name in `runs_dir`.
        runs_dir: str or path. Where run names are looked up. Defaults to `"runs"`.
        verbose: bool. Print the table. Defaults to `True`.

    Returns:
        dict. The metrics written to `metrics.json`.

    Raises:
        RunNotFoundError: (a `RunError` and `FileNotFoundError`) for a missing run or
            model file; the message names the folder and what it holds.
        RunError: for a model that is not a main-job model or unreadable JSON.
    """
    from mmrep.job import plots
    from mmrep.job import run_folder as rf

    folder = rf.resolve_run(run, runs_dir)
    config = rf.read_json(folder, rf.CONFIG_FILE, required=False) or {}
    serving = load_serving_model(folder)
    seed = int(config.get("seed", 0))
    # As the run was evaluated: its data seed, and its example limit (tests) if any.
    splits = evaluation_splits(seed, config.get("limit"))
    metrics, outputs = compute_metrics(serving, splits)
    rf.write_json(folder, rf.METRICS_FILE, metrics)
    plots.save_evaluation_plots(folder, outputs, *splits["test"], seed)
    history = rf.read_json(folder, rf.HISTORY_FILE, required=False)
    if history is not None:
        plots.training_curves(history, os.path.join(folder, plots.CURVES_FILE))
    if verbose:
        print(format_table(metrics))
        print(f"Wrote {os.path.join(folder, rf.METRICS_FILE)} and the plots")
    return metrics


def load_serving_model(folder):
    """Loads `folder/model.keras`, checking that it is a main-job serving model.

    Args:
        folder: str. A run folder.

    Returns:
        The serving `keras.Model`.

    Raises:
        RunError: when the file cannot be loaded or is another model.
    """
    import keras

    from mmrep.job import run_folder as rf
    from mmrep.job.model import layers_of

    path = os.path.join(folder, rf.MODEL_FILE)
    try:
        model = keras.models.load_model(path)
        layers_of(model)
    except (OSError, ValueError, TypeError) as error:
        raise rf.RunError(f"{path!r} is not a main-job model that loads: {error}") from None
    return model
