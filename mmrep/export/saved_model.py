"""`export_saved_model`: a Keras model as a TF Serving SavedModel with named signatures.

The export uses Keras 3's `keras.export.ExportArchive`: the model (and each embedding
model) is tracked, so its variables and lookup tables (`TextVectorization`'s vocabulary)
are saved; each signature is a `tf.function` from `mmrep.export.signatures`. The result
loads with `tf.saved_model.load` in a process that has neither mmrep nor Keras custom
objects: the graphs hold only TensorFlow ops.
"""

import datetime
import json
import os
import warnings

from mmrep.export.versions import check_destination, publish_version

DESCRIPTION_FILE = os.path.join("assets.extra", "mmrep.json")
PRESENCE = "presence"


def export_saved_model(
    model,
    path,
    *,
    version=None,
    embeddings=None,
    image_bytes=True,
    overwrite=False,
    verbose=True,
    modalities=None,
):
    """Exports a Keras model as `path/<version>/` for TensorFlow Serving.

    Writes TF Serving's layout `path/<version>/{saved_model.pb, variables/, assets/}`
    with these signatures, each taking a batch of any size (leading dimension `None`) and
    running the models in inference mode (`training=False`):

    - `serving_default`: the model. Inputs are named like the model's inputs (the keys
      of a dict input, else the `keras.Input` names); outputs are named by the keys of a
      dict output, else `output_0`, `output_1`, ... (as Keras' `model.export` names them).
      With a `presence` input, its values must be 0 or 1 with one row per example, and
      the rows a modality is absent from are replaced by zeros (`False`, `""`) in that
      modality's input and its padding inputs before the model runs: a missing modality
      is never read, so NaN or garbage there cannot reach an output.
    - `embed_<name>` for each entry of `embeddings`: inputs named like that model's
      inputs, output `"embedding"`. An embedding model has one modality input and may
      take its padding beside it, as inputs named after it: `<input>_length` (integer
      `[B]`, the valid samples or steps before zero padding) and `<input>_frame_mask`
      (bool `[B, T]`, True for real frames), as `mmrep.data.from_manifest` emits them
      (`audio_length`, `video_frame_mask`); a waveform input may then be `[B, None]`,
      clips of any length zero-padded to the longest in the batch. Strings are served
      raw when the model tokenizes in its graph (`keras.layers.TextVectorization`),
      waveforms when its audio frontend is in the graph (`mmrep.encoders.VGGish`,
      `LogMelSpectrogram`).
    - `embed_<name>_bytes` for an entry whose only input is a fixed-size image
      `[H, W, C]` (uint8 or floating, C = 1 or 3), when `image_bytes`: input
      `"<input>_bytes"`, a `tf.string` vector of encoded PNG / JPEG / GIF / BMP images,
      decoded and resized in the graph (see `mmrep.export.image_bytes`; float models
      receive pixel values 0..255). Bytes that are not an image fail at serve time with
      TensorFlow's `InvalidArgumentError`.

    `assets.extra/mmrep.json` (a folder TF Serving ignores) describes the export: mmrep,
    TensorFlow and Keras versions, the model's name, `modalities` (the order of the
    `presence` input's columns: modality inputs only, never `presence` or padding inputs
    such as `audio_length`, `video_frame_mask`), every signature's input and output
    names, dtypes and shapes, `custom_ops` (op types core TensorFlow lacks) and `requires`
    (the packages that register them, such as `tensorflow_text` for an in-graph WordPiece
    tokenizer: a serving process imports them before loading). The write is atomic (a
    hidden temporary folder in `path`, then a rename); an exception leaves no version
    folder behind.

    Args:
        model: a functional or Sequential `keras.Model` with named inputs
            (`keras.Input(..., name=...)`, or a dict of inputs).
        path: str. The TF Serving base folder (created if missing).
        version: positive int, or `None` for one more than the largest numeric version
            folder in `path` (1 if none; other entries are ignored). Defaults to `None`.
        embeddings: dict `{name: keras.Model}` of embedding models (one modality
            input, optionally with its `<input>_length` / `<input>_frame_mask` padding
            inputs; one output), or `None`. Names must be letters, digits and
            underscores. Defaults to `None`.
        image_bytes: bool. Add `embed_<name>_bytes` for image embedding models.
            Defaults to `True`.
        overwrite: bool. Replace an existing version (renamed aside, then deleted, so no
            half-written version is ever visible). Defaults to `False`.
        verbose: bool. Print one line with the version folder and the signatures.
            Defaults to `True`.
        modalities: list of str or `None`. The modality inputs in the order of the
            `presence` input's columns, recorded for `mmrep.export.embed_manifest`.
            `None` takes the model's inputs other than `presence` and the padding inputs
            (`x_length`, `x_frame_mask` beside an input `x`), in the model's input
            order. Defaults to `None`.

    Returns:
        str, the version folder `path/<version>`.

    Raises:
        TypeError: `model` or an `embeddings` value is not a `keras.Model`.
        ValueError: an input is unnamed, duplicate or nested; an embedding model has
            more than one modality input, a padding input of the wrong dtype or shape,
            or more than one output; an embedding name is invalid or two signatures
            would share a name; `modalities` does not name the model's modality inputs
            (or names `presence` or a padding input).
        ServingError: `version` is not a positive int, or `path` is a file.
        VersionExistsError: the version exists and `overwrite` is `False`.

    Example:

    >>> features = keras.Input((3,), name="features")
    >>> model = keras.Model(features, {"score": keras.layers.Dense(1)(features)})
    >>> folder = export_saved_model(model, "saved_models/scorer", verbose=False)
    >>> folder
    'saved_models/scorer/1'
    >>> served = tf.saved_model.load(folder).signatures["serving_default"]
    >>> served(features=tf.zeros((2, 3)))["score"].shape
    TensorShape([2, 1])
    """
    import keras
    import tensorflow as tf

    from mmrep.export import image_bytes as bytes_signatures
    from mmrep.export import runtime_needs, signatures

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected `model` to be a keras.Model. Received: model of type {type(model).__name__}"
        )
    check_destination(path, version, overwrite)  # fail before tracing anything
    input_names = list(signatures.input_specs(model))
    modalities = _modalities(modalities, input_names)
    # Absent rows are replaced before the model reads them (a missing modality is never read).
    functions = {"serving_default": signatures.serving_function(model, modalities)}
    tracked = [model]
    for name, embedder in _check_embeddings(embeddings).items():
        what = f"embeddings[{name!r}]"
        functions[f"embed_{name}"] = signatures.embedding_function(embedder, what)
        tracked.append(embedder)
        input_name, specs = signatures.embedding_inputs(embedder, what)
        spec = specs[input_name]
        if not image_bytes or spec.shape.rank != 4:
            continue
        problem = bytes_signatures.image_input_problem(spec)
        if problem is None and len(specs) > 1:
            problem = f"it takes padding inputs {[n for n in specs if n != input_name]}"
        if problem is not None:
            warnings.warn(
                f"export_saved_model: no embed_{name}_bytes signature: {problem}", stacklevel=2
            )
            continue
        functions[f"embed_{name}_bytes"] = bytes_signatures.image_bytes_function(
            embedder, input_name, spec
        )
    description = {
        "format": "mmrep.export/1",
        "mmrep_version": _mmrep_version(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "model_name": model.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "modalities": modalities,
        "signatures": {name: signatures.describe(fn) for name, fn in functions.items()},
    }

    def write(folder):
        archive = keras.export.ExportArchive()
        for resource in tracked:
            archive.track(resource)
        for name, fn in functions.items():
            fn.get_concrete_function()  # ExportArchive takes traced functions only
            archive.add_endpoint(name, fn)
        archive.write_out(folder, verbose=False)
        # What a serving process must import (tensorflow_text for an in-graph tokenizer).
        description["custom_ops"], description["requires"] = runtime_needs.requirements(folder)
        os.makedirs(os.path.join(folder, "assets"), exist_ok=True)
        os.makedirs(os.path.join(folder, "assets.extra"), exist_ok=True)
        with open(os.path.join(folder, DESCRIPTION_FILE), "w", encoding="utf-8") as f:
            json.dump(description, f, indent=2)

    folder = publish_version(path, version, write, overwrite=overwrite)
    if verbose:
        print(f"Exported {model.name} to {folder} (signatures: {', '.join(functions)})")
    return folder


def read_description(folder):
    """The `assets.extra/mmrep.json` of an exported version folder, or `None` if absent."""
    file = os.path.join(folder, DESCRIPTION_FILE)
    if not os.path.isfile(file):
        return None
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def _check_embeddings(embeddings):
    if embeddings is None:
        return {}
    if not isinstance(embeddings, dict):
        raise TypeError(
            "Expected `embeddings` to be a dict {name: keras.Model} or None. "
            f"Received: embeddings of type {type(embeddings).__name__}"
        )
    names = {}
    for name in embeddings:
        if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
            raise ValueError(
                "Expected `embeddings` names made of letters, digits and underscores (they "
                f"become signature names embed_<name>). Received: {name!r}"
            )
        for signature in (f"embed_{name}", f"embed_{name}_bytes"):
            if signature in names:
                raise ValueError(
                    f"`embeddings` names {names[signature]!r} and {name!r} would both "
                    f"give the signature {signature!r}; rename one"
                )
            names[signature] = name
    return embeddings


def _modalities(modalities, input_names):
    """The presence order: modality inputs only, never `presence` or padding inputs."""
    from mmrep.export.signatures import modality_inputs

    candidates = modality_inputs(input_names, exclude=(PRESENCE,))
    if modalities is None:
        return candidates
    modalities = list(modalities)
    unknown = [m for m in modalities if m not in candidates]
    if unknown or len(set(modalities)) != len(modalities):
        raise ValueError(
            "Expected `modalities` to list distinct modality inputs of the model (the "
            f"columns of `presence`, in order). Received: {modalities}; the modality "
            f"inputs are {candidates} (of the inputs {input_names}; `presence` and padding "
            "inputs `<input>_length`, `<input>_frame_mask` are not modalities)"
        )
    return modalities


def _mmrep_version():
    from mmrep import __version__

    return __version__
