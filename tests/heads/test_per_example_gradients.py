"""`per_example_gradients` against a Python loop of `tape.gradient`, one example at a time.

The reference (`loop_reference`) is written here, independently of the code under test:
for each example, a float64 forward pass on that example alone under a fresh
`GradientTape`, its gradient w.r.t. each variable, flattened and concatenated. The model
is a float64 conv + dense discriminator, so agreement is to float64 round-off.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.utils.example_gradients import per_example_gradients

RTOL = 1e-6


def float64_discriminator():
    """Conv(4, 3x3, stride 2, tanh) -> Conv(3, 3x3, softplus) -> Flatten -> Dense(1)."""
    init = keras.initializers.RandomNormal(stddev=0.4, seed=0)
    inputs = keras.Input((8, 8, 2), dtype="float64")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh",
                            kernel_initializer=init, bias_initializer=init,
                            dtype="float64", name="conv1")(inputs)  # fmt: skip
    x = keras.layers.Conv2D(3, 3, activation="softplus", kernel_initializer=init,
                            bias_initializer=init, dtype="float64", name="conv2")(x)  # fmt: skip
    x = keras.layers.Flatten(dtype="float64")(x)
    x = keras.layers.Dense(1, kernel_initializer=init, bias_initializer=init,
                           dtype="float64", name="head")(x)  # fmt: skip
    return keras.Model(inputs, x)


def loop_reference(model, variables, x):
    rows = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            y = model(x[i : i + 1])[0, 0]
        grads = tape.gradient(y, variables, unconnected_gradients="zero")
        rows.append(np.concatenate([np.asarray(g).ravel() for g in grads]))
    return np.stack(rows)


def scores_of(model):
    return lambda batch: tf.reshape(model(batch), [-1])


@pytest.fixture(scope="module")
def model_and_data():
    model = float64_discriminator()
    x = np.random.default_rng(0).normal(size=(7, 8, 8, 2))
    return model, x, loop_reference(model, model.trainable_weights, x)


def assert_close(actual, expected):
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale * 1e-3)


@pytest.mark.parametrize("batch_size", [None, 1, 3, 7, 64])
def test_vectorized_equals_the_loop_in_float64(model_and_data, batch_size):
    model, x, expected = model_and_data
    got = per_example_gradients(scores_of(model), model.trainable_weights, x, batch_size)
    assert got.dtype == tf.float64
    # Not vacuous: every coordinate is non-zero for some example, and rows differ.
    assert (np.abs(expected).max(axis=0) > 0).all()
    assert np.abs(expected - expected.mean(axis=0)).max(axis=1).min() > 1e-3
    assert_close(got, expected)


def test_loop_method_equals_the_reference(model_and_data):
    model, x, expected = model_and_data
    got = per_example_gradients(scores_of(model), model.trainable_weights, x, method="loop")
    assert_close(got, expected)


def test_inside_tf_function_with_unknown_batch(model_and_data):
    model, x, expected = model_and_data
    for method in ("vectorized", "loop"):
        fn = tf.function(
            lambda b, m=method: per_example_gradients(
                scores_of(model), model.trainable_weights, b, batch_size=3, method=m
            ),
            input_signature=[tf.TensorSpec((None, 8, 8, 2), tf.float64)],
        )
        assert_close(fn(x), expected)
        assert tuple(fn(x[:0]).shape) == (0, expected.shape[1])


def test_a_subset_of_variables_in_the_order_given(model_and_data):
    model, x, _ = model_and_data
    chosen = [model.get_layer("head").kernel, model.get_layer("conv1").bias]
    got = per_example_gradients(scores_of(model), chosen, x, batch_size=2)
    assert_close(got, loop_reference(model, chosen, x))


def test_unconnected_variables_give_zeros(model_and_data):
    model, x, expected = model_and_data
    unused = tf.Variable(np.ones((2, 3)), dtype=tf.float64)
    got = np.asarray(per_example_gradients(scores_of(model), [unused, *model.trainable_weights], x))
    np.testing.assert_array_equal(got[:, :6], 0.0)
    assert_close(got[:, 6:], expected)


def test_dict_inputs_and_tensor_variables():
    rng = np.random.default_rng(1)
    w, v = tf.constant(rng.normal(size=3)), tf.constant(rng.normal(size=2))
    inputs = {"a": rng.normal(size=(5, 3)), "b": rng.normal(size=(5, 2))}

    def fn(batch):
        return tf.tanh(tf.linalg.matvec(batch["a"], w)) * tf.linalg.matvec(batch["b"], v)

    got = np.asarray(per_example_gradients(fn, [w, v], inputs, batch_size=2))
    # d/dw = (1 - tanh²(a·w)) (b·v) a ; d/dv = tanh(a·w) b
    t, s = np.tanh(inputs["a"] @ w.numpy()), inputs["b"] @ v.numpy()
    expected = np.concatenate(
        [((1 - t**2) * s)[:, None] * inputs["a"], t[:, None] * inputs["b"]], axis=1
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_differentiable_with_respect_to_the_inputs(model_and_data):
    model, x, _ = model_and_data
    readout = np.random.default_rng(2).normal(size=(len(x), 1))

    def loss(method, xt):
        g = per_example_gradients(scores_of(model), model.trainable_weights, xt,
                                  batch_size=3, method=method)  # fmt: skip
        return tf.reduce_sum(g[:, :1] * readout + tf.square(g[:, -30:]))

    grads = {}
    for method in ("vectorized", "loop"):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            value = loss(method, xt)
        grads[method] = tape.gradient(value, xt).numpy()
    assert np.abs(grads["loop"]).max() > 0
    np.testing.assert_allclose(grads["vectorized"], grads["loop"], rtol=1e-6, atol=1e-12)


def test_bad_arguments_are_named(model_and_data):
    model, x, _ = model_and_data
    fn, weights = scores_of(model), model.trainable_weights
    with pytest.raises(TypeError, match="`fn` to be callable"):
        per_example_gradients("model", weights, x)
    with pytest.raises(ValueError, match="non-empty list"):
        per_example_gradients(fn, [], x)
    with pytest.raises(TypeError, match="floating variables"):
        per_example_gradients(fn, [tf.Variable([1, 2])], x)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="`batch_size` to be a positive int"):
            per_example_gradients(fn, weights, x, batch_size=bad)
    with pytest.raises(ValueError, match="`method`"):
        per_example_gradients(fn, weights, x, method="jacobian")
    with pytest.raises(ValueError, match=r"shape \[b\].*\(1, 1\)"):
        per_example_gradients(lambda b: model(b), weights, x)
    with pytest.raises(ValueError, match="same batch size"):
        per_example_gradients(lambda b: b["a"][:, 0], weights, {"a": x, "b": x[:3]})
    with pytest.raises(ValueError, match="batched tensor"):
        per_example_gradients(fn, weights, np.float64(1.0))
