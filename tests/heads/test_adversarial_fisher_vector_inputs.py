"""AdversarialFisherVector: where samples come from, bad input, and the running moments.

`adapt` must give the same statistics from an array, a `tf.data.Dataset` and a sampler
callable over the same samples; every bad input raises an error naming the argument, what
was expected and what came. `RunningMoments` is checked against NumPy's two-pass
`np.mean` / `np.var` on data whose mean dwarfs its spread.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.heads import AdversarialFisherVector
from mmrep.utils.running_moments import RunningMoments
from mmrep.utils.sample_batches import sample_batches
from tests.heads.afv_cases import conv_discriminator


def images(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 6, 6, 2)).astype("float32")


@pytest.fixture(scope="module")
def discriminator():
    return conv_discriminator()


@pytest.fixture(scope="module")
def adapted(discriminator):
    afv = AdversarialFisherVector(discriminator, batch_size=8)
    afv.adapt(images(30), verbose=0)
    return afv


def test_array_dataset_and_sampler_give_the_same_statistics(discriminator, adapted):
    samples = images(30)
    position = [0]

    def sampler(n):
        out = samples[position[0] : position[0] + n]
        position[0] += n
        return out

    sources = {
        "dataset": (tf.data.Dataset.from_tensor_slices(samples).batch(7), {}),
        "sampler": (sampler, {"num_samples": 30, "batch_size": 9}),
        "tensor": (tf.constant(samples), {"batch_size": 4}),
    }
    for name, (source, kwargs) in sources.items():
        afv = AdversarialFisherVector(discriminator)
        afv.adapt(source, verbose=0, **kwargs)
        for weight in ("mean_score", "fisher_information"):
            np.testing.assert_allclose(
                getattr(afv, weight).numpy(),
                getattr(adapted, weight).numpy(),
                rtol=1e-5,
                atol=1e-7,
                err_msg=f"{weight} from the {name}",
            )


def test_num_samples_limits_arrays_and_datasets(discriminator):
    first = AdversarialFisherVector(discriminator)
    first.adapt(images(12), verbose=0)
    for source in (images(30), tf.data.Dataset.from_tensor_slices(images(30)).batch(5)):
        afv = AdversarialFisherVector(discriminator)
        afv.adapt(source, num_samples=12, verbose=0)
        np.testing.assert_allclose(afv.mean_score, first.mean_score, rtol=1e-5, atol=1e-7)


def test_functional_model_graph_call_and_output_shape(adapted):
    model = keras.Sequential([keras.Input((6, 6, 2)), adapted])
    assert model.output_shape == (None, 85) and adapted.output_dim() == 85
    x = images(5, seed=1)
    np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0), adapted(x), atol=1e-5)


def test_nan_inputs_are_refused_eagerly_and_in_graphs(adapted):
    x = images(3, seed=2)
    x[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"finite inputs.*example\(s\) \[1\]"):
        adapted(x)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        tf.function(adapted)(tf.constant(x))


def test_wrong_input_shape_names_both(adapted):
    with pytest.raises(ValueError, match=r"shape \(None, 6, 6, 2\).*Received: \(None, 5, 5, 2\)"):
        adapted(np.zeros((2, 5, 5, 2), "float32"))


def test_call_before_adapt_is_an_error(discriminator):
    afv = AdversarialFisherVector(discriminator)
    with pytest.raises(ValueError, match=r"statistics are not set.*adapt"):
        afv(images(2))
    with pytest.raises(ValueError, match="build the layer"):
        AdversarialFisherVector(discriminator).set_statistics(np.zeros(85), np.ones(85))


def test_bad_discriminators():
    two_scores = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"one score per example.*\(None, 2\)"):
        AdversarialFisherVector(two_scores).adapt(np.zeros((3, 4)), verbose=0)
    frozen = conv_discriminator()
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        AdversarialFisherVector(frozen)
    with pytest.raises(ValueError, match=r"keras\.Model"):
        AdversarialFisherVector(keras.layers.Dense(1))
    with pytest.raises(
        ValueError, match=r"\['nope'\].*Its layers are: \[.*'conv', 'flatten', 'head'"
    ):
        AdversarialFisherVector(conv_discriminator(), parameters=["conv", "nope"])
    with pytest.raises(ValueError, match="'flatten' of `parameters` has no trainable weights"):
        AdversarialFisherVector(conv_discriminator(), parameters=["flatten"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"parameters": "conv"}, "`parameters`"),
        ({"parameters": []}, "`parameters`"),
        ({"subset_size": 0}, "`subset_size`"),
        ({"projection_dim": 2.0}, "`projection_dim`"),
        ({"subset_size": 3, "projection_dim": 3}, "at most one"),
        ({"seed": 1.5}, "`seed`"),
        ({"batch_size": True}, "`batch_size`"),
        ({"power_normalize": 1}, "`power_normalize`"),
        ({"l2_normalize": "yes"}, "`l2_normalize`"),
        ({"epsilon": 0.0}, "`epsilon`"),
        ({"statistics": {"mean": [0.0]}}, "keys"),
        ({"statistics": {"mean_score": [0.0], "fisher_information": [-1.0]}}, "non-negative"),
    ],
)
def test_bad_constructor_arguments(discriminator, kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdversarialFisherVector(discriminator, **kwargs)


def test_bad_statistics_and_samples(discriminator):
    too_big = AdversarialFisherVector(discriminator, subset_size=86)
    with pytest.raises(ValueError, match=r"`subset_size` <= 85"):
        too_big.build((None, 6, 6, 2))
    wrong = AdversarialFisherVector(
        discriminator, statistics={"mean_score": [0.0] * 3, "fisher_information": [1.0] * 3}
    )
    with pytest.raises(ValueError, match=r"P_full=85\. Received: 3"):
        wrong.build((None, 6, 6, 2))
    afv = AdversarialFisherVector(discriminator)
    with pytest.raises(ValueError, match="at least 2 samples"):
        afv.adapt(images(1), verbose=0)
    with pytest.raises(ValueError, match="`batch_size` to be a positive int"):
        afv.adapt(images(4), batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="pass `num_samples`"):
        afv.adapt(lambda n: images(n), verbose=0)
    with pytest.raises(ValueError, match=r"`samples\(4\)` returned 3 examples"):
        afv.adapt(lambda n: images(3), num_samples=4, verbose=0)
    with pytest.raises(ValueError, match="same N"):
        list(sample_batches({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, 2))


def test_running_moments_match_two_pass_numpy_on_offset_data():
    rng = np.random.default_rng(0)
    data = 1e6 + rng.normal(size=(1000, 3)) * [1.0, 1e-3, 10.0]
    moments = RunningMoments()
    start = 0
    for size in (1, 7, 500, 0, 292, 200):
        moments.update(data[start : start + size])
        start += size
    assert moments.count == 1000
    np.testing.assert_allclose(moments.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.variance, data.var(axis=0), rtol=1e-6)
    # The one-pass textbook formula fails this test (its cancellation error is ~1e-4).
    naive = np.mean(data**2, axis=0) - data.mean(axis=0) ** 2
    assert abs(naive[1] / data[:, 1].var() - 1) > 1e-2
    with pytest.raises(ValueError, match=r"\[n, P\] \(P=3\)"):
        moments.update(np.zeros((2, 4)))
