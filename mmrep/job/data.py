"""A run's data: manifests (or mmdigits) as training pipelines and evaluation splits.

`RunData(config, folder)` reads the config's `[data]`: the train, validation and test
manifests (a stratified split of train when there is no validation manifest, written
into the run folder), or the built-in mmdigits. It gives

- `classes`: the label values of the training split, sorted (numerically when they are
  all integers), in the classifier's order; labels of other splits must be among them;
- `examples(split)`: unbatched decoded examples as the serving model takes them
  (`from_manifest`'s dicts: each modality, `<audio>_length`, `<video>_frame_mask`,
  `presence`) with `"label"` (int32 class index, when the run has labels);
- `training(split, layers)`: `(features, label)` for `fit`, text tokenised into
  `<text>_ids` / `<text>_mask`, with random modality dropout (`with_modality_dropout`:
  a row's own missing modalities stay missing).
"""

import json
import os

import numpy as np

from mmrep.data.manifest import ManifestError, frame_mask_key, length_key, read_rows
from mmrep.data.manifest_file import read_labels, read_manifest
from mmrep.utils.atomic_write import atomic_write

SPLITS = ("train", "validation", "test")
FILE_KINDS = ("image", "audio", "video")


def _class_order(values):
    values = sorted({str(v) for v in values})
    try:
        return sorted(values, key=int)
    except ValueError:
        return values


def _stratified_split(rows, label, fraction, seed):
    """`(train rows, validation rows)`: `fraction` of each label's rows, at least one."""
    rng = np.random.default_rng(seed)
    by_label = {}
    for index, row in enumerate(rows):
        by_label.setdefault(str(row.get(label, "")), []).append(index)
    held = set()
    for indices in by_label.values():
        if len(indices) < 2:
            continue
        count = min(len(indices) - 1, max(1, round(fraction * len(indices))))
        held.update(rng.permutation(indices)[:count].tolist())
    return [r for i, r in enumerate(rows) if i not in held], [
        r for i, r in enumerate(rows) if i in held
    ]


def _absolute_rows(rows, root, kinds):
    out = []
    for row in rows:
        row = dict(row)
        for column, kind in kinds.items():
            value = row.get(column)
            if kind in FILE_KINDS and isinstance(value, str) and value.strip():
                row[column] = os.path.normpath(os.path.join(root, value))
        out.append(row)
    return out


def _write_jsonl(path, rows):
    """Writes rows as JSON Lines atomically (`mmrep.utils.atomic_write`)."""
    with atomic_write(path, encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


class RunData:
    """The data of a run config (see the module docstring).

    Args:
        config: dict. The checked run config.
        folder: str or `None`. Where a stratified validation split is written
            (`train_split.jsonl`, `validation_split.jsonl`); `None` for a temporary
            folder's worth of nothing: the split is then kept in memory only when the
            config names a validation manifest.

    Raises:
        ManifestError: for a manifest without the label column, labels of a split that
            the training split does not have, or too few rows to split.
    """

    def __init__(self, config, folder=None):
        self.config = config
        self.kinds = {m: t["kind"] for m, t in config["modalities"].items()}
        data = config["data"]
        self.builtin = data.get("builtin")
        self.label = None if self.builtin else data["label"]
        self.manifests = {}
        # The folder a split manifest's paths lie in: the stratified split, written into
        # the run folder, holds absolute paths into the train manifest's folder.
        self.roots = {}
        if self.builtin:
            self.classes = [str(d) for d in range(10)] if self._labelled() else None
            return
        self.manifests = {s: data[s] for s in SPLITS if data.get(s)}
        self.paths = {"root": data.get("root"), "allow_outside": data.get("allow_outside", False)}
        if "validation" not in self.manifests:
            self._split_validation(folder)
        self.classes = self._read_classes() if self._labelled() else None

    def _root(self, split):
        """The folder a split's paths must lie in (`None`: its manifest's folder)."""
        return self.roots.get(split) or self.paths["root"]

    def _labelled(self):
        return self.config["task"] in ("classification", "both") or self.label is not None

    def _split_validation(self, folder):
        data = self.config["data"]
        path = data["train"]
        rows = read_rows(path)
        label = self.label or ""
        train, validation = _stratified_split(
            rows, label, data["validation_fraction"], self.config["seed"]
        )
        if not validation or not train:
            raise ManifestError(
                f"{path}: {len(rows)} rows are too few to hold out a validation split "
                "(`data.validation_fraction`); give `data.validation` a manifest"
            )
        if folder is None:
            raise ValueError("RunData needs a folder to write the stratified split into")
        root = os.path.dirname(os.path.abspath(path))
        for split, part in (("train", train), ("validation", validation)):
            file = os.path.join(folder, f"{split}_split.jsonl")
            self.manifests[split] = _write_jsonl(file, _absolute_rows(part, root, self.kinds))
            self.roots[split] = self.paths["root"] or root

    def _read_classes(self):
        found = {}
        for split, path in self.manifests.items():
            rows = read_rows(path)
            missing = [i + 1 for i, r in enumerate(rows) if self.label not in r]
            if missing:
                raise ManifestError(
                    f"{path}: rows {missing[:10]} have no {self.label!r} column; the run's "
                    f"task {self.config['task']!r} needs a label on every row "
                    "(`data.label` names the column)"
                )
            # As `from_manifest` reads them ("007" is 7), so the lookup finds every label.
            labels = read_labels(read_manifest(path), self.label)
            found[split] = {str(v) for v in labels.tolist()}
        classes = _class_order(found["train"])
        for split, values in found.items():
            unknown = sorted(values - set(classes))
            if unknown:
                raise ManifestError(
                    f"{self.manifests[split]}: labels {unknown[:10]} do not occur in the "
                    f"training split (classes: {classes[:20]})"
                )
        if len(classes) < 2:
            raise ManifestError(
                f"{self.manifests['train']}: the training split has {len(classes)} class "
                f"{classes}; classification needs two or more"
            )
        return classes

    def undecodable_images(self, limit=10):
        """The image cells of the run's manifests that the graph's decoder refuses.

        Returns:
            A list of `"<manifest>, row <n>, <column> file <path>: <reason>"`, at most
            `limit` (none for the built-in data set).
        """
        from mmrep.data.manifest import undecodable_images

        if self.builtin:
            return []
        found = []
        for split, path in self.manifests.items():
            bad = undecodable_images(
                path,
                modalities=self.kinds,
                ignore=self.config["data"]["ignore"],
                label=self.label or "label",
                root=None if self.paths["allow_outside"] else self._root(split),
                allow_outside=self.paths["allow_outside"],
                limit=limit - len(found),
            )
            found += [
                f"{path}, row {b['row']}, {b['column']} file {b['file']!r}: {b['reason']}"
                for b in bad
            ]
            if len(found) >= limit:
                break
        return found

    def decode_failure(self):
        """A `ManifestError` naming the image files the graph cannot decode, or `None`.

        An image file complete in form but corrupt inside passes `from_manifest`'s check
        and fails in the graph's decoder (`InvalidArgumentError`) without naming its row;
        after such a failure the manifests are decoded eagerly to name every such file.
        """
        bad = self.undecodable_images()
        if not bad:
            return None
        return ManifestError(
            f"{len(bad)}{'+' if len(bad) >= 10 else ''} image files pass the file check but "
            "do not decode (corrupt inside); fix or remove their rows:\n  " + "\n  ".join(bad)
        )

    def has(self, split):
        """Whether the run has this split (the built-in data set has all three)."""
        return bool(self.builtin) or split in self.manifests

    def captions(self):
        """`{text modality: array of str}` of the training split (for vocabularies)."""
        text = [m for m, k in self.kinds.items() if k == "text"]
        if not text:
            return {}
        if self.builtin:
            from mmrep.data.mmdigits import load_mmdigits

            arrays = load_mmdigits("train", seed=self.config["seed"], as_numpy=True)
            return {m: np.asarray(arrays["text"]) for m in text}
        rows = read_rows(self.manifests["train"])
        return {m: np.array([str(r[m]) for r in rows if r.get(m)], dtype=object) for m in text}

    def _sizes(self):
        tables = self.config["modalities"]

        def one(kind, key):
            values = {t[key] for t in tables.values() if t["kind"] == kind}
            if len(values) > 1:
                raise ManifestError(
                    f"the {kind} modalities ask for different `{key}` values {sorted(values)}; "
                    "a manifest is read at one size per kind"
                )
            return values.pop() if values else None

        return {
            "image_size": one("image", "image_size") or 224,
            "audio_seconds": one("audio", "seconds"),
            "video_size": one("video", "frame_size") or 112,
            "video_frames": one("video", "num_frames"),
            "video_sampling": one("video", "sampling") or "first",
            "video_fps": one("video", "fps"),
        }

    def examples(self, split, *, limit=None, augment=False):
        """Unbatched decoded examples of a split, labels as class indices.

        Args:
            split: str. One of `SPLITS` the run has.
            limit: int or `None`. Keep the first `limit` examples (tests).
            augment: bool. The built-in data set's training augmentation (audio gain,
                noise and placement, new at every pass); manifests are read as they are.
                Defaults to `False` (evaluation).

        Returns:
            A `tf.data.Dataset` of dicts (serving inputs, `presence`, `"label"`).
        """
        import tensorflow as tf

        if self.builtin:
            dataset = self._mmdigits(split, augment)
        else:
            from mmrep.data.manifest import from_manifest

            dataset = from_manifest(
                self.manifests[split],
                modalities=self.kinds,
                ignore=self.config["data"]["ignore"],
                label=self.label or "label",
                root=None if self.paths["allow_outside"] else self._root(split),
                allow_outside=self.paths["allow_outside"],
                **self._sizes(),
            )
            if self.classes is not None:
                table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(
                        tf.constant(self.classes), tf.range(len(self.classes), dtype=tf.int32)
                    ),
                    default_value=-1,
                )

                def index(example):
                    value = example["label"]
                    if value.dtype != tf.string:
                        value = tf.strings.as_string(value)
                    return {**example, "label": table.lookup(value)}

                dataset = dataset.map(index)
            elif self.label is None:
                dataset = dataset.map(lambda e: {k: v for k, v in e.items() if k != "label"})
        if limit is not None:
            dataset = dataset.take(limit)
        return dataset

    def _mmdigits(self, split, augment):
        import tensorflow as tf

        from mmrep.data.mmdigits import load_mmdigits

        tables = self.config["modalities"]
        video = tables.get("video", {})
        dataset = load_mmdigits(
            split,
            modalities=list(self.kinds),
            image_size=tables.get("image", {}).get("image_size", 32),
            video_frames=video.get("num_frames", 16),
            video_size=video.get("frame_size", 32),
            audio_seconds=tables.get("audio", {}).get("seconds", 1.0),
            seed=self.config["seed"],
            augment=augment,
        )

        def complete(example):
            example = dict(example)
            for m, kind in self.kinds.items():
                if kind == "audio":
                    example[length_key(m)] = tf.shape(example[m], out_type=tf.int32)[0]
                elif kind == "video":
                    example[frame_mask_key(m)] = tf.ones(tf.shape(example[m])[:1], tf.bool)
            example["presence"] = tf.ones((len(self.kinds),), tf.float32)
            example["label"] = tf.cast(example["label"], tf.int32)
            return example

        return dataset.map(complete, num_parallel_calls=tf.data.AUTOTUNE)

    def training(self, split, layers, *, rerandomize, limit=None):
        """`(features, label)` examples for `fit` (features alone without labels).

        Args:
            split: str. `"train"` or `"validation"`.
            layers: dict `{name: layer}` of the run model (its text tokenizers).
            rerandomize: bool. New dropout masks every epoch (and a reshuffle, for train).
            limit: int or `None`. Keep the first `limit` examples (tests).

        Returns:
            An unbatched `tf.data.Dataset`.
        """
        import tensorflow as tf

        from mmrep.data.modality_dropout import with_modality_dropout
        from mmrep.job.encoders import tokenize

        train = self.config["train"]
        dataset = self.examples(split, limit=limit, augment=split == "train")
        if split == "train":
            dataset = dataset.shuffle(2048, seed=self.config["seed"], reshuffle_each_iteration=True)
        if train["modality_dropout"] > 0:
            dataset = with_modality_dropout(
                dataset,
                list(self.kinds),
                self.config["seed"] + 1,
                rate=train["modality_dropout"],
                rerandomize=rerandomize,
            )
        text = [m for m, k in self.kinds.items() if k == "text"]
        labelled = self.classes is not None

        def prepare(example):
            features = {k: v for k, v in example.items() if k not in (*text, "label")}
            for m in text:
                ids, mask = tokenize(layers, m, example[m][None])
                features[f"{m}_ids"] = tf.cast(ids[0], tf.int32)
                features[f"{m}_mask"] = tf.cast(mask[0], tf.int32)
            return (features, example["label"]) if labelled else features

        return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
