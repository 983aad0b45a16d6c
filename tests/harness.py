"""The shared layer-test harness: every public mmrep layer goes through these checks.

A `LayerCase` names a layer class, its constructor arguments and an example input. The
checks below each take a case and raise `AssertionError` with a message that says what was
expected and what came:

- `check_call`: eager and symbolic calls, output shape and dtype, `compute_output_shape`.
- `check_config`: `get_config` keeps every constructor argument; `from_config` rebuilds a
  layer with the same weights and outputs; registered for `.keras` deserialisation.
- `check_keras_save`: a model around the layer saved as `.keras` and reloaded gives the same
  outputs.
- `check_saved_model`: the model exported as a TensorFlow SavedModel and reloaded with
  `tf.saved_model.load` (no Keras objects) gives the same outputs.
- `check_mixed_precision`: under `mixed_float16` and `mixed_bfloat16` (per-layer and global
  policy) the variables stay float32 and the outputs are finite, in the compute dtype.
- `check_gradients`: gradients w.r.t. floating inputs and every trainable weight exist and
  are finite.
- `check_distributed`: one SGD step under `MirroredStrategy` on two logical CPU devices
  gives the same weights as the same step on one device with the same global batch.

`run_layer_test(case)` runs them all. Inputs are a tensor or a flat dict of tensors;
`call_tensors` holds tensor keyword arguments (such as a presence mask). String arrays
become `keras.Input(dtype="string")` inputs. A case may declare checks that cannot apply
to its layer in `not_applicable` (a check name and the reason): the conformance test
reports them as skipped with that reason; every other check runs.
"""

import dataclasses
import functools
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import tree

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass
class LayerCase:
    """A public layer with constructor arguments and an example input.

    Attributes:
        name: str. A readable id for the case.
        layer_cls: the layer class.
        init_kwargs: dict. Constructor arguments.
        make_inputs: callable returning the first call argument (a numpy array or a flat
            dict of arrays). The batch size must be even (the distributed check splits it).
        make_call_tensors: callable returning a dict of tensor keyword arguments, or `None`.
        call_kwargs: dict of non-tensor keyword arguments.
        expected_output_shape: the output shape (a tuple or a structure of tuples).
        expected_output_dtype: the output dtype in float32 (a str or structure of str).
        mixed_output_dtype: `"compute"` when outputs follow the policy's compute dtype,
            or a fixed dtype the layer always returns (e.g. `"float32"`).
        no_gradient: names (substrings of weight paths) of trainable weights that are not
            expected to receive a gradient from this example.
        deterministic_training: whether a training step is deterministic, so that the
            distributed step can be compared with the single-device one.
        atol: tolerance for outputs that should be identical up to float round-off.
        not_applicable: dict `{check name: reason}` of checks that cannot apply, such as
            `{"gradients": "integer outputs and no weights"}`. Names must be keys of
            `CHECKS` and reasons non-empty.
        make_init_kwargs: callable returning more constructor arguments, made at test
            time (such as a SavedModel path written to a temporary folder), or `None`.
    """

    name: str
    layer_cls: type
    init_kwargs: dict
    make_inputs: Callable[[], Any]
    expected_output_shape: Any
    make_call_tensors: Callable[[], dict] | None = None
    call_kwargs: dict = dataclasses.field(default_factory=dict)
    expected_output_dtype: Any = "float32"
    mixed_output_dtype: str = "compute"
    no_gradient: tuple = ()
    deterministic_training: bool = True
    atol: float = 1e-6
    not_applicable: dict = dataclasses.field(default_factory=dict)
    make_init_kwargs: Callable[[], dict] | None = None

    def __post_init__(self):
        unknown = sorted(set(self.not_applicable) - set(CHECKS))
        if unknown:
            raise ValueError(
                f"case {self.name!r}: not_applicable names unknown checks {unknown}; "
                f"the checks are {list(CHECKS)}"
            )
        blank = sorted(k for k, v in self.not_applicable.items() if not str(v or "").strip())
        if blank:
            raise ValueError(f"case {self.name!r}: not_applicable needs a reason for {blank}")

    def example(self):
        inputs = self.make_inputs()
        tensors = self.make_call_tensors() if self.make_call_tensors else {}
        return inputs, tensors

    def constructor_kwargs(self):
        """`init_kwargs` with the arguments of `make_init_kwargs()`."""
        made = self.make_init_kwargs() if self.make_init_kwargs else {}
        return {**self.init_kwargs, **made}

    def make_layer(self, **extra):
        return self.layer_cls(**self.constructor_kwargs(), **extra)

    def __str__(self):
        return self.name


def call_layer(case, layer, inputs, tensors, **kwargs):
    return layer(inputs, **tensors, **case.call_kwargs, **kwargs)


def _flat_feed(inputs, tensors):
    """The model's flat input dict: the first argument's entries and the tensor kwargs."""
    feed = dict(inputs) if isinstance(inputs, dict) else {"inputs": inputs}
    clash = set(feed) & set(tensors)
    assert not clash, f"input names collide with call tensor names: {sorted(clash)}"
    feed.update(tensors)
    return feed


def functional_model(case, layer, inputs, tensors):
    """A functional model whose inputs are one `keras.Input` per leaf of the example."""

    def symbolic(name, value):
        value = np.asarray(value)
        dtype = "string" if value.dtype.kind in "OSU" else str(value.dtype)
        return keras.Input(shape=value.shape[1:], dtype=dtype, name=name)

    sym_inputs = (
        {k: symbolic(k, v) for k, v in inputs.items()}
        if isinstance(inputs, dict)
        else symbolic("inputs", inputs)
    )
    sym_tensors = {k: symbolic(k, v) for k, v in tensors.items()}
    outputs = call_layer(case, layer, sym_inputs, sym_tensors)
    return keras.Model(_flat_feed(sym_inputs, sym_tensors), outputs)


def _numpy_leaves(structure):
    return [np.asarray(keras.ops.convert_to_numpy(x)) for x in tree.flatten(structure)]


def assert_same_outputs(actual, expected, atol, what):
    actual_leaves, expected_leaves = _numpy_leaves(actual), _numpy_leaves(expected)
    assert len(actual_leaves) == len(expected_leaves), (
        f"{what}: expected {len(expected_leaves)} outputs, got {len(actual_leaves)}"
    )
    for i, (a, e) in enumerate(zip(actual_leaves, expected_leaves, strict=True)):
        assert a.shape == e.shape, f"{what}: output {i} has shape {a.shape}, expected {e.shape}"
        np.testing.assert_allclose(
            a.astype("float64"),
            e.astype("float64"),
            rtol=atol,
            atol=atol,
            err_msg=f"{what}: output {i} differs",
        )


def assert_finite(structure, what):
    for i, leaf in enumerate(_numpy_leaves(structure)):
        if np.issubdtype(leaf.dtype, np.floating) or leaf.dtype.name == "bfloat16":
            values = leaf.astype("float32")
            assert np.all(np.isfinite(values)), f"{what}: output {i} has non-finite values"


def _built_layer(case, **extra):
    inputs, tensors = case.example()
    layer = case.make_layer(**extra)
    outputs = call_layer(case, layer, inputs, tensors)
    return layer, inputs, tensors, outputs


# === The checks ===


def check_call(case):
    layer, inputs, tensors, outputs = _built_layer(case)
    shapes = tree.map_structure(lambda x: tuple(x.shape), outputs)
    assert shapes == case.expected_output_shape, (
        f"eager call: expected output shape {case.expected_output_shape}, got {shapes}"
    )
    dtypes = tree.map_structure(lambda x: keras.backend.standardize_dtype(x.dtype), outputs)
    assert dtypes == case.expected_output_dtype, (
        f"eager call: expected output dtype {case.expected_output_dtype}, got {dtypes}"
    )
    assert_finite(outputs, "eager call")

    model = functional_model(case, case.make_layer(), inputs, tensors)
    symbolic = [tuple(y.shape)[1:] for y in model.outputs]
    eager = [tuple(y.shape)[1:] for y in tree.flatten(outputs)]
    assert symbolic == eager, (
        f"symbolic call: output shapes (without batch) {symbolic}, the eager call gave {eager}"
    )

    if type(layer).compute_output_shape is not keras.layers.Layer.compute_output_shape:
        input_shapes = tree.map_structure(np.shape, inputs)
        declared = layer.compute_output_shape(input_shapes)
        assert tree.map_shape_structure(tuple, declared) == case.expected_output_shape, (
            f"compute_output_shape: returned {declared}, the call gave {shapes}"
        )


def check_config(case):
    layer, inputs, tensors, outputs = _built_layer(case)
    config = layer.get_config()
    init_kwargs = case.constructor_kwargs()
    missing = [k for k in init_kwargs if k not in config]
    assert not missing, f"get_config() drops constructor arguments {missing}"
    for key, value in init_kwargs.items():
        # Plain values must come back as given; nested layers (such as a dict of encoders)
        # are checked by the from_config round trip below.
        if _is_plain(value):
            got = config[key]
            assert _jsonable(got) == _jsonable(value), (
                f"get_config()[{key!r}] is {got!r}, the constructor was given {value!r}"
            )
    revived = type(layer).from_config(config)
    assert _jsonable(revived.get_config()) == _jsonable(config), (
        "from_config(get_config()).get_config() differs from get_config()"
    )
    revived_outputs = call_layer(case, revived, inputs, tensors)
    original = layer.get_weights()
    rebuilt = revived.get_weights()
    assert [w.shape for w in rebuilt] == [w.shape for w in original], (
        f"from_config built weights {[w.shape for w in rebuilt]}, "
        f"the original has {[w.shape for w in original]}"
    )
    revived.set_weights(original)
    revived_outputs = call_layer(case, revived, inputs, tensors)
    assert_same_outputs(revived_outputs, outputs, case.atol, "from_config with copied weights")

    # What `.keras` loading does: find the class by its registered name.
    serialized = keras.saving.serialize_keras_object(layer)
    hint = (
        "is the class registered with @keras.saving.register_keras_serializable(package='mmrep')?"
    )
    try:
        restored = keras.saving.deserialize_keras_object(serialized)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"deserialize_keras_object failed ({error}); {hint}") from error
    assert type(restored) is type(layer), (
        f"deserialize_keras_object gave {type(restored).__name__}, expected "
        f"{type(layer).__name__}; {hint}"
    )


def _is_plain(value):
    return all(isinstance(v, (str, int, float, bool, type(None))) for v in tree.flatten(value))


def _jsonable(value):
    return json.loads(json.dumps(value, sort_keys=True, default=repr))


def check_keras_save(case):
    inputs, tensors = case.example()
    model = functional_model(case, case.make_layer(), inputs, tensors)
    feed = _flat_feed(inputs, tensors)
    expected = model(feed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        reloaded = keras.models.load_model(path)
    assert_same_outputs(reloaded(feed), expected, case.atol, ".keras save/load")


def check_saved_model(case):
    inputs, tensors = case.example()
    model = functional_model(case, case.make_layer(), inputs, tensors)
    feed = _flat_feed(inputs, tensors)
    expected = model(feed)
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        reloaded = tf.saved_model.load(tmp)
        actual = reloaded.serve({k: tf.constant(v) for k, v in feed.items()})
    assert_same_outputs(actual, expected, case.atol, "SavedModel export/reload")


def check_mixed_precision(case):
    for policy in MIXED_POLICIES:
        compute = keras.mixed_precision.Policy(policy).compute_dtype
        expected = compute if case.mixed_output_dtype == "compute" else case.mixed_output_dtype
        for how in ("layer dtype", "global policy"):
            if how == "layer dtype":
                layer, _, _, outputs = _built_layer(case, dtype=policy)
            else:
                previous = keras.config.dtype_policy()
                keras.config.set_dtype_policy(policy)
                try:
                    layer, _, _, outputs = _built_layer(case)
                finally:
                    keras.config.set_dtype_policy(previous)
            where = f"{policy} ({how})"
            wrong = [
                (v.path, v.dtype)
                for v in layer.weights
                if keras.backend.is_float_dtype(v.dtype) and v.dtype != "float32"
            ]
            assert not wrong, f"{where}: variables must stay float32, got {wrong}"
            dtypes = [keras.backend.standardize_dtype(x.dtype) for x in tree.flatten(outputs)]
            assert all(d == expected for d in dtypes if keras.backend.is_float_dtype(d)), (
                f"{where}: expected floating outputs in {expected}, got {dtypes}"
            )
            assert_finite(outputs, where)


def check_gradients(case):
    inputs, tensors = case.example()
    layer = case.make_layer()
    call_layer(case, layer, inputs, tensors)
    as_tensors = tree.map_structure(tf.constant, (inputs, tensors))
    watched = [x for x in tree.flatten(as_tensors) if x.dtype.is_floating]
    rng = np.random.default_rng(0)
    with tf.GradientTape() as tape:
        tape.watch(watched)
        outputs = call_layer(case, layer, *as_tensors, training=True)
        # A random readout, so that normalised outputs still carry a gradient.
        loss = tf.add_n(
            [
                tf.reduce_sum(
                    tf.cast(y, "float32") * rng.standard_normal(y.shape).astype("float32")
                )
                for y in tree.flatten(outputs)
                if y.dtype.is_floating
            ]
        )
    trainable = layer.trainable_variables
    grads = tape.gradient(loss, watched + trainable)
    for i, g in enumerate(grads[: len(watched)]):
        if g is not None:
            assert np.all(np.isfinite(g.numpy())), f"gradient w.r.t. input {i} is not finite"
    for variable, g in zip(trainable, grads[len(watched) :], strict=True):
        if any(name in variable.path for name in case.no_gradient):
            continue
        assert g is not None, f"no gradient reaches trainable weight {variable.path}"
        assert np.all(np.isfinite(tf.convert_to_tensor(g).numpy())), (
            f"gradient of {variable.path} is not finite"
        )


def _training_model(case, inputs, tensors):
    """The layer followed by a fixed linear readout to one output, for an SGD step."""
    model = functional_model(case, case.make_layer(), inputs, tensors)
    leaves = [y for y in tree.flatten(model.outputs) if keras.backend.is_float_dtype(y.dtype)]
    flat = [keras.layers.Flatten()(keras.ops.cast(y, "float32")) for y in leaves]
    joined = flat[0] if len(flat) == 1 else keras.layers.Concatenate()(flat)
    readout = keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(seed=1))
    return keras.Model(model.inputs, readout(joined))


@functools.cache
def two_device_strategy():
    """One MirroredStrategy over two logical CPUs for the whole test session.

    A second strategy over the same devices would restart collective instance keys and
    collide with the first one's cached collectives, so it is made once.
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, (
        "the distributed check needs two logical CPU devices; tests/conftest.py configures "
        f"them before TensorFlow starts. Found: {devices}"
    )
    return tf.distribute.MirroredStrategy(devices)


def check_distributed(case):
    inputs, tensors = case.example()
    feed = _flat_feed(inputs, tensors)
    batch = len(next(iter(feed.values())))
    assert batch % 2 == 0, f"the example batch must be even to split over 2 replicas, got {batch}"
    targets = np.random.default_rng(2).standard_normal((batch, 1)).astype("float32")

    def one_step(model):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        history = model.fit(feed, targets, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        return history.history["loss"][0]

    single = _training_model(case, inputs, tensors)
    start = single.get_weights()
    with two_device_strategy().scope():
        mirrored = _training_model(case, inputs, tensors)
    mirrored.set_weights(start)
    assert_same_outputs(
        mirrored.predict(feed, batch_size=batch, verbose=0),
        single(feed),
        1e-5,
        "MirroredStrategy predict",
    )
    loss_single, loss_mirrored = one_step(single), one_step(mirrored)
    assert np.isfinite(loss_mirrored), f"MirroredStrategy training loss is {loss_mirrored}"
    if not case.deterministic_training:
        return
    np.testing.assert_allclose(
        loss_mirrored, loss_single, rtol=1e-5, err_msg="MirroredStrategy loss differs"
    )
    for w_m, w_s, v in zip(
        mirrored.get_weights(), single.get_weights(), single.weights, strict=True
    ):
        np.testing.assert_allclose(
            w_m,
            w_s,
            rtol=1e-4,
            atol=1e-6,
            err_msg=f"after one step under MirroredStrategy, {v.path} differs from one device",
        )


CHECKS = {
    "call": check_call,
    "config": check_config,
    "keras_save": check_keras_save,
    "saved_model": check_saved_model,
    "mixed_precision": check_mixed_precision,
    "gradients": check_gradients,
    "distributed": check_distributed,
}


def richest_cases(cases, check=None):
    """`{layer class: its richest case}`: the one exercising the most of the layer.

    Richness counts constructor arguments, tensor and non-tensor call arguments and
    arguments made at test time; ties go to the first case listed. With `check`, only
    cases that `check` applies to compete (a class whose cases all exclude it keeps its
    richest case, which reports the check as not applicable). The fast test tier runs the
    expensive checks on these cases only.
    """

    def richness(case):
        return (
            len(case.init_kwargs)
            + (case.make_call_tensors is not None)
            + len(case.call_kwargs)
            + (case.make_init_kwargs is not None)
        )

    def rank(case):
        return (check is None or check not in case.not_applicable, richness(case))

    richest = {}
    for case in cases:
        best = richest.get(case.layer_cls)
        if best is None or rank(case) > rank(best):
            richest[case.layer_cls] = case
    return richest


def run_layer_test(case, checks=None):
    """Runs the named checks (by default all that apply) on `case`.

    Raises AssertionError on failure.
    """
    for name in checks or [c for c in CHECKS if c not in case.not_applicable]:
        CHECKS[name](case)
