"""TrainingOptions and the `--precision` / `--jit-compile` flags, checked against Keras itself.

tests/conftest.py restores the global dtype policy after every test.
"""

import argparse

import keras
import numpy as np
import pytest

from mmrep.training.options import PRECISIONS, TrainingOptions, add_training_arguments


def _parser():
    parser = argparse.ArgumentParser(prog="recipe")
    add_training_arguments(parser)
    return parser


def test_defaults_change_nothing():
    options = TrainingOptions.from_args(_parser().parse_args([]))
    assert options == TrainingOptions() == TrainingOptions("float32", False)
    assert options.compile_kwargs() == {"jit_compile": False}
    assert options.apply() is options
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_apply_sets_the_policy_that_layers_built_afterwards_take(precision):
    args = _parser().parse_args(["--precision", precision, "--jit-compile"])
    options = TrainingOptions.from_args(args).apply()
    assert options.precision == precision and options.compile_kwargs() == {"jit_compile": True}
    expected = keras.DTypePolicy(precision)
    dense = keras.layers.Dense(2)
    out = dense(np.ones((3, 4), "float32"))
    assert dense.compute_dtype == expected.compute_dtype
    assert dense.variable_dtype == expected.variable_dtype == "float32"
    assert keras.backend.standardize_dtype(out.dtype) == expected.compute_dtype


@pytest.mark.parametrize("precision", PRECISIONS)
def test_compile_with_the_options_scales_the_loss_for_float16_only_and_trains(precision):
    options = TrainingOptions(precision, jit_compile=True).apply()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", **options.compile_kwargs())
    assert model.jit_compile is True
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 1))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    assert all(v.dtype == "float32" for v in model.trainable_variables)


def test_help_says_what_each_flag_does():
    text = _parser().format_help()
    for phrase in ("--precision", "mixed_float16", "mixed_bfloat16", "loss scaling", "XLA"):
        assert phrase in text, phrase


def test_unknown_precision_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'float32', 'mixed_float16', 'mixed_bfloat16'.*'fp16'"):
        TrainingOptions("fp16")
    parser = _parser()
    parser.error = lambda message: (_ for _ in ()).throw(ValueError(message))
    with pytest.raises(ValueError, match=r"invalid choice: 'half'.*mixed_bfloat16"):
        parser.parse_args(["--precision", "half"])


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_jit_compile_must_be_a_bool(value):
    with pytest.raises(ValueError, match=r"`jit_compile` to be a bool. Received: jit_compile="):
        TrainingOptions(jit_compile=value)


def test_from_args_without_the_flags_says_what_to_add():
    args = argparse.ArgumentParser().parse_args([])
    with pytest.raises(ValueError, match=r"\['precision', 'jit_compile'\].*add_training_arguments"):
        TrainingOptions.from_args(args)


def test_repr_round_trips():
    options = TrainingOptions("mixed_bfloat16", True)
    assert eval(repr(options)) == options
    assert hash(options) == hash(TrainingOptions("mixed_bfloat16", True))
    assert options != TrainingOptions("mixed_bfloat16", False)
