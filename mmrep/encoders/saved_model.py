"""`SavedModelEncoder`: any TF2 SavedModel or TF Hub / Kaggle model as a Keras 3 layer.

`tensorflow_hub.KerasLayer` is a Keras 2 (tf_keras) layer and cannot sit in a Keras 3
model; this layer plays its part. The model is read with `tf.saved_model.load` from a
local folder or from the TF Hub cache (see `mmrep.encoders.saved_model_handles`), one of
its functions is called, and its variables are tracked as Keras weights: the very
`tf.Variable`s the function reads, so optimizers fine-tune them and `.keras` archives
store their values.
"""

import logging
import os

import keras
import tensorflow as tf
from keras import ops, tree

from mmrep.encoders.saved_model_handles import SavedModelError, load_saved_model, read_endpoint

logger = logging.getLogger("mmrep")
_warned = set()


@keras.saving.register_keras_serializable(package="mmrep")
class SavedModelEncoder(keras.layers.Layer):
    """A TF2 SavedModel (a local folder or a cached TF Hub / Kaggle handle) as a Keras layer.

    The layer calls one function of the SavedModel: a serving signature (such as the
    `serving_default` and `serve` of `model.export`), or, with `signature=None`, the
    restored object's `__call__` (the Reusable SavedModel API of TF Hub TF2 modules),
    which receives `training=` when it takes that argument. Inputs are checked against
    the function's input signature (names, ranks, static sizes) and cast to its dtypes;
    outputs are one tensor, or a dict when the function returns several and
    `output_key` is not given.

    The SavedModel's variables become the layer's weights (trainable as the SavedModel
    marks them; for `__call__`, as its `trainable_variables` list says). With
    `trainable=False` (the default) they are frozen; `trainable=True` fine-tunes them. A
    signature runs its inference graph whatever `training` is (e.g. batch norm uses its
    moving statistics, which therefore do not change).

    Dtype policy: the SavedModel computes in its own fixed dtypes. Inputs are cast to
    them (the layer does not autocast; floats are never cast to integers, strings never
    to numbers, nor the reverse), and floating outputs are cast to the layer's
    compute dtype (float16 under `mixed_float16`); integer, bool and string outputs keep
    their dtypes.

    Saving: `get_config` stores the handle, so a `.keras` archive needs the same
    SavedModel (path or cached handle) where it is loaded, and restores the archived
    (e.g. fine-tuned) variable values into it. The archive holds no graph code, and
    loading it is allowed in Keras safe mode: the SavedModel it names is read from the
    loading machine's disk, as `SavedModelEncoder(handle)` would read it. A model
    holding the layer exports (`model.export`, `tf.saved_model.save`) to a standalone
    SavedModel that needs neither mmrep nor the original files.

    Args:
        handle: str or path. A local SavedModel folder, or a model URL such as
            `https://tfhub.dev/google/vggish/1` or `https://www.kaggle.com/models/...`
            that is in the TF Hub cache (nothing is ever downloaded).
        signature: str or `None`. The signature to call; `None` calls the restored
            object's `__call__`. Defaults to `"serving_default"`.
        output_key: str or `None`. The entry of a dict output to return; `None` returns
            the only entry of a one-entry dict, else the whole output. Defaults to `None`.
        input_key: str or `None`. The named input that a single tensor feeds, checked
            against the SavedModel when the layer is made; `None` lets a tensor feed the
            function's only input. A dict input is always passed by name.
            Defaults to `None`.
        trainable: bool. Whether the SavedModel's trainable variables are trained.
            Defaults to `False`.
        cache_dir: str, path or `None`. The TF Hub cache for URL handles; `None` uses
            `TFHUB_CACHE_DIR`, else tensorflow_hub's default `<temp>/tfhub_modules`.
            Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a tensor when the function has one input, or a dict of tensors named as
            its inputs.
        training: bool. Passed to `__call__` when it takes `training`; ignored by
            signatures.

    Returns:
        A tensor, or a dict of tensors (see `output_key`).

    Raises:
        FileNotFoundError: a missing folder, or a handle that is not cached.
        SavedModelError: not a SavedModel, a TF1 Hub module, an unreadable SavedModel,
            an unknown signature (the available ones are listed), or an unknown
            `output_key` / `input_key` (the available keys are listed).
        ValueError, TypeError: at call time, inputs whose names, ranks, sizes or dtypes
            do not fit the function's input signature.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.export("dense_savedmodel", verbose=False)
    >>> encoder = SavedModelEncoder("dense_savedmodel", signature="serve")
    >>> tuple(encoder(np.ones((4, 3), "float32")).shape)
    (4, 2)

    Reference:
        TensorFlow, "Reusable SavedModels" (tensorflow.org/hub/reusable_saved_models)
        and "Using the SavedModel format" (tensorflow.org/guide/saved_model).
    """

    def __init__(
        self,
        handle,
        signature="serving_default",
        output_key=None,
        input_key=None,
        trainable=False,
        cache_dir=None,
        **kwargs,
    ):
        super().__init__(trainable=trainable, **kwargs)
        for name, value in (
            ("signature", signature),
            ("output_key", output_key),
            ("input_key", input_key),
        ):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"Expected `{name}` to be a str or None. Received: {value!r}")
        self.handle = os.fspath(handle) if isinstance(handle, os.PathLike) else handle
        self.signature = signature
        self.output_key = output_key
        self.input_key = input_key
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        # Inputs are cast to the SavedModel's own dtypes, never to the compute dtype.
        self.autocast = False

        self._loaded, self._folder = load_saved_model(self.handle, self.cache_dir)
        endpoint = read_endpoint(self._loaded, signature, self._folder)
        # In a plain holder: attribute tracking would wrap the dicts of specs.
        self._traced = _Untracked(endpoint.forms)
        self._takes_training = endpoint.takes_training
        self._check_keys()

        # === Weights ===
        # Made here, not in build(): they come with the file, whatever the input shape.
        # A Keras variable built from a tf.Variable of its own dtype wraps that very
        # variable (no copy), so training and `.keras` loading reach the function.
        wrapped = []
        for variable in endpoint.variables:
            with keras.name_scope(self.name):
                weight = keras.Variable(
                    initializer=variable,
                    dtype=variable.dtype.name,
                    trainable=id(variable) in endpoint.trainable_ids,
                    name=variable.name.split(":")[0].replace("/", "_"),
                )
            if weight.value is not variable:
                raise RuntimeError(
                    f"{self.name}: Keras copied SavedModel variable {variable.name} instead "
                    "of wrapping it; fine-tuning would not reach the SavedModel."
                )
            wrapped.append(weight)
        self._saved_model_variables = wrapped
        # Frozen as `add_weight` would freeze them: models list weights by their own flag,
        # and `layer.trainable = True` later restores the SavedModel's trainable ones.
        if not trainable:
            for weight in wrapped:
                weight.trainable = False
        self.built = True

    def _check_keys(self):
        where = f"'{self._folder}' ({self._endpoint_name})"
        outputs = [c.outputs for c in self._traced.forms]
        if self.output_key is not None:
            keys = sorted({k for o in outputs if isinstance(o, dict) for k in o})
            if not any(isinstance(o, dict) and self.output_key in o for o in outputs):
                raise SavedModelError(
                    f"{where}: unknown output_key={self.output_key!r}. Available output "
                    f"keys: {keys if keys else 'none (the output is not a dict)'}"
                )
        if self.input_key is not None:
            names = sorted(
                {k for c in self._traced.forms if isinstance(c.inputs, dict) for k in c.inputs}
            )
            if self.input_key not in names:
                raise SavedModelError(
                    f"{where}: unknown input_key={self.input_key!r}. Named inputs: "
                    f"{names if names else 'none (the function takes one unnamed tensor)'}"
                )

    @property
    def _endpoint_name(self):
        return "__call__" if self.signature is None else f"signature {self.signature!r}"

    def _function(self):
        if self.signature is None:
            return self._loaded.__call__
        return self._loaded.signatures[self.signature]

    def _match(self, inputs, training=None):
        """`(traced form, arranged inputs)`: the cheapest form that `inputs` fit."""
        fits, problems = [], []
        for form in self._traced.forms:
            try:
                arranged, casts = _arrange(inputs, form.inputs, self.input_key)
            except (ValueError, TypeError) as error:
                problems.append(error)
                continue
            mismatch = training is not None and form.training not in (None, training)
            fits.append((casts + 1000 * mismatch, len(fits), form, arranged))
        if not fits:
            where = f"{self.name} ('{self._folder}', {self._endpoint_name})"
            distinct = {str(p): p for p in problems}
            if len(distinct) == 1:  # e.g. the same inputs traced for two `training` values
                raise type(problems[0])(f"{where}: {problems[0]}")
            listed = "; ".join(_describe(c.inputs) for c in self._traced.forms)
            raise ValueError(
                f"{where}: the inputs fit none of its input signatures [{listed}]. "
                f"Received: {_describe(inputs)}"
            )
        _, _, form, arranged = min(fits, key=lambda fit: fit[:2])
        return form, arranged

    def call(self, inputs, training=None):
        inputs = tree.map_structure(ops.convert_to_tensor, inputs)
        training = bool(training)
        form, arranged = self._match(inputs, training if self._takes_training else None)
        feed = tree.map_structure(
            lambda x, spec: x if x.dtype == spec.dtype else ops.cast(x, spec.dtype.name),
            arranged,
            form.inputs,
        )
        function = self._function()
        if self.signature is not None:
            outputs = function(**feed)
        elif self._takes_training:
            if form.training is not None and form.training != training:
                _warn_once(self._folder, training)
                training = form.training
            outputs = function(feed, training=training)
        else:
            outputs = function(feed)
        return tree.map_structure(self._output_dtype_cast, self._select(outputs))

    def _select(self, outputs):
        if self.output_key is not None:
            return outputs[self.output_key]
        if isinstance(outputs, dict) and len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs

    def _output_dtype_cast(self, x):
        dtype = keras.backend.standardize_dtype(x.dtype)
        if keras.backend.is_float_dtype(dtype) and dtype != self.compute_dtype:
            return ops.cast(x, self.compute_dtype)
        return x

    def compute_output_spec(self, inputs, training=None):
        form, arranged = self._match(inputs)
        batch = _batch_size(arranged, form.inputs)

        def spec(output):
            shape = list(output.shape)
            if shape and shape[0] is None:
                shape[0] = batch
            dtype = tf.as_dtype(output.dtype).name
            dtype = self.compute_dtype if keras.backend.is_float_dtype(dtype) else dtype
            return keras.KerasTensor(tuple(shape), dtype=dtype)

        return tree.map_structure(spec, self._select(form.outputs))

    def compute_output_shape(self, input_shape):
        specs = self.compute_output_spec(_ShapeOnly.structure(input_shape))
        return tree.map_structure(lambda x: tuple(x.shape), specs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "handle": self.handle,
                "signature": self.signature,
                "output_key": self.output_key,
                "input_key": self.input_key,
                "cache_dir": self.cache_dir,
            }
        )
        return config


# === Input checks ===


def _arrange(inputs, spec, input_key):
    """`inputs` in the structure of `spec` and the number of casts, or a ValueError/TypeError."""
    if isinstance(spec, dict):
        names = sorted(spec)
        if isinstance(inputs, dict):
            if set(inputs) != set(names):
                missing = sorted(set(names) - set(inputs))
                unexpected = sorted(set(inputs) - set(names))
                raise ValueError(
                    f"expected inputs named {names}. Received: {sorted(inputs)} "
                    f"(missing {missing}, unexpected {unexpected})"
                )
            arranged = {k: inputs[k] for k in spec}
        elif len(names) == 1 and input_key in (None, names[0]):
            arranged = {names[0]: inputs}
        else:
            wanted = f"a dict with keys {names}"
            if input_key is not None and len(names) == 1:
                wanted = f"input {names[0]!r}, not input_key={input_key!r}"
            raise ValueError(f"expected {wanted}. Received: a single tensor")
    elif isinstance(inputs, dict):
        raise ValueError(f"expected a single tensor. Received: a dict with keys {sorted(inputs)}")
    else:
        arranged = inputs
    casts = 0
    for (path, x), s in zip(tree.flatten_with_path(arranged), tree.flatten(spec), strict=True):
        casts += _check_leaf(path[0] if path else "inputs", x, s)
    return arranged, casts


def _check_leaf(name, x, spec):
    expected = f"shape {_shape(spec.shape)} {spec.dtype.name}"
    shape = tuple(x.shape)
    want = spec.shape
    if want.rank is not None and (
        len(shape) != want.rank
        or any(
            w is not None and g is not None and w != g for w, g in zip(want, shape, strict=False)
        )
    ):
        raise ValueError(f"input {name!r} expects {expected}. Received: shape={_shape(shape)}")
    if x.dtype is None:  # compute_output_shape: no dtype to check
        return 0
    got = keras.backend.standardize_dtype(x.dtype)
    if got == spec.dtype.name:
        return 0
    wanted = spec.dtype.name
    truncating = keras.backend.is_float_dtype(got) and not keras.backend.is_float_dtype(wanted)
    if "string" in (got, wanted) or truncating:
        why = " (floats are not cast to integers: that would truncate)" if truncating else ""
        raise TypeError(f"input {name!r} expects {expected}. Received: dtype={got}{why}")
    return 1


def _shape(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _describe(structure):
    if isinstance(structure, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in structure.items()) + "}"
    dtype = getattr(structure, "dtype", None)
    dtype = tf.as_dtype(dtype).name if dtype is not None else "?"
    return f"{_shape(structure.shape)} {dtype}"


def _batch_size(arranged, spec):
    """The inputs' batch size when every input of `spec` has an unknown leading size."""
    specs = tree.flatten(spec)
    if not all(s.shape.rank and s.shape[0] is None for s in specs):
        return None
    sizes = {next(iter(x.shape)) for x in tree.flatten(arranged)}
    return sizes.pop() if len(sizes) == 1 else None


class _Untracked:
    """Holds the traced forms out of reach of Keras / TF attribute tracking."""

    def __init__(self, forms):
        self.forms = tuple(forms)


class _ShapeOnly:
    """A shape dressed as a tensor without a dtype, for `compute_output_shape`."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.dtype = None

    @classmethod
    def structure(cls, input_shape):
        if isinstance(input_shape, dict):
            return {k: cls(v) for k, v in input_shape.items()}
        return cls(input_shape)


def _warn_once(folder, training):
    if (folder, training) not in _warned:
        _warned.add((folder, training))
        logger.warning(
            "%s: `__call__` was not saved for training=%s; calling it with the saved value",
            folder,
            training,
        )
