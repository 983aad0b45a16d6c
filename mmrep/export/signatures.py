"""Serving functions for Keras models: named inputs in, named outputs out, inference mode.

A SavedModel signature is a function of named tensors returning named tensors. These
helpers turn a functional (or Sequential) Keras model into such a `tf.function`: one
argument, a dict keyed by the model's input names, every leading (batch) dimension
`None`, the model called with `training=False`, and a dict of outputs. TensorFlow takes
the signature's input names from the `TensorSpec` names and its output names from the
returned dict's keys.
"""

import re

import keras
import tensorflow as tf

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


def serving_function(model):
    """A `tf.function` calling `model` in inference mode on a dict of named inputs.

    Args:
        model: a functional or Sequential `keras.Model` with named inputs.

    Returns:
        A `tf.function` with an input signature `[{name: TensorSpec}]`, returning a dict
        of outputs (see `named_outputs`).
    """
    kind, named = _input_structure(model, "model")
    specs = input_specs(model)
    names = list(named)

    @tf.function(input_signature=[specs])
    def serve(inputs):
        if kind == "dict":
            feed = {name: inputs[name] for name in names}
        elif kind == "list":
            feed = [inputs[name] for name in names]
        else:
            feed = inputs[names[0]]
        return named_outputs(model(feed, training=False))

    return serve


def embedding_input(model, what):
    """`(input name, TensorSpec)` of a one-input embedding model, checking its output."""
    specs = input_specs(model, what)
    if len(specs) != 1:
        raise ValueError(
            f"Expected `{what}` to be a keras.Model with one input. Received: "
            f"{model.name} with {len(specs)} inputs {list(specs)}"
        )
    outputs = model.output if isinstance(model.output, dict) else model.outputs
    if len(outputs) != 1:
        raise ValueError(
            f"Expected `{what}` to have one output, the embedding. Received: {model.name} "
            f"with {len(outputs)} outputs"
        )
    return next(iter(specs.items()))


def embedding_function(model, what):
    """A `tf.function` mapping `{input name: x}` to `{"embedding": model(x)}`.

    Args:
        model: a `keras.Model` with one named input and one output.
        what: str. The argument's name, for error messages.

    Returns:
        The `tf.function`, with an input signature keyed by the model's input name.
    """
    name, spec = embedding_input(model, what)

    @tf.function(input_signature=[{name: spec}])
    def embed(inputs):
        output = model(inputs[name], training=False)
        if isinstance(output, dict):
            (output,) = output.values()
        elif isinstance(output, (list, tuple)):
            (output,) = output
        return {"embedding": output}

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
