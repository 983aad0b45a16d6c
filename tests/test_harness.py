"""The harness can fail: each check catches the mistake it exists for.

Each test hands the harness a deliberately broken layer and expects the one check that
guards against that mistake to raise, and a sound layer to pass it.
"""

import keras
import numpy as np
import pytest
from keras import ops

from mmrep.fusion import ConcatFusion
from tests.harness import (
    LayerCase,
    check_call,
    check_config,
    check_distributed,
    check_gradients,
    check_keras_save,
    check_mixed_precision,
    check_saved_model,
    run_layer_test,
)


def _vectors():
    return np.random.default_rng(0).standard_normal((4, 3)).astype("float32")


def _case(layer_cls, **overrides):
    fields = {
        "name": layer_cls.__name__,
        "layer_cls": layer_cls,
        "init_kwargs": {},
        "make_inputs": _vectors,
        "expected_output_shape": (4, 3),
    }
    fields.update(overrides)
    return LayerCase(**fields)


@keras.saving.register_keras_serializable(package="mmrep_harness_test")
class Scale(keras.layers.Layer):
    """A sound layer: multiplies by a learned per-feature scale."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * ops.cast(self.scale, x.dtype)


@keras.saving.register_keras_serializable(package="mmrep_harness_test")
class DropsProjectionDim(ConcatFusion):
    """ConcatFusion whose get_config forgets `projection_dim`."""

    def get_config(self):
        config = super().get_config()
        del config["projection_dim"]
        return config


@keras.saving.register_keras_serializable(package="mmrep_harness_test")
class HalfPrecisionWeights(Scale):
    """Keeps its variable in the compute dtype, which breaks loss-scaled training."""

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],), initializer="ones", dtype=self.compute_dtype, name="scale"
        )


@keras.saving.register_keras_serializable(package="mmrep_harness_test")
class AlwaysFloat32(Scale):
    """Ignores the dtype policy and returns float32."""

    def call(self, x):
        return ops.cast(super().call(x), "float32")


@keras.saving.register_keras_serializable(package="mmrep_harness_test")
class SqrtAtZero(Scale):
    """sqrt(relu(x)): an infinite derivative wherever an input is <= 0."""

    def call(self, x):
        return ops.sqrt(ops.relu(super().call(x)))


@keras.saving.register_keras_serializable(package="mmrep_harness_test")
class BatchCentred(Scale):
    """Subtracts the batch mean: each replica sees a different mean than the global batch."""

    def call(self, x):
        y = super().call(x)
        return y - ops.mean(y, axis=0, keepdims=True)


@keras.saving.register_keras_serializable(package="mmrep_harness_test")
class TraceTimeNoise(Scale):
    """Adds a Python-side random number, baked into each traced graph differently."""

    def call(self, x):
        return super().call(x) + float(np.random.default_rng().standard_normal())


def test_sound_layer_passes_every_check():
    case = _case(Scale)
    for check in (
        check_call,
        check_config,
        check_keras_save,
        check_saved_model,
        check_mixed_precision,
        check_gradients,
        check_distributed,
    ):
        check(case)


def test_call_catches_a_wrong_output_shape():
    with pytest.raises(AssertionError, match="expected output shape"):
        check_call(_case(Scale, expected_output_shape=(4, 5)))


def test_config_catches_a_dropped_constructor_argument():
    case = _case(
        DropsProjectionDim,
        init_kwargs={"projection_dim": 2},
        make_inputs=lambda: {"a": _vectors(), "b": _vectors()},
        expected_output_shape=(4, 6),
    )
    check_call(case)
    with pytest.raises(AssertionError, match="drops constructor arguments"):
        check_config(case)


def test_config_catches_an_unregistered_class():
    class Unregistered(Scale):
        pass

    with pytest.raises(AssertionError, match="registered"):
        check_config(_case(Unregistered))


def test_saved_model_catches_a_graph_that_differs_from_eager():
    with pytest.raises(AssertionError, match="SavedModel export/reload"):
        check_saved_model(_case(TraceTimeNoise))


def test_mixed_precision_catches_half_precision_variables():
    with pytest.raises(AssertionError, match="variables must stay float32"):
        check_mixed_precision(_case(HalfPrecisionWeights))


def test_mixed_precision_catches_an_ignored_policy():
    with pytest.raises(AssertionError, match="expected floating outputs in float16"):
        check_mixed_precision(_case(AlwaysFloat32))


def test_gradients_catches_an_infinite_gradient():
    with pytest.raises(AssertionError, match="not finite"):
        check_gradients(_case(SqrtAtZero))


def test_distributed_catches_per_replica_batch_statistics():
    with pytest.raises(AssertionError, match="MirroredStrategy"):
        check_distributed(_case(BatchCentred))


def test_not_applicable_must_name_known_checks_with_a_reason():
    with pytest.raises(ValueError, match=r"unknown checks \['gradient'\]"):
        _case(Scale, not_applicable={"gradient": "typo of gradients"})
    with pytest.raises(ValueError, match=r"needs a reason for \['distributed'\]"):
        _case(Scale, not_applicable={"distributed": " "})


def test_not_applicable_skips_only_the_named_check():
    # The infinite gradient is excused only where "gradients" is declared not to apply...
    run_layer_test(_case(SqrtAtZero, not_applicable={"gradients": "excused for this test"}))
    # ...and a declaration for another check does not hide it, nor a wrong shape.
    with pytest.raises(AssertionError, match="not finite"):
        run_layer_test(_case(SqrtAtZero, not_applicable={"distributed": "excused"}))
    with pytest.raises(AssertionError, match="expected output shape"):
        run_layer_test(
            _case(Scale, expected_output_shape=(4, 5), not_applicable={"gradients": "excused"})
        )
