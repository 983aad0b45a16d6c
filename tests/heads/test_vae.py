"""VAEHead, KLAnnealing and VectorDecoder against float64 numpy formulas and sampling theory."""

import keras
import numpy as np
import pytest

from mmrep.heads import KLAnnealing, VAEHead, VectorDecoder
from tests.harness import two_device_strategy


def _kl64(mean, log_var):
    mean, log_var = np.float64(mean), np.float64(log_var)
    return 0.5 * np.sum(np.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)


def _set_linear(head, rng, log_var_offset=0.0):
    """Random float32 weights for a head without hidden layers; returns them in float64."""
    weights = []
    for dense, offset in ((head.mean_layer, 0.0), (head.log_var_layer, log_var_offset)):
        kernel = rng.normal(0, 0.5, dense.kernel.shape).astype("float32")
        bias = (rng.normal(0, 0.5, dense.bias.shape) + offset).astype("float32")
        dense.set_weights([kernel, bias])
        weights.append((np.float64(kernel), np.float64(bias)))
    return weights


def _data(n=8, d=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype("float32")


def test_sampling_matches_posterior_moments():
    rng = np.random.default_rng(1)
    head = VAEHead(3, seed=11)
    x = np.repeat(_data(2), 20000, axis=0)  # 2 distinct inputs, 20000 draws each
    head(x[:2])
    (wm, bm), (wv, bv) = _set_linear(head, rng)
    mean64 = np.float64(x[::20000]) @ wm + bm
    var64 = np.exp(np.float64(x[::20000]) @ wv + bv)
    z = keras.ops.convert_to_numpy(head(x, training=True)["z"]).reshape(2, 20000, 3)
    n = z.shape[1]
    sample_mean, sample_var = z.mean(axis=1), z.var(axis=1, ddof=1)
    assert np.all(np.abs(sample_mean - mean64) < 4 * np.sqrt(var64 / n))
    assert np.all(np.abs(sample_var - var64) < 4 * var64 * np.sqrt(2.0 / (n - 1)))


def test_seeds_reproducible_and_inference_deterministic():
    x = _data()
    heads = [VAEHead(2, hidden_units=(4,), seed=s) for s in (5, 5, 6)]
    for head in heads:
        head(x)
    heads[1].set_weights(heads[0].get_weights())
    heads[2].set_weights(heads[0].get_weights())
    draws = [keras.ops.convert_to_numpy(h(x, training=True)["z"]) for h in heads]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.allclose(draws[0], draws[2])
    again = keras.ops.convert_to_numpy(heads[0](x, training=True)["z"])
    assert not np.allclose(again, draws[0]), "the seed generator must advance between calls"
    for training in (False, None):
        out = heads[0](x, training=training)
        np.testing.assert_array_equal(out["z"], out["z_mean"])


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_added_loss_is_weighted_batch_mean_of_analytic_kl(beta):
    head = VAEHead(3, beta=beta, hidden_units=(6,), seed=0)
    out = head(_data(), training=True)
    kl = _kl64(out["z_mean"], out["z_log_var"])
    assert len(head.losses) == 1
    np.testing.assert_allclose(float(head.losses[0]), beta * kl.mean(), rtol=1e-5)
    head.kl_weight.assign(0.25)
    out = head(_data(seed=1))
    expected = 0.25 * _kl64(out["z_mean"], out["z_log_var"]).mean()
    np.testing.assert_allclose(float(head.losses[0]), expected, rtol=1e-5)


@keras.saving.register_keras_serializable(package="mmrep_tests")
class _SquarePrior(keras.layers.Layer):
    """A stand-in prior: kl = sum(z**2) - sum(z_log_var), plus an extra output."""

    def call(self, z, z_mean, z_log_var, training=None):
        kl = keras.ops.sum(z**2, axis=-1) - keras.ops.sum(z_log_var, axis=-1)
        return {"kl": kl, "score": keras.ops.cast(2.0 * z_mean, "float16")}


def test_prior_layer_supplies_kl_and_extra_outputs():
    head = VAEHead(2, beta=3.0, prior=_SquarePrior(), seed=0)
    out = head(_data(), training=True)
    assert sorted(out) == ["score", "z", "z_log_var", "z_mean"]
    assert out["score"].dtype == "float32"
    z, log_var = np.float64(out["z"]), np.float64(out["z_log_var"])
    expected = 3.0 * np.mean(np.sum(z**2, -1) - np.sum(log_var, -1))
    np.testing.assert_allclose(float(head.losses[0]), expected, rtol=1e-5)
    assert head.compute_output_shape((8, 5))["score"] == (8, 2)
    revived = VAEHead.from_config(head.get_config())
    assert isinstance(revived.prior, _SquarePrior)


def test_prior_without_kl_is_refused():
    class NoKL(keras.layers.Layer):
        def call(self, z, z_mean, z_log_var, training=None):
            return {"loss": z}

    with pytest.raises(ValueError, match="'kl'"):
        VAEHead(2, prior=NoKL())(_data())


def test_condition_changes_encoder_and_decoder_outputs():
    x, labels = _data(4), np.eye(3, dtype="float32")
    head = VAEHead(2, hidden_units=(5,), seed=0)
    decoder = VectorDecoder(6, hidden_units=(5,))
    a = head(x, condition=labels[[0, 0, 0, 0]])["z_mean"]
    b = head(x, condition=labels[[1, 1, 1, 1]])["z_mean"]
    assert np.all(np.abs(np.float64(a) - np.float64(b)).sum(-1) > 1e-4)
    za = decoder(a, condition=labels[[0, 0, 0, 0]])
    zb = decoder(a, condition=labels[[2, 2, 2, 2]])
    assert np.all(np.abs(np.float64(za) - np.float64(zb)).sum(-1) > 1e-4)


def test_bad_inputs_raise_clear_errors():
    head = VAEHead(2)
    with pytest.raises(ValueError, match=r"\[batch, features\]"):
        head(np.ones((2, 3, 4), "float32"))
    head(_data())
    with pytest.raises(ValueError, match=r"\[batch, 5\]"):
        head(np.ones((2, 4), "float32"))
    with pytest.raises(ValueError, match="built with no `condition`"):
        head(_data(), condition=np.ones((8, 2), "float32"))
    conditional = VAEHead(2)
    conditional(_data(), condition=np.ones((8, 3), "float32"))
    with pytest.raises(ValueError, match=r"condition.*\[batch, 3\]"):
        conditional(_data(), condition=np.ones((8, 2), "float32"))
    for kwargs, match in (
        ({"latent_dim": 0}, "latent_dim"),
        ({"latent_dim": 2, "beta": -1.0}, "beta"),
        ({"latent_dim": 2, "hidden_units": (0,)}, "hidden_units"),
        ({"latent_dim": 2, "prior": "vamp"}, "prior"),
    ):
        with pytest.raises(ValueError, match=match):
            VAEHead(**kwargs)
    with pytest.raises(ValueError, match="distribution"):
        VectorDecoder(3, distribution="poisson")
    with pytest.raises(ValueError, match="Bernoulli"):
        VectorDecoder(3, distribution="bernoulli", variance="learned")


def test_learned_variance_decoder_layout():
    decoder = VectorDecoder(4, variance="learned")
    z = _data(3, 2)
    out = keras.ops.convert_to_numpy(decoder(z))
    decoder.log_variance.assign(np.log([1.0, 2.0, 3.0, 4.0]).astype("float32"))
    kernel, bias = (np.float64(w) for w in decoder.output_layer.get_weights())
    out = keras.ops.convert_to_numpy(decoder(z))
    np.testing.assert_allclose(out[:, :4], np.float64(z) @ kernel + bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 4:], np.log([[1.0, 2.0, 3.0, 4.0]] * 3), rtol=1e-6)


def _vae_model(head):
    inputs = keras.Input((5,))
    return keras.Model(inputs, head(inputs))


def test_kl_metric_in_history_resets_per_epoch_and_validates():
    batches = [_data(8, seed=s) for s in (1, 2)]
    head = VAEHead(2, hidden_units=(4,), seed=0)
    model = _vae_model(head)
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # lr 0: the KL of a batch is fixed
    expected = [_kl64(out["z_mean"], out["z_log_var"]).mean() for out in map(model, batches)]

    def stream():
        while True:
            yield from ((b,) for b in batches)

    history = model.fit(
        stream(),
        steps_per_epoch=1,
        epochs=2,
        validation_data=(batches[0],),
        shuffle=False,
        verbose=0,
    )
    np.testing.assert_allclose(history.history["kl"], expected, rtol=1e-5)
    np.testing.assert_allclose(history.history["val_kl"], [expected[0]] * 2, rtol=1e-5)
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-5)


def test_distributed_step_equals_single_device_step():
    # Posterior std exp(-15): the draw is z_mean up to 3e-7, so the two runs may be compared.
    x = _data(8)
    targets = np.random.default_rng(3).standard_normal((8, 1)).astype("float32")

    def make():
        inputs = keras.Input((5,))
        out = VAEHead(2, beta=2.0, hidden_units=(4,), seed=0)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(out["z"]))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    single = make()
    head = single.layers[1]
    head.log_var_layer.set_weights([np.zeros((4, 2), "float32"), np.full(2, -30.0, "float32")])
    with two_device_strategy().scope():
        mirrored = make()
    mirrored.set_weights(single.get_weights())
    logs = [
        m.fit(x, targets, batch_size=8, epochs=1, shuffle=False, verbose=0)
        for m in (single, mirrored)
    ]
    np.testing.assert_allclose(logs[1].history["loss"], logs[0].history["loss"], rtol=1e-5)
    np.testing.assert_allclose(logs[1].history["kl"], logs[0].history["kl"], rtol=1e-5)
    for a, b in zip(mirrored.get_weights(), single.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("warmup", "cycle"),
    [(4, None), (2, 3)],
)
def test_kl_annealing_weights_seen_by_the_loss(warmup, cycle):
    x = _data(8)
    heads = [VAEHead(2, beta=2.0, seed=0, name="a"), VAEHead(2, beta=0.5, seed=1, name="b")]
    inputs = keras.Input((5,))
    model = keras.Model(inputs, [h(inputs)["z"] for h in heads])
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    kls = [_kl64(o["z_mean"], o["z_log_var"]).mean() for o in (h(x) for h in heads)]
    annealing = KLAnnealing(warmup_steps=warmup, cycle_steps=cycle)
    epochs = 7
    history = model.fit(x, batch_size=8, epochs=epochs, callbacks=[annealing], verbose=0)

    def schedule(t, beta):
        position = t if cycle is None else t % cycle
        return beta * min(1.0, position / warmup)

    expected = [
        sum(schedule(t, h.beta) * k for h, k in zip(heads, kls, strict=True)) for t in range(epochs)
    ]
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-5, atol=1e-7)
    assert annealing.step == epochs


def test_kl_annealing_arguments():
    with pytest.raises(ValueError, match="warmup_steps"):
        KLAnnealing(0)
    with pytest.raises(ValueError, match="cycle_steps"):
        KLAnnealing(5, cycle_steps=3)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="kl_weight"):
        model.fit(_data(), _data(8, 2), callbacks=[KLAnnealing(3)], verbose=0)
