"""A run's evaluation: accuracy per modality condition, linear probes, retrieval.

The encoders run once per split (`encode_split`); every condition then runs the fusion
alone on those vectors (`mmrep.job.model.vector_models`), so the nine or so conditions
cost one pass over the files. A condition is a set of present modalities; an absent
modality's vector is replaced by large random junk and marked absent in `presence`, so a
number that stays high shows that the mask keeps it out.

- `accuracy` (with a classifier): the classifier's accuracy on each row as it is
  (`all_modalities`: a row's empty cells stay missing), with each modality missing
  (rows that have it and another one) and with each one alone (rows that have it);
- `linear_probe_accuracy` (with labels): a logistic-regression probe (`mmrep.metrics`)
  trained on the training split's embeddings and scored on the evaluated split's, for
  each modality alone and for the rows as they are (`fused`);
- `retrieval`: recall@1 and recall@5 for every ordered pair of modalities (queries with
  one modality alone, gallery with another alone, over the rows that have both, cosine
  similarity). A correct item is the query's own row for `task = "retrieval"`, and any
  row of the query's class otherwise.

The evaluated split is the test manifest, else the validation one.
"""

import os

import numpy as np

RETRIEVAL_KS = (1, 5)
JUNK_SCALE = 10.0


def evaluated_split(data):
    """`"test"` when the run has a test split, else `"validation"`."""
    return "test" if data.has("test") else "validation"


def encode_split(encoders, config, dataset, batch_size=64, keep_media=256, progress=None):
    """Runs the encoders over a split once.

    Args:
        encoders: the `encoders` model of `mmrep.job.model.vector_models` (one model
            serves every split: its predict function is traced once).
        config: dict. The checked run config.
        dataset: unbatched examples (`RunData.examples`).
        batch_size: int. Defaults to `64`.
        keep_media: int. Keep the first images and captions of this many rows (plots).
        progress: str or `None`. Show a progress bar (rows encoded) with this title.

    Returns:
        dict: `"vectors"` `{modality: float32 [N, vector_dim]}`, `"presence"` `[N, M]`,
        `"labels"` int `[N]` or `None`, `"media"` `{modality: first rows}` of the first
        image and text modalities.
    """
    names = list(encoders.input)
    kinds = {m: t["kind"] for m, t in config["modalities"].items()}
    shown = [m for m, k in kinds.items() if k in ("image", "text")]
    vectors = {m: [] for m in kinds}
    presence, labels, media = [], [], {m: [] for m in shown}
    count = 0
    bar = None
    if progress is not None:
        import keras

        print(progress)
        bar = keras.utils.Progbar(None, unit_name="row")
    for batch in dataset.batch(batch_size):
        out = encoders.predict_on_batch({n: batch[n] for n in names})
        for m in kinds:
            vectors[m].append(np.asarray(out[m], np.float32))
        presence.append(batch["presence"].numpy())
        if "label" in batch:
            labels.append(batch["label"].numpy())
        if count < keep_media:
            for m in shown:
                media[m].append(batch[m].numpy())
        count += len(presence[-1])
        if bar is not None:
            bar.update(count)
    if bar is not None:
        bar.update(count, finalize=True)
    if not presence:
        raise ValueError("the split has no rows to evaluate")
    return {
        "vectors": {m: np.concatenate(v) for m, v in vectors.items()},
        "presence": np.concatenate(presence).astype(np.float32),
        "labels": np.concatenate(labels).astype(np.int64) if labels else None,
        "media": {m: np.concatenate(v)[:keep_media] for m, v in media.items()},
    }


def conditions(modalities):
    """The evaluated modality conditions: `{name: set of present modalities or None}`.

    `None` (condition `"all"`) keeps each row's own presence.
    """
    out = {"all": None}
    out.update({f"{m} missing": set(modalities) - {m} for m in modalities})
    out.update({f"{m} only": {m} for m in modalities})
    return out


def _condition_rows(presence, modalities, present):
    """Rows a condition applies to, and their presence under it."""
    if present is None:
        return np.arange(len(presence)), presence
    keep = np.array([m in present for m in modalities], np.float32)
    masked = presence * keep
    if len(present) == 1:
        rows = np.flatnonzero(masked.sum(1) > 0)
    else:
        dropped = [i for i, m in enumerate(modalities) if m not in present]
        rows = np.flatnonzero((masked.sum(1) > 0) & (presence[:, dropped].sum(1) > 0))
    return rows, masked[rows]


def run_condition(fusion, encoded, modalities, present, seed=0, batch_size=256):
    """The fusion's outputs for one condition, junk in the absent modalities.

    Args:
        fusion: the `fusion` model of `vector_models`.
        encoded: the dict of `encode_split`.
        modalities: list of str, in presence order.
        present: set of modalities, or `None` for each row's own presence.
        seed: int. The junk's seed. Defaults to `0`.
        batch_size: int. Defaults to `256`.

    Returns:
        `(outputs, rows)`: `{output: array}` for the rows the condition applies to, and
        those rows' indices.
    """
    rows, presence = _condition_rows(encoded["presence"], modalities, present)
    rng = np.random.default_rng(seed)
    feed = {}
    for i, m in enumerate(modalities):
        values = encoded["vectors"][m][rows]
        junk = JUNK_SCALE * rng.standard_normal(values.shape).astype(np.float32)
        feed[f"{m}_vector"] = np.where(presence[:, i : i + 1] > 0, values, junk)
    feed["presence"] = presence
    if not len(rows):
        return {}, rows
    out = fusion.predict(feed, batch_size=batch_size, verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}, rows


def retrieval(embeddings, labels, modalities, same_row, ks=RETRIEVAL_KS):
    """Recall@k for every ordered pair of modalities.

    Args:
        embeddings: dict `{modality: (rows, [n, D])}`, each with only that modality.
        labels: int array `[N]` or `None`.
        modalities: list of str.
        same_row: bool. Positives are the query's own row (else its class).
        ks: tuple of ints. Defaults to `(1, 5)`.

    Returns:
        dict `{"<query>-><gallery>": {"recall@k": float, "queries": int}}` for the
        pairs with rows that have both.
    """
    from mmrep.metrics import retrieval_scores

    out = {}
    for query in modalities:
        for gallery in modalities:
            if query == gallery:
                continue
            q_rows, q = embeddings[query]
            g_rows, g = embeddings[gallery]
            both = np.intersect1d(q_rows, g_rows)
            if len(both) < 2:
                continue
            q = q[np.searchsorted(q_rows, both)]
            g = g[np.searchsorted(g_rows, both)]
            positives = None if same_row else labels[both][:, None] == labels[both][None, :]
            scores = retrieval_scores(q, g, ks, positives)
            out[f"{query}->{gallery}"] = {f"recall@{k}": scores[f"recall@{k}"] for k in ks}
            out[f"{query}->{gallery}"]["queries"] = len(both)
    return out


def _accuracy(outputs, rows, labels):
    if "probabilities" not in outputs or not len(rows):
        return None
    return float(np.mean(outputs["probabilities"].argmax(-1) == labels[rows]))


def _accuracies(results, labels, modalities):
    return {
        "all_modalities": _accuracy(*results["all"], labels),
        "missing": {m: _accuracy(*results[f"{m} missing"], labels) for m in modalities},
        "only": {m: _accuracy(*results[f"{m} only"], labels) for m in modalities},
    }


def compute_metrics(fusion, config, encoded, train_encoded=None, validation_encoded=None):
    """Every metric of a run on an encoded split.

    Args:
        fusion: the `fusion` model of `mmrep.job.model.vector_models`.
        config: dict. The checked run config.
        encoded: `encode_split` of the evaluated split.
        train_encoded: `encode_split` of the training split (linear probes), or `None`.
        validation_encoded: `encode_split` of the validation split (its accuracy, when
            the evaluated split is another one), or `None`.

    Returns:
        `(metrics, results)`: the JSON-ready metrics and `{condition: (outputs, rows)}`
        of the evaluated split, for plots.
    """
    from mmrep.job.model import has_classifier
    from mmrep.metrics import linear_probe_accuracy

    modalities = list(config["modalities"])
    labels = encoded["labels"]

    def outputs_of(split):
        return {
            name: run_condition(fusion, split, modalities, present)
            for name, present in conditions(modalities).items()
        }

    results = outputs_of(encoded)
    metrics = {"examples": len(encoded["presence"])}
    metrics["rows_with"] = {
        m: int(encoded["presence"][:, i].sum()) for i, m in enumerate(modalities)
    }
    if has_classifier(config) and labels is not None:
        metrics["accuracy"] = _accuracies(results, labels, modalities)
        if validation_encoded is not None:
            metrics["validation_accuracy"] = _accuracies(
                outputs_of(validation_encoded), validation_encoded["labels"], modalities
            )
    if labels is not None and train_encoded is not None:
        probes = {}
        for name in (*modalities, "fused"):
            condition = "all" if name == "fused" else f"{name} only"
            present = conditions(modalities)[condition]
            t_out, t_rows = run_condition(fusion, train_encoded, modalities, present)
            test_out, rows = results[condition]
            if len(np.unique(train_encoded["labels"][t_rows])) < 2 or not len(rows):
                continue
            probes[name] = linear_probe_accuracy(
                t_out["embedding"],
                train_encoded["labels"][t_rows],
                test_out["embedding"],
                labels[rows],
            )
        metrics["linear_probe_accuracy"] = probes
    same_row = config["task"] == "retrieval" or labels is None
    alone = {}
    for m in modalities:
        out, rows = results[f"{m} only"]
        if len(rows):
            alone[m] = (rows, out["embedding"])
    metrics["retrieval"] = {
        "positives": "the query's own row" if same_row else "every row of the query's class",
        "similarity": "cosine",
        "pairs": retrieval(alone, labels, [m for m in modalities if m in alone], same_row),
    }
    return metrics, results


def _number(value, width=10):
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


def format_table(metrics):
    """The short results table `train_run` and `evaluate_run` print.

    Args:
        metrics: the dict of `compute_metrics` (with `"split"` and `"modalities"`).

    Returns:
        str.
    """
    modalities = metrics["modalities"]
    acc = metrics.get("accuracy")
    probe = metrics.get("linear_probe_accuracy", {})
    pairs = metrics["retrieval"]["pairs"]
    classes = metrics.get("classes")
    chance = f", chance {1 / len(classes):.2f}" if classes else ""
    lines = [
        f"Results on the {metrics['split']} split ({metrics['examples']} rows{chance})",
        f"{'modality':<10}{'missing':>10}{'alone':>10}{'probe':>10}{'->others R@1':>15}",
    ]
    for m in modalities:
        recalls = [v["recall@1"] for k, v in pairs.items() if k.startswith(f"{m}->")]
        r1 = float(np.mean(recalls)) if recalls else None
        lines.append(
            f"{m:<10}{_number(acc['missing'][m] if acc else None)}"
            f"{_number(acc['only'][m] if acc else None)}{_number(probe.get(m))}"
            f"{_number(r1, 15)}"
        )
    lines.append(
        f"{'all':<10}{_number(acc['all_modalities'] if acc else None)}{'':>10}"
        f"{_number(probe.get('fused'))}   (accuracy, fused probe)"
    )
    return "\n".join(lines)


def evaluate(run_model, data, *, limit=None, folder=None, history=None, verbose=True):
    """Evaluates a run model on its data; writes metrics and plots into `folder`.

    Args:
        run_model: a `RunModel`.
        data: the run's `RunData` (or one over another manifest).
        limit: int or `None`. Rows per split (tests).
        folder: str or `None`. Where `metrics.json` and the plots go.
        history: dict or `None`. Keras' history, for the training curves.
        verbose: bool. Show progress while encoding and print the table. Defaults to
            `True`.

    Returns:
        dict. The metrics.
    """
    from mmrep.job import plots
    from mmrep.job import run_folder as rf
    from mmrep.job.model import vector_models

    config = run_model.config
    encoders, fusion = vector_models(run_model.layers, config)
    split = evaluated_split(data)
    batch = config["train"]["batch_size"]

    def encoded_split(name):
        title = f"Encoding the {name} split" if verbose else None
        examples = data.examples(name, limit=limit)
        return encode_split(encoders, config, examples, batch, progress=title)

    encoded = encoded_split(split)
    train_encoded = encoded_split("train") if encoded["labels"] is not None else None
    validation_encoded = None
    if split == "test" and data.has("validation") and encoded["labels"] is not None:
        validation_encoded = encoded_split("validation")
    metrics, results = compute_metrics(fusion, config, encoded, train_encoded, validation_encoded)
    metrics = {
        "split": split,
        "modalities": list(config["modalities"]),
        "classes": run_model.classes,
        **metrics,
    }
    if folder is not None:
        rf.write_json(folder, rf.METRICS_FILE, metrics)
        if history is not None:
            plots.training_curves(history, os.path.join(folder, plots.CURVES_FILE))
        plots.save_evaluation_plots(folder, config, results, encoded, run_model.classes)
    if verbose:
        print(format_table(metrics))
    return metrics
