"""The main job's PNG plots: training curves, an embedding projection, retrieval examples.

Drawn with matplotlib's non-interactive Agg backend (no display needed); each PNG is
written atomically (`mmrep.utils.atomic_write`).
"""

import os
import textwrap

import numpy as np

from mmrep.utils.atomic_write import atomic_write

CURVES_FILE = "training_curves.png"
PROJECTION_FILE = "embedding_projection.png"
RETRIEVAL_FILE = "retrieval_examples.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path):
    """Writes `figure` to `path` as a PNG, atomically, and closes it."""
    try:
        with atomic_write(path, "wb") as f:
            figure.savefig(f, format="png", dpi=100)
    finally:
        plt.close(figure)


def _curve_keys(history):
    """`(loss key, accuracy key)` of a Keras history (accuracy may be prefixed)."""
    accuracy = next(
        (k for k in history if k.endswith("accuracy") and not k.startswith("val_")), None
    )
    return "loss", accuracy


def training_curves(history, path):
    """Loss and accuracy per epoch, training and validation, side by side.

    Args:
        history: dict `{metric: [value per epoch]}` (Keras' `History.history`).
        path: str. The PNG to write.

    Returns:
        str. `path`.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    titles = ("loss (the whole training objective)", "classifier accuracy")
    for axis, key, title in zip(axes, _curve_keys(history), titles, strict=True):
        for name, style in ((key, "-o"), (f"val_{key}", "--s")):
            values = history.get(name) if key else None
            if values:
                epochs = np.arange(1, len(values) + 1)
                label = "validation" if name.startswith("val_") else "training"
                axis.plot(epochs, values, style, label=label, markersize=3)
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.suptitle("Training curves (modality dropout in both splits)")
    figure.tight_layout()
    _save(plt, figure, path)
    return path


def project_2d(embeddings, seed=0):
    """A 2-D t-SNE projection of embeddings (PCA to 50 dimensions first when wider).

    Args:
        embeddings: array `[N, D]`.
        seed: int. The t-SNE seed. Defaults to `0`.

    Returns:
        float array `[N, 2]`.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, np.float64)
    x = x - x.mean(axis=0)
    if x.shape[1] > 50:
        x = x @ np.linalg.svd(x, full_matrices=False)[2][:50].T
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def embedding_projection(embeddings, labels, path, seed=0, title=None, class_names=None):
    """Scatter of the 2-D projection of embeddings, coloured by class, with a legend.

    Args:
        embeddings: array `[N, D]` (the fused embeddings of the evaluated split).
        labels: int array `[N]` (class indices) or `None` (one colour).
        path: str. The PNG to write.
        seed: int. The projection's seed. Defaults to `0`.
        title: str or `None`. The title.
        class_names: list of str or `None`. The legend's names of the class indices.

    Returns:
        str. `path`.
    """
    plt = _pyplot()
    points = project_2d(embeddings, seed)
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    if labels is None:
        axis.scatter(*points.T, s=12)
    else:
        classes = np.unique(labels)
        colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, value in enumerate(classes):
            chosen = labels == value
            name = class_names[value] if class_names is not None else str(value)
            axis.scatter(*points[chosen].T, s=12, color=colours(i % colours.N), label=name)
        if len(classes) <= 20:
            axis.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5))
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title or "t-SNE of the fused embeddings")
    figure.tight_layout()
    _save(plt, figure, path)
    return path


def retrieval_examples(
    queries, gallery, captions, images, labels, path, num_queries=6, k=5, seed=0, class_names=None
):
    """A grid: caption queries (one per row) and their top-k images, right or wrong.

    An image is right when it is of the query's class, or (`labels` `None`) when it is
    the query's own row.

    Args:
        queries: array `[N, D]`, text-only embeddings of the test split.
        gallery: array `[N, D]`, image-only embeddings of the test split.
        captions: array `[N]` of str or bytes.
        images: uint8 array `[N, H, W, 3]`.
        labels: int array `[N]` or `None`.
        path: str. The PNG to write.
        num_queries: int. Rows (queries of different classes). Defaults to `6`.
        k: int. Images per row. Defaults to `5`.
        seed: int. Which queries are shown. Defaults to `0`.
        class_names: list of str or `None`. Names of the class indices.

    Returns:
        str. `path`.
    """
    plt = _pyplot()
    own_rows = labels is None
    if own_rows:
        labels = np.arange(len(queries))
    k = min(k, len(gallery))

    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:num_queries]
    rows = [int(rng.choice(np.flatnonzero(labels == d))) for d in classes]
    similarity = unit(queries[rows]) @ unit(gallery).T
    figure, axes = plt.subplots(
        len(rows), k + 1, figsize=(1.6 * (k + 1) + 1.6, 1.6 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        caption = captions[row]
        caption = caption.decode() if isinstance(caption, bytes) else str(caption)
        axes[r, 0].axis("off")
        text = textwrap.fill(f'"{caption}"', 24)
        if not own_rows:
            name = class_names[labels[row]] if class_names is not None else labels[row]
            text += f"\n({name})"
        axes[r, 0].text(0.0, 0.5, text, fontsize=8, va="center")
        for c, hit in enumerate(np.argsort(-similarity[r], kind="stable")[:k], start=1):
            right = labels[hit] == labels[row]
            axis = axes[r, c]
            axis.imshow(images[hit])
            axis.set_xticks([])
            axis.set_yticks([])
            colour = "tab:green" if right else "tab:red"
            for spine in axis.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(3)
            shown = "" if own_rows or class_names is None else f" {class_names[labels[hit]]}"
            axis.set_title(("right" if right else "wrong") + shown, fontsize=8, color=colour)
    figure.suptitle(f"Text -> image retrieval: top {k} images per caption")
    figure.tight_layout()
    _save(plt, figure, path)
    return path


def save_evaluation_plots(folder, config, results, encoded, class_names=None, seed=0):
    """Writes the projection and (with text and image modalities) retrieval plots.

    Args:
        folder: str. The run folder.
        config: dict. The checked run config.
        results: dict `{condition: (outputs, rows)}` from `compute_metrics`.
        encoded: the evaluated split's `encode_split` dict (labels, media).
        class_names: list of str or `None`.
        seed: int. Defaults to `0`.

    Returns:
        list of the paths written.
    """
    labels = encoded["labels"]
    outputs, rows = results["all"]
    written = []
    if len(rows) >= 4:
        written.append(
            embedding_projection(
                outputs["embedding"],
                None if labels is None else labels[rows],
                os.path.join(folder, PROJECTION_FILE),
                seed,
                class_names=class_names,
            )
        )
    kinds = {m: t["kind"] for m, t in config["modalities"].items()}
    text = next((m for m, k in kinds.items() if k == "text"), None)
    image = next((m for m, k in kinds.items() if k == "image"), None)
    if text is None or image is None:
        return written
    (text_out, text_rows), (image_out, image_rows) = (
        results[f"{text} only"],
        results[f"{image} only"],
    )
    shown = len(encoded["media"][image])
    both = np.intersect1d(text_rows, image_rows)
    both = both[both < shown]
    if len(both) < 2:
        return written
    same_row = config["task"] == "retrieval" or labels is None
    written.append(
        retrieval_examples(
            text_out["embedding"][np.searchsorted(text_rows, both)],
            image_out["embedding"][np.searchsorted(image_rows, both)],
            encoded["media"][text][both],
            encoded["media"][image][both],
            None if same_row else labels[both],
            os.path.join(folder, RETRIEVAL_FILE),
            seed=seed,
            class_names=class_names,
        )
    )
    return written
