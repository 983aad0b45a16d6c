"""Serving functions for Keras models: named inputs in, named outputs out, inference mode.

A SavedModel signature is a function of named tensors returning named tensors. These
helpers turn a functional (or Sequential) Keras model into such a `tf.function`: one
argument, a dict keyed by the model's input names, every leading (batch) dimension
`None`, the model called with `training=False`, and a dict of outputs. TensorFlow takes
the signature's input names from the `TensorSpec` names and its output names from the
returned dict's keys. An embedding model has one modality input and may take its
padding beside it, as inputs named after it: `<input>_length` (integer `[B]`) and
`<input>_frame_mask` (bool `[B, T]`), the keys `mmrep.data.from_manifest` emits.

A model's `presence` input (`[B, M]`, 1 present, 0 missing) is checked by its serving
function before the model runs: values other than 0 and 1, or another number of rows
than the other inputs' batch, fail the call with `InvalidArgumentError` (in-graph
assertions). Keeping a missing modality's values from its encoder is the model's part:
the main job's model gates them (`mmrep.job.graph_layers.PresenceGate`).
"""

import re

import keras
import tensorflow as tf

from mmrep.utils.value_checks import checked_flags

# TensorFlow's rule for the names of signature inputs and outputs.
_SIGNATURE_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-]*$")
# Names Keras gives to tensors of a `keras.Input` created without `name=`.
_AUTO_NAME = re.compile(r"^keras_tensor(_\d+)?$")


def _input_structure(model, what):
    """`(kind, {name: KerasTensor})` of a model's inputs, kind "dict", "list" or "single"."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected `{what}` to be a keras.Model. Received: {what} of type "
            f"{type(model).__name__}"
        )
    try:
        structure = model.input
    except (AttributeError, ValueError):
        structure = getattr(model, "inputs", None)
    if structure is None or (isinstance(structure, (list, tuple, dict)) and not structure):
        raise ValueError(
            f"`{what}` ({model.name}) has no symbolic inputs: export needs a functional or "
            "Sequential model built on `keras.Input(..., name=...)`. Wrap a subclassed model "
            "in a functional one: `keras.Model(inputs, model(inputs))`."
        )
    if isinstance(structure, dict):
        named = dict(structure)
        kind = "dict"
    elif isinstance(structure, (list, tuple)):
        named = {tensor.name: tensor for tensor in structure}
        kind = "list" if len(structure) > 1 else "single"
        if len(named) != len(structure):
            names = [tensor.name for tensor in structure]
            raise ValueError(
                f"`{what}` ({model.name}) has inputs with duplicate names: {names}. Give "
                "each `keras.Input` its own `name=`."
            )
    else:
        named = {structure.name: structure}
        kind = "single"
    for name, tensor in named.items():
        if not isinstance(tensor, keras.KerasTensor):
            raise ValueError(
                f"`{what}` ({model.name}): input {name!r} is a nested structure; export "
                "supports a flat dict, a list or a single `keras.Input`."
            )
        if kind != "dict" and _AUTO_NAME.match(name):
            raise ValueError(
                f"`{what}` ({model.name}) has an unnamed input ({name!r}, shape "
                f"{tensor.shape}, {tensor.dtype}): the serving signature names its inputs "
                "after the model's. Create it with `keras.Input(..., name='...')`."
            )
        if not _SIGNATURE_NAME.match(str(name)):
            raise ValueError(
                f"`{what}` ({model.name}): input name {name!r} cannot name a signature "
                "input; use letters, digits, '_', '.' or '-'."
            )
    return kind, named


def input_specs(model, what="model"):
    """The `tf.TensorSpec`s of a model's inputs, keyed and named by input name.

    Args:
        model: a functional or Sequential `keras.Model`.
        what: str. The argument's name, for error messages. Defaults to `"model"`.

    Returns:
        dict `{name: tf.TensorSpec}` in the model's input order, batch dimension `None`.

    Raises:
        TypeError: `model` is not a `keras.Model`.
        ValueError: the model has no symbolic inputs, or an unnamed, duplicate, nested or
            invalid input name.
    """
    _, named = _input_structure(model, what)
    return {
        name: tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype, name=name)
        for name, tensor in named.items()
    }


def named_outputs(outputs):
    """A model's outputs as a dict: dict keys kept, else `output_0`, `output_1`, ...

    Keras' own `model.export` names positional outputs the same way.
    """
    if isinstance(outputs, dict):
        return {str(k): v for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return {f"output_{i}": v for i, v in enumerate(outputs)}
    return {"output_0": outputs}


def serving_function(model, modalities=None):
    """A `tf.function` calling `model` in inference mode on a dict of named inputs.

    With a `presence` input and `modalities` (its columns, in order), the rows a modality
    is absent from are replaced before the model sees them, in the modality's input and
    its padding inputs (`<m>_length`, `<m>_frame_mask`): zeros, `False` or `""`. So a
    missing modality is never read, whatever the model does with it: NaN, infinities or
    values out of range there reach neither its checks nor its outputs.

    Args:
        model: a functional or Sequential `keras.Model` with named inputs.
        modalities: list of str or `None`. The presence columns' modality inputs.
            Defaults to `None` (inputs passed as they come).

    Returns:
        A `tf.function` with an input signature `[{name: TensorSpec}]`, returning a dict
        of outputs (see `named_outputs`).
    """
    kind, named = _input_structure(model, "model")
    specs = input_specs(model)
    names = list(named)

    @tf.function(input_signature=[specs])
    def serve(inputs):
        inputs = gated_by_presence(checked_presence(inputs), modalities or ())
        return named_outputs(model(_feed(kind, names, inputs), training=False))

    return serve


def gated_by_presence(inputs, modalities):
    """`inputs` with each modality's rows replaced where its `presence` column is 0.

    Args:
        inputs: dict `{name: tensor}` holding `presence` `[B, M]` (else returned as is).
        modalities: the `M` modality input names, in presence-column order.

    Returns:
        The dict, the inputs `m`, `m_length` and `m_frame_mask` of each modality `m`
        replaced by zeros (`False`, `""`) in the rows where `m` is absent.
    """
    presence = inputs.get(PRESENCE)
    if presence is None or not modalities:
        return inputs
    present = tf.cast(presence, tf.bool) if presence.dtype != tf.bool else presence
    gated = dict(inputs)
    for column, modality in enumerate(modalities):
        keep = present[:, column]
        for name in (modality, modality + LENGTH_SUFFIX, modality + FRAME_MASK_SUFFIX):
            if name not in gated:
                continue
            x = gated[name]
            shape = tf.concat([tf.shape(keep), tf.ones([tf.rank(x) - 1], tf.int32)], 0)
            gated[name] = tf.where(tf.reshape(keep, shape), x, tf.zeros_like(x))
    return gated


PRESENCE = "presence"


def checked_presence(inputs):
    """Named inputs with their `presence` (if any) checked: 0 or 1, one row per example.

    A `presence` of another batch size than the other inputs would broadcast (one row) or
    pair examples with the wrong flags; a value such as 0.5 or NaN is neither present nor
    missing. Both are in-graph assertions (`InvalidArgumentError` when the signature runs;
    XLA compiles assertions away). A bool presence is only checked for its batch size.

    Args:
        inputs: dict `{name: tensor}` of a signature's inputs.

    Returns:
        The dict, `presence` replaced by the checked tensor.
    """
    presence = inputs.get(PRESENCE)
    if presence is None:
        return inputs
    checks = [
        tf.debugging.assert_equal(
            tf.shape(presence)[0],
            tf.shape(tensor)[0],
            message=f"`presence` must have one row per example of the input {name!r}",
        )
        for name, tensor in inputs.items()
        if name != PRESENCE
    ]
    with tf.control_dependencies(checks):
        presence = tf.identity(presence)
    return {**inputs, PRESENCE: checked_flags(presence, "serving_default", "`presence` values")}


# Padding inputs: an embedding model may take, beside its modality input `x`, the
# lengths `x_length` (integer [B]: valid samples or steps before zero padding) and the
# frame mask `x_frame_mask` (bool [B, T]: True for real frames), the keys
# `mmrep.data.from_manifest` emits for audio and video columns.
LENGTH_SUFFIX = "_length"
FRAME_MASK_SUFFIX = "_frame_mask"
_PADDING_RULE = (
    "one modality input, plus optionally its padding inputs named after it: "
    "`<input>_length` (integer [B]) and `<input>_frame_mask` (bool [B, T])"
)


def padding_input_of(name, names):
    """`(modality input, "length" | "frame_mask")` if `name` is a padding input, else `None`.

    `name` is a padding input when it is another input's name followed by `"_length"`
    or `"_frame_mask"` (`"audio_length"` beside `"audio"`).

    Args:
        name: str. An input name.
        names: the names of all the model's inputs.
    """
    for suffix, role in ((LENGTH_SUFFIX, "length"), (FRAME_MASK_SUFFIX, "frame_mask")):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base and base in names:
            return base, role
    return None


def modality_inputs(names, exclude=()):
    """The names among `names` that are not padding inputs (nor in `exclude`), in order."""
    names = [n for n in names if n not in exclude]
    return [n for n in names if padding_input_of(n, names) is None]


def _padding_problem(name, spec, role, modality_spec):
    """Why `spec` cannot be the padding input `name` of a modality input, or `None`."""
    received = f"{spec.dtype.name}, shape {spec.shape}"
    if role == "length":
        if not spec.dtype.is_integer or spec.shape.rank != 1:
            return f"its lengths {name!r} must be an integer vector [B]; received {received}"
        if modality_spec.shape.rank < 2:
            return f"its lengths {name!r} need a sequence input [B, S, ...]"
        return None
    if spec.dtype != tf.bool or spec.shape.rank != 2:
        return f"its frame mask {name!r} must be bool [B, T]; received {received}"
    if modality_spec.shape.rank < 2:
        return f"its frame mask {name!r} needs a sequence input [B, T, ...]"
    steps, frames = modality_spec.shape[1], spec.shape[1]
    if steps is not None and frames is not None and steps != frames:
        return (
            f"its frame mask {name!r} has {frames} frames, the input {steps}; "
            f"they must agree (received {received})"
        )
    return None


def embedding_inputs(model, what):
    """`(modality input name, {name: TensorSpec})` of an embedding model, checked.

    An embedding model has one modality input, optionally with its padding inputs
    (`<input>_length`, integer `[B]`; `<input>_frame_mask`, bool `[B, T]`), and one
    output, the embedding.

    Args:
        model: a functional or Sequential `keras.Model`.
        what: str. The argument's name, for error messages.

    Returns:
        `(name, specs)`: the modality input's name and the specs of every input, in the
        model's input order.

    Raises:
        ValueError: several modality inputs, a padding input of the wrong dtype or
            shape, or several outputs.
    """
    specs = input_specs(model, what)
    modalities = modality_inputs(specs)
    problems = []
    if len(modalities) == 1:
        for name, spec in specs.items():
            of = padding_input_of(name, specs)
            if of is not None:
                problem = _padding_problem(name, spec, of[1], specs[of[0]])
                if problem is not None:
                    problems.append(problem)
    if len(modalities) != 1 or problems:
        shapes = ", ".join(f"{n} ({s.dtype.name}, {s.shape})" for n, s in specs.items())
        detail = "; ".join(problems) if problems else f"modality inputs {modalities}"
        raise ValueError(
            f"Expected `{what}` to be a keras.Model with {_PADDING_RULE}. Received: "
            f"{model.name} with {len(specs)} inputs {list(specs)} [{shapes}]: {detail}"
        )
    outputs = model.output if isinstance(model.output, dict) else model.outputs
    if len(outputs) != 1:
        raise ValueError(
            f"Expected `{what}` to have one output, the embedding. Received: {model.name} "
            f"with {len(outputs)} outputs"
        )
    return modalities[0], specs


def embedding_input(model, what):
    """`(name, TensorSpec)` of an embedding model's modality input (see `embedding_inputs`)."""
    name, specs = embedding_inputs(model, what)
    return name, specs[name]


def _feed(kind, names, inputs):
    """A signature's named inputs in the structure the model takes (dict, list, one)."""
    if kind == "dict":
        return {name: inputs[name] for name in names}
    if kind == "list":
        return [inputs[name] for name in names]
    return inputs[names[0]]


def _call_single_output(model, kind, names, inputs):
    output = model(_feed(kind, names, inputs), training=False)
    if isinstance(output, dict):
        (output,) = output.values()
    elif isinstance(output, (list, tuple)):
        (output,) = output
    return output


def embedding_function(model, what):
    """A `tf.function` mapping the model's named inputs to `{"embedding": output}`.

    Args:
        model: a `keras.Model` with one named modality input, optionally its padding
            inputs (`<input>_length`, `<input>_frame_mask`; see `embedding_inputs`), and
            one output.
        what: str. The argument's name, for error messages.

    Returns:
        The `tf.function`, with an input signature keyed by the model's input names.
    """
    _, specs = embedding_inputs(model, what)
    kind, _ = _input_structure(model, what)
    names = list(specs)

    @tf.function(input_signature=[specs])
    def embed(inputs):
        return {"embedding": _call_single_output(model, kind, names, inputs)}

    return embed


def describe(function):
    """Input and output names, dtypes and shapes of a traced signature function.

    Args:
        function: a `tf.function` with an input signature (one dict argument), or a
            concrete function.

    Returns:
        dict `{"inputs": {name: {"dtype", "shape"}}, "outputs": {...}}`; unknown
        dimensions are `None`.
    """
    concrete = function
    if hasattr(function, "get_concrete_function"):
        concrete = function.get_concrete_function()
    args, kwargs = concrete.structured_input_signature
    specs = kwargs if kwargs else args[0]

    def entry(spec):
        shape = spec.shape.as_list() if spec.shape.rank is not None else None
        return {"dtype": spec.dtype.name, "shape": shape}

    outputs = concrete.structured_outputs
    return {
        "inputs": {name: entry(spec) for name, spec in specs.items()},
        "outputs": {name: entry(tensor) for name, tensor in outputs.items()},
    }
