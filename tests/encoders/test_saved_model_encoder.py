"""SavedModelEncoder against the original models its SavedModels were written from.

The references are the Keras model before export, and float64 numpy formulas for batch
norm in training mode and for the Hub-style module. Handles and folders are tested in
test_saved_model_handles.py.
"""

import logging
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.encoders.saved_model import SavedModelEncoder
from mmrep.encoders.saved_model_handles import SavedModelError
from tests.encoders import saved_model_files as files

ATOL = 1e-6


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved_models")
    model = files.image_model(seed=0)
    return {
        "model": model,
        "features": files.features_model(model),
        "export": files.export_keras(model, folder / "export"),
        "multi_io": files.save_multi_io(model, folder / "multi_io"),
    }


def _gain(batch=4, dtype="float32"):
    return np.random.default_rng(2).uniform(0.5, 2.0, (batch, 1)).astype(dtype)


def _close(actual, expected, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, "float64"), expected, rtol=0, atol=atol)


def _names(variables):
    return {v.name for v in variables}


def _reference_names(variables):
    """Keras paths of the original model's variables as the encoder names them."""
    return {v.path.replace("/", "_") for v in variables}


# === Outputs against the original model ===


def test_keras_export_signatures_give_the_original_outputs(saved):
    x = files.images()
    expected = saved["model"](x, training=False).numpy()
    for signature in ("serve", "serving_default"):
        encoder = SavedModelEncoder(saved["export"], signature=signature)
        _close(encoder(x), expected)
        _close(encoder({"image": x}), expected)
        _close(encoder(x.astype("float64")), expected)  # cast to the signature's float32
        # Frozen by default; all eight variables (batch norm statistics included) tracked.
        assert encoder.trainable_weights == []
        assert len(encoder.non_trainable_weights) == 8
    trainable = SavedModelEncoder(saved["export"], signature="serve", trainable=True)
    assert _names(trainable.trainable_weights) == _reference_names(saved["model"].trainable_weights)
    assert _names(trainable.non_trainable_weights) == {"bn_moving_mean", "bn_moving_variance"}


def test_custom_signature_with_two_inputs_and_three_outputs(saved):
    x, gain = files.images(), _gain()
    logits = saved["model"](x, training=False).numpy()
    features = saved["features"](x, training=False).numpy()
    encoder = SavedModelEncoder(saved["multi_io"], signature="two_in_three_out")
    out = encoder({"image": x, "gain": gain})
    assert set(out) == {"logits", "features", "top"}
    _close(out["logits"], logits * gain)
    _close(out["features"], features)
    assert out["top"].dtype == tf.int32
    np.testing.assert_array_equal(out["top"].numpy(), logits.argmax(-1))
    # Integer gains are cast to the signature's float32.
    whole = np.array([[1], [2], [3], [1]], "int32")
    _close(encoder({"image": x, "gain": whole})["logits"], logits * whole)

    selected = SavedModelEncoder(
        saved["multi_io"], signature="two_in_three_out", output_key="features"
    )
    _close(selected({"image": x, "gain": gain}), features)
    # A one-entry dict output comes back as its tensor; input_key pins the input name.
    for kwargs in ({}, {"input_key": "image"}):
        one = SavedModelEncoder(saved["multi_io"], signature="logits_only", **kwargs)
        _close(one(x), logits)
        _close(one({"image": x}), logits)


def _bn_training_features(model, x):
    """Pooled features with batch norm in training mode, in float64 numpy."""
    conv = keras.Model(model.input, model.get_layer("conv").output)
    y = conv(x, training=False).numpy().astype("float64")
    bn = model.get_layer("bn")
    gamma, beta = (w.numpy().astype("float64") for w in (bn.gamma, bn.beta))
    mean, var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
    normalised = gamma * (y - mean) / np.sqrt(var + bn.epsilon) + beta
    return np.maximum(normalised, 0).mean(axis=(1, 2))


def test_call_path_matches_the_model_and_passes_training(saved):
    x = files.images(seed=3)
    encoder = SavedModelEncoder(saved["multi_io"], signature=None)
    out = encoder(x)
    _close(out["logits"], saved["model"](x, training=False).numpy())
    _close(out["features"], saved["features"](x, training=False).numpy())
    features = SavedModelEncoder(saved["multi_io"], signature=None, output_key="features")
    _close(features(x), out["features"].numpy())
    # The Reusable SavedModel's `trainable_variables` list decides what trains.
    unfrozen = SavedModelEncoder(saved["multi_io"], signature=None, trainable=True)
    assert _names(unfrozen.trainable_weights) == _reference_names(saved["model"].trainable_weights)

    # training=True reaches the module: batch norm uses the batch's statistics...
    moving_mean = next(w for w in features.weights if w.name == "bn_moving_mean")
    before = moving_mean.numpy()
    _close(features(x, training=True), _bn_training_features(saved["model"], x), atol=1e-5)
    # ...and updates its moving statistics, as the module's training graph does.
    assert not np.allclose(moving_mean.numpy(), before)


def test_hub_module_training_argument_and_trainable_list(tmp_path):
    numbers = files.save_hub_module(tmp_path / "hub")
    x = np.random.default_rng(4).standard_normal((4, 6)).astype("float32")
    encoder = SavedModelEncoder(tmp_path / "hub", signature=None, trainable=True)
    _close(encoder(x), numbers(x))
    _close(encoder(x, training=True), numbers(x, training=True))
    assert _names(encoder.trainable_weights) == {"kernel", "bias"}
    assert _names(encoder.non_trainable_weights) == {"gain"}
    assert encoder.get_config()["handle"] == str(tmp_path / "hub")


def test_call_saved_for_inference_only_falls_back_with_a_warning(tmp_path, caplog):
    numbers = files.save_hub_module(tmp_path / "hub", trainings=(False,))
    x = np.random.default_rng(5).standard_normal((4, 6)).astype("float32")
    encoder = SavedModelEncoder(tmp_path / "hub", signature=None)
    with caplog.at_level(logging.WARNING, logger="mmrep"):
        _close(encoder(x, training=True), numbers(x, training=False))
    assert "was not saved for training=True" in caplog.text


def test_mixed_precision_casts_floating_outputs_only(saved):
    x, gain = files.images(), _gain()
    logits = saved["model"](x, training=False).numpy()
    encoder = SavedModelEncoder(
        saved["multi_io"], signature="two_in_three_out", dtype="mixed_float16"
    )
    out = encoder({"image": x, "gain": gain})
    assert out["logits"].dtype == tf.float16 and out["top"].dtype == tf.int32
    _close(out["logits"], logits * gain, atol=1e-2)
    assert {w.dtype for w in encoder.weights} == {"float32"}
    symbolic = encoder({"image": keras.Input(files.IMAGE_SHAPE), "gain": keras.Input((1,))})
    assert symbolic["logits"].dtype == "float16" and symbolic["top"].dtype == "int32"


# === In models: functional, .keras, re-export, fine-tuning ===


def test_functional_model_keras_round_trip_and_standalone_reexport(saved, tmp_path):
    source = shutil.copytree(saved["multi_io"], tmp_path / "copy")
    encoder = SavedModelEncoder(source, signature="two_in_three_out", output_key="logits")
    inputs = {
        "image": keras.Input(files.IMAGE_SHAPE, name="image"),
        "gain": keras.Input((1,), name="gain"),
    }
    logits = encoder(inputs)
    assert tuple(logits.shape) == (None, files.NUM_CLASSES)
    model = keras.Model(inputs, keras.layers.Dense(2, name="readout")(logits))
    feed = {"image": files.images(), "gain": _gain()}
    expected = model(feed).numpy()

    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")  # in safe mode
    _close(reloaded(feed), expected)

    model.export(tmp_path / "export", verbose=False)
    tf.saved_model.save(model, str(tmp_path / "tf_saved"))
    shutil.rmtree(source)  # the exports must not need the original SavedModel
    served = tf.saved_model.load(str(tmp_path / "export"))
    _close(served.serve(feed), expected)
    signature = tf.saved_model.load(str(tmp_path / "tf_saved")).signatures["serving_default"]
    # Keras names this signature's inputs `inputs`, `inputs_1`: match them by rank.
    by_rank = {value.ndim: value for value in feed.values()}
    _, specs = signature.structured_input_signature
    _close(signature(**{k: by_rank[s.shape.rank] for k, s in specs.items()})["output_0"], expected)
    # And the re-export is itself a SavedModel this layer reads.
    _close(SavedModelEncoder(tmp_path / "export", signature="serve")(feed), expected)


def _fit_one_step(model, x, targets, rate=0.1):
    model.compile(optimizer=keras.optimizers.SGD(rate), loss="mse")
    model.fit(x, targets, batch_size=len(x), epochs=1, shuffle=False, verbose=0)


def test_fine_tuning_trains_the_savedmodel_variables_and_survives_keras_reload(saved, tmp_path):
    x = files.images(seed=5)
    targets = np.random.default_rng(6).standard_normal((4, files.NUM_CLASSES)).astype("float32")
    encoder = SavedModelEncoder(saved["export"], signature="serve", trainable=True)
    inputs = keras.Input(files.IMAGE_SHAPE, name="image")
    model = keras.Model(inputs, encoder(inputs))
    before = {w.name: w.numpy() for w in encoder.weights}
    _fit_one_step(model, x, targets)
    after = {w.name: w.numpy() for w in encoder.weights}

    # The reference: one SGD step on the original Keras model (the signature is its
    # inference graph, so the step is taken with training=False).
    reference = keras.models.clone_model(saved["model"])
    reference.set_weights(saved["model"].get_weights())
    with tf.GradientTape() as tape:
        loss = keras.losses.mean_squared_error(targets, reference(x, training=False))
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, reference.trainable_weights)
    trained = _reference_names(reference.trainable_weights)
    for variable, grad in zip(reference.trainable_weights, grads, strict=True):
        name = variable.path.replace("/", "_")
        np.testing.assert_allclose(
            after[name], variable.numpy() - 0.1 * grad.numpy(), rtol=1e-5, atol=1e-6
        )
    for name in before:
        assert np.array_equal(before[name], after[name]) == (name not in trained), name

    # The encoder computes with the trained values: the original model given them agrees.
    for variable in reference.weights:
        if variable.path.replace("/", "_") in after:
            variable.assign(after[variable.path.replace("/", "_")])
    expected = reference(x, training=False).numpy()
    _close(model(x), expected)

    # .keras keeps the fine-tuned values; the SavedModel on disk is untouched.
    model.save(tmp_path / "tuned.keras")
    reloaded = keras.models.load_model(tmp_path / "tuned.keras")
    _close(reloaded(x), expected)
    fresh = SavedModelEncoder(saved["export"], signature="serve")
    for w in fresh.weights:
        np.testing.assert_array_equal(w.numpy(), before[w.name])


def test_frozen_encoder_is_left_unchanged_by_fit(saved):
    x = files.images(seed=7)
    encoder = SavedModelEncoder(saved["export"], signature="serve")
    inputs = keras.Input(files.IMAGE_SHAPE, name="image")
    model = keras.Model(inputs, keras.layers.Dense(1, name="readout")(encoder(inputs)))
    before = [w.numpy() for w in encoder.weights]
    readout = model.get_layer("readout").kernel.numpy()
    _fit_one_step(model, x, np.ones((4, 1), "float32"))
    for w, value in zip(encoder.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), value)
    assert not np.allclose(model.get_layer("readout").kernel.numpy(), readout)
    encoder.trainable = True  # unfreezing later exposes the SavedModel's trainable weights
    assert len(encoder.trainable_weights) == 6


# === Errors ===


def test_unknown_signature_and_keys_list_the_available_ones(saved, tmp_path):
    with pytest.raises(
        SavedModelError,
        match=r"unknown signature='nope'. Available signatures: \['serve', 'serving_default'\]",
    ):
        SavedModelEncoder(saved["export"], signature="nope")
    with pytest.raises(SavedModelError, match=r"has none. Available signatures: \['serve'"):
        SavedModelEncoder(saved["export"], signature=None)
    with pytest.raises(
        SavedModelError,
        match=r"unknown output_key='probs'. Available output keys: \['features', 'logits', 'top'\]",
    ):
        SavedModelEncoder(saved["multi_io"], signature="two_in_three_out", output_key="probs")
    with pytest.raises(SavedModelError, match=r"unknown input_key='img'. Named inputs: \['gain'"):
        SavedModelEncoder(saved["multi_io"], signature="two_in_three_out", input_key="img")
    files.save_hub_module(tmp_path / "hub")
    with pytest.raises(SavedModelError, match=r"none \(the output is not a dict\)"):
        SavedModelEncoder(tmp_path / "hub", signature=None, output_key="y")


def test_inputs_that_do_not_fit_the_signature(saved, tmp_path):
    two = SavedModelEncoder(saved["multi_io"], signature="two_in_three_out")
    x, gain = files.images(), _gain()
    with pytest.raises(
        ValueError,
        match=r"expected inputs named \['gain', 'image'\]. Received: \['gain', 'img'\] "
        r"\(missing \['image'\], unexpected \['img'\]\)",
    ):
        two({"img": x, "gain": gain})
    with pytest.raises(ValueError, match=r"expected a dict with keys \['gain', 'image'\]"):
        two(x)
    with pytest.raises(
        ValueError,
        match=r"input 'image' expects shape \(None, 8, 8, 3\) float32. "
        r"Received: shape=\(4, 8, 8\)",
    ):
        two({"image": x[..., 0], "gain": gain})
    with pytest.raises(ValueError, match=r"Received: shape=\(4, 8, 8, 2\)"):
        two({"image": x[..., :2], "gain": gain})
    with pytest.raises(TypeError, match=r"input 'gain' expects .* Received: dtype=string"):
        two({"image": x, "gain": np.array([["a"]] * 4)})
    # Symbolic inputs are checked when the functional model is built.
    with pytest.raises(ValueError, match=r"Received: shape=\(None, 8, 8, 2\)"):
        two({"image": keras.Input((8, 8, 2)), "gain": keras.Input((1,))})

    files.save_hub_module(tmp_path / "hub")
    call = SavedModelEncoder(tmp_path / "hub", signature=None)
    with pytest.raises(ValueError, match=r"expected a single tensor. Received: a dict"):
        call({"x": np.zeros((2, 6), "float32")})
    with pytest.raises(
        ValueError,
        match=r"__call__\): input 'inputs' expects shape \(None, 6\) float32. "
        r"Received: shape=\(2, 5\)",
    ):
        call(np.zeros((2, 5), "float32"))


def test_call_traced_for_several_input_signatures(tmp_path):
    @tf.function
    def call(x):
        return tf.cast(tf.reduce_sum(x, axis=-1, keepdims=True), tf.float32) * 2.0

    root = tf.train.Checkpoint()
    root.__call__ = call
    call.get_concrete_function(tf.TensorSpec((None, 6), tf.float32))
    call.get_concrete_function(tf.TensorSpec((None, 4), tf.int32))
    tf.saved_model.save(root, str(tmp_path / "two_forms"))
    encoder = SavedModelEncoder(tmp_path / "two_forms", signature=None)
    floats = np.random.default_rng(8).standard_normal((2, 6))
    ints = np.arange(8, dtype="int64").reshape(2, 4)
    _close(encoder(floats), 2 * floats.astype("float32").sum(-1, keepdims=True), atol=1e-5)
    _close(encoder(ints), 2 * ints.sum(-1, keepdims=True))  # int64 cast to int32
    assert tuple(encoder(keras.Input((4,), dtype="int32")).shape) == (None, 1)
    with pytest.raises(
        ValueError,
        match=r"fit none of its input signatures \[\(None, 6\) float32; \(None, 4\) int32\]. "
        r"Received: \(2, 4\) float32",
    ):
        encoder(np.zeros((2, 4), "float32"))  # floats are not truncated to int32
