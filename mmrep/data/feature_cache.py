"""Run encoders over a data set once, cache the features on disk, resume after interruption.

Shards `shard-00000.tfrecord`, ... hold one `tf.train.Example` per input example, in order,
each feature a serialized `TensorProto` (as `tf.io.serialize_tensor` writes); `cache.json`
holds the configuration, per-example feature specs, finished shards and `"complete"`.
"""

import contextlib
import glob
import json
import os
import re

import keras
import numpy as np
import tensorflow as tf

from mmrep.utils.arguments import check_int

_FORMAT, _VERSION, _META = "mmrep.feature_cache", 1, "cache.json"


def cache_features(
    dataset,
    encoders,
    directory,
    *,
    shard_size=1024,
    batch_size=64,
    keep=("label",),
    progress=True,
    overwrite=False,
):
    """Encodes every example of a data set once and writes the features to sharded TFRecords.

    The data set is batched, each encoder is applied to its input key, and the outputs,
    with the `keep` keys copied through unchanged, are written one example per record to
    `directory/shard-00000.tfrecord`, ... (exactly `shard_size` examples per shard, the last
    one fewer). A shard is written to a `.tmp` file and renamed only when complete, then
    recorded in `directory/cache.json`, so an interrupted run (exception or kill) leaves
    only complete shards; calling again with the same arguments skips the cached examples
    without encoding them and continues. A finished cache returns at once.

    Resuming relies on the data set yielding the same examples in the same order on every
    iteration (no unseeded shuffling). Calling with other encoders, `keep` or `shard_size`
    raises; the fingerprint covers output names, input keys, and for Keras layers their
    class and `get_config()` (auto-names such as `dense_3` count as `dense`), else the
    callable's qualname, but not weights: load them before calling.

    Args:
        dataset: an unbatched, finite `tf.data.Dataset` of dict examples.
        encoders: dict `{output_name: (input_key, encoder)}`, or `{input_key: encoder}` to
            name the output like its input. An encoder is any callable mapping a batch
            `[B, ...]` to a tensor or array `[B, ...]` (a Keras model, a tf.function, a
            numpy function).
        directory: str or path. Where the cache is written; created if missing.
        shard_size: int. Examples per shard file. Defaults to 1024.
        batch_size: int. Examples per encoder call. Defaults to 64.
        keep: key or sequence of keys copied through per example. Defaults to `("label",)`.
        progress: bool. Whether to show a progress bar and a line when resuming.
            Defaults to `True`.
        overwrite: bool. Whether to delete an existing cache and start over.
            Defaults to `False`.

    Returns:
        `directory`, as a str.

    Raises:
        ValueError: unknown input or `keep` keys, an output named like a `keep` key, a batch
            unlike the first one in per-example shape or dtype, an empty or infinite data
            set, or a cache started with another configuration (pass `overwrite=True`).
        TypeError: a data set of non-dict examples or a non-callable encoder.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     {"audio": np.ones((10, 16), "float32"), "label": np.arange(10)}
    ... )
    >>> path = cache_features(ds, {"audio": np.abs}, "features/audio", shard_size=4, progress=False)
    >>> load_features_numpy(path)["audio"].shape
    (10, 16)
    """
    directory = os.fspath(directory)
    if not isinstance(dataset, tf.data.Dataset) or not isinstance(dataset.element_spec, dict):
        raise TypeError(
            "Expected `dataset` to be a tf.data.Dataset of dict examples. Received: "
            f"{type(dataset).__name__} with element_spec {getattr(dataset, 'element_spec', None)}"
        )
    shard_size = check_int("shard_size", shard_size, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    available = sorted(dataset.element_spec)
    keep = [keep] if isinstance(keep, str) else list(keep)
    if any(k not in available for k in keep):
        raise ValueError(f"Expected `keep` among the dataset's keys {available}. Received: {keep=}")
    encoders = _normalise_encoders(encoders, available, keep)
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError("Expected a finite `dataset`. Received: an infinite one (repeat()?)")
    config = {
        "encoders": {n: {"input": k, "encoder": _describe(e)} for n, (k, e) in encoders.items()},
        "keep": keep,
    }
    os.makedirs(directory, exist_ok=True)
    meta = _open_cache(directory, config, shard_size, overwrite)
    done = meta["num_examples"]
    if cardinality >= 0 and (done > cardinality or (meta["complete"] and done != cardinality)):
        raise ValueError(
            f"Expected `dataset` to be the one cached in {directory!r} ({done} examples "
            f"cached). Received: a dataset of {cardinality} examples"
        )
    if meta["complete"]:
        return directory
    total = cardinality if cardinality >= 0 else None
    bar = keras.utils.Progbar(total, unit_name="example") if progress else None
    if meta["shards"] and bar is not None:
        of = f" of {-(-total // shard_size)}" if total is not None else ""
        print(f"resuming: {len(meta['shards'])}{of} shards already cached ({done} examples)")
        bar.update(done)
    rows = _encoded_rows(dataset.skip(done).batch(batch_size), encoders, keep, meta, bar)
    writer = tmp = None
    try:
        # Row by row, so that a batch straddling two shards is split exactly at the boundary.
        for row in rows:
            if writer is None:
                tmp = os.path.join(directory, f"shard-{len(meta['shards']):05d}.tfrecord.tmp")
                writer, count = tf.io.TFRecordWriter(tmp), 0
            writer.write(_example(row))
            count += 1
            if count == shard_size:
                writer = _commit(directory, meta, writer, tmp, count)
        if writer is not None:
            writer = _commit(directory, meta, writer, tmp, count)
    finally:
        if writer is not None:  # interrupted: leave only complete shards
            writer.close()
            with contextlib.suppress(FileNotFoundError):  # renamed before the interruption
                os.remove(tmp)
    if meta["num_examples"] == 0:
        raise ValueError("Expected a non-empty `dataset`. Received: a dataset with no examples")
    meta["complete"] = True
    _write_meta(directory, meta)
    if bar is not None and total is None:  # a bar without a target never ends its line
        bar.update(meta["num_examples"], finalize=True)
    return directory


def load_features(directory):
    """Reads a finished feature cache back as a `tf.data.Dataset` of dicts, in input order.

    Args:
        directory: str or path. A directory written by `cache_features`.

    Returns:
        An unbatched `tf.data.Dataset` of dicts `{feature: tensor}` with the static shapes
        and dtypes recorded in `cache.json`, and a known cardinality.

    Raises:
        FileNotFoundError: no `cache.json`, or a shard it lists is missing.
        ValueError: the cache is incomplete or of another format version.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     {"audio": np.ones((10, 16), "float32"), "label": np.arange(10)}
    ... )
    >>> directory = cache_features(ds, {"audio": np.abs}, "audio_features", progress=False)
    >>> batch = next(iter(load_features(directory).batch(32)))
    >>> tuple(batch["audio"].shape), tuple(batch["label"].shape)
    ((10, 16), (10,))
    """
    directory = os.fspath(directory)
    meta = _read_meta(directory)
    if meta is None:
        raise FileNotFoundError(
            f"Expected a feature cache in {directory!r}. Received: a directory without "
            f"{_META}; run cache_features to create it"
        )
    if not meta["complete"]:
        raise ValueError(
            f"Expected a complete feature cache in {directory!r}. Received: an incomplete "
            f"cache ({len(meta['shards'])} shards, {meta['num_examples']} examples so far); "
            "run cache_features again to finish it"
        )
    files = [os.path.join(directory, s["file"]) for s in meta["shards"]]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise FileNotFoundError(f"Expected every shard listed in {_META}. Missing: {missing}")
    specs = {n: (tf.as_dtype(s["dtype"]), s["shape"]) for n, s in meta["features"].items()}
    schema = {n: tf.io.FixedLenFeature([], tf.string) for n in specs}

    def parse(record):
        parsed = tf.io.parse_single_example(record, schema)
        return {
            n: tf.ensure_shape(tf.io.parse_tensor(parsed[n], dtype), shape)
            for n, (dtype, shape) in specs.items()
        }

    # One file after another (no interleaving) and a deterministic map keep the input order.
    dataset = tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.apply(tf.data.experimental.assert_cardinality(meta["num_examples"]))


def load_features_numpy(directory):
    """Reads a finished feature cache into memory as `{feature: np.ndarray}` (strings as bytes).

    Args:
        directory: str or path. A directory written by `cache_features`.

    Returns:
        dict `{feature: array [N, ...]}` in input order.
    """
    dataset = load_features(directory)
    batch = next(iter(dataset.batch(int(dataset.cardinality()))))
    return {name: value.numpy() for name, value in batch.items()}


def _normalise_encoders(encoders, available, keep):
    if not isinstance(encoders, dict) or not encoders:
        raise TypeError(
            "Expected `encoders` to be a non-empty dict {output_name: (input_key, encoder)} "
            f"or {{input_key: encoder}}. Received: {encoders!r}"
        )
    result = {}
    for name, value in encoders.items():
        pair = isinstance(value, (tuple, list)) and len(value) == 2
        key, encoder = value if pair else (name, value)
        if not callable(encoder):
            raise TypeError(
                f"Expected the encoder of output {name!r} to be callable. Received: {encoder!r}"
            )
        if key not in available:
            raise ValueError(
                f"Expected the input key of output {name!r} among the dataset's keys "
                f"{available}. Received: {key!r}"
            )
        if name in keep:
            raise ValueError(
                f"Expected output names distinct from the `keep` keys {keep}. Received: "
                f"output {name!r} (name it differently: {{'{name}_features': ({key!r}, encoder)}})"
            )
        result[name] = (key, encoder)
    return result


def _describe(encoder):
    if isinstance(encoder, keras.layers.Layer):
        try:
            config = encoder.get_config()
        except NotImplementedError:  # a subclassed layer without get_config
            config = None
        if config is not None:
            return {"class_name": type(encoder).__name__, "config": _normalise_config(config)}
    function = getattr(encoder, "python_function", encoder)  # unwraps a tf.function
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    return {"callable": f"{getattr(function, '__module__', None)}.{qualname}"}


def _normalise_config(config):
    # Keras numbers auto-generated names per process (dense, dense_1, ...): the same
    # architecture rebuilt in a notebook must still resume. Build state is not configuration.
    config = json.loads(json.dumps(config, sort_keys=True, default=lambda o: type(o).__name__))

    def strip(value):
        if isinstance(value, dict):
            ignored = ("build_config", "build_input_shape")
            return {k: strip(v) for k, v in value.items() if k not in ignored}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return re.sub(r"_\d+$", "", value) if isinstance(value, str) else value

    return strip(config)


def _encoded_rows(batches, encoders, keep, meta, bar):
    """Yields `{feature: value}` per example; checks each batch against the first one's specs."""
    position = meta["num_examples"]
    for batch in batches:
        n = int(tf.shape(tf.nest.flatten(batch)[0])[0])
        columns = {k: np.asarray(batch[k]) for k in keep}
        for name, (key, encoder) in encoders.items():
            output = encoder(batch[key])
            columns[name] = np.asarray(output)
            if columns[name].ndim == 0 or len(columns[name]) != n:
                raise ValueError(
                    f"Expected encoder {name!r} to return a tensor [batch, ...] with batch {n}. "
                    f"Received: {type(output).__name__} of shape {columns[name].shape}"
                )
        specs = {
            name: {
                "dtype": "string" if a.dtype.kind in "OSU" else tf.as_dtype(a.dtype).name,
                "shape": list(a.shape[1:]),
            }
            for name, a in columns.items()
        }
        if meta["features"] is not None and specs != meta["features"]:
            raise ValueError(
                f"Expected every batch to match the first one's per-example specs "
                f"{meta['features']}. Received: {specs} in the batch starting at example {position}"
            )
        meta["features"] = specs
        for i in range(n):
            yield {name: column[i] for name, column in columns.items()}
        position += n
        if bar is not None:
            bar.update(position)


def _example(row):
    # make_tensor_proto writes the TensorProto that tf.io.serialize_tensor does (parse_tensor
    # reads either) at a third of the cost of one eager op per value.
    feature = {
        name: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[tf.make_tensor_proto(v).SerializeToString()])
        )
        for name, v in row.items()
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _commit(directory, meta, writer, tmp, count):
    writer.close()
    os.replace(tmp, tmp.removesuffix(".tmp"))
    file = os.path.basename(tmp.removesuffix(".tmp"))
    meta["shards"].append({"file": file, "num_examples": count})
    meta["num_examples"] += count
    _write_meta(directory, meta)


def _open_cache(directory, config, shard_size, overwrite):
    """Reads or starts `cache.json`, refusing another configuration, and removes leftovers."""
    shards = sorted(glob.glob(os.path.join(directory, "shard-*.tfrecord")))
    stale = glob.glob(os.path.join(directory, "shard-*.tfrecord.tmp"))
    stale.append(os.path.join(directory, _META + ".tmp"))
    meta = None if overwrite else _read_meta(directory)
    if overwrite:
        stale += shards + [os.path.join(directory, _META)]
    elif meta is None and shards:
        raise ValueError(
            f"Expected a feature cache or no shards in {directory!r}. Received: shard files "
            f"without {_META}; pass overwrite=True to delete them and start over"
        )
    elif meta is not None:
        changes = _changes(meta, config, shard_size)
        if changes:
            raise ValueError(
                f"Expected the configuration the cache in {directory!r} was started with. "
                f"Received: other {', '.join(changes)}. Pass overwrite=True to start over"
            )
        listed = [os.path.join(directory, s["file"]) for s in meta["shards"]]
        if not set(listed).issubset(shards):
            raise FileNotFoundError(
                f"Expected every shard listed in {_META} in {directory!r}. Missing: "
                f"{sorted(set(listed) - set(shards))}; pass overwrite=True to start over"
            )
        # A shard renamed just before a kill, but not yet recorded, is written again.
        stale += [s for s in shards if s not in listed]
    for path in stale:
        if os.path.exists(path):
            os.remove(path)
    if meta is None:
        meta = {"format": _FORMAT, "version": _VERSION, "config": config}
        meta.update(shard_size=shard_size, features=None, shards=[], num_examples=0)
        meta["complete"] = False
        _write_meta(directory, meta)
    return meta


def _changes(meta, config, shard_size):
    old = {"shard_size": meta["shard_size"], "keep": meta["config"]["keep"]}
    new = {"shard_size": shard_size, "keep": config["keep"]}
    for settings, cfg in ((old, meta["config"]), (new, config)):
        settings.update({f"output {n!r}": e for n, e in cfg["encoders"].items()})
    # Name a changed output rather than print it: a Keras config can run to thousands of lines.
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return [k if k.startswith("output") else f"{k} {old[k]} -> {new[k]}" for k in changed]


def _read_meta(directory):
    path = os.path.join(directory, _META)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
        raise ValueError(
            f"Expected {path} to be a {_FORMAT} version {_VERSION} file. Received: format "
            f"{meta.get('format')!r}, version {meta.get('version')!r}"
        )
    return meta


def _write_meta(directory, meta):
    # Temp file + os.replace: a kill leaves the old or the new cache.json, never half of one.
    path = os.path.join(directory, _META)
    with open(path + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
