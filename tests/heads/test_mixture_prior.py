"""GaussianMixturePrior (VaDE): the prior terms against float64 numpy and Monte Carlo, the
responsibilities against sklearn, K=1 against the Gaussian KL, mixed precision, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture

from mmrep.heads import GaussianMixturePrior
from mmrep.losses.divergences import kl_diagonal_gaussians


def random_case(batch=6, latent=4, components=3, seed=0):
    """Posterior parameters, a sampled z and a random valid mixture, in float64."""
    rng = np.random.default_rng(seed)
    z_mean = rng.normal(0.0, 1.5, (batch, latent))
    z_log_var = rng.normal(-0.5, 0.7, (batch, latent))
    z = z_mean + np.exp(0.5 * z_log_var) * rng.standard_normal((batch, latent))
    weights = rng.dirichlet(np.full(components, 2.0))
    means = rng.normal(0.0, 1.5, (components, latent))
    variances = np.exp(rng.normal(0.0, 0.5, (components, latent)))
    return z, z_mean, z_log_var, (weights, means, variances)


def prior_with(gmm, **kwargs):
    prior = GaussianMixturePrior(len(gmm[0]), **kwargs)
    prior.set_gmm(*gmm)
    return prior


def run_prior(prior, z, z_mean, z_log_var, dtype="float32"):
    z, z_mean, z_log_var = (tf.cast(a, dtype) for a in (z, z_mean, z_log_var))
    out = prior(z, z_mean=z_mean, z_log_var=z_log_var)
    return {k: np.asarray(v) for k, v in out.items()}


def numpy_responsibilities(z, weights, means, variances):
    """gamma_c = p(c | z) in float64, from the densities written out per dimension."""
    log_normal = -0.5 * (
        np.log(2 * np.pi * variances)[None] + (z[:, None, :] - means[None]) ** 2 / variances[None]
    ).sum(-1)
    log_joint = np.log(weights)[None] + log_normal
    return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))


def numpy_vade_prior_terms(z, z_mean, z_log_var, weights, means, variances):
    """Minus the prior terms of Jiang et al. (2017) eq. 12, written as printed, in float64:

    0.5 sum_c gamma_c sum_j (log s2_cj + v_j / s2_cj + (m_j - mu_cj)^2 / s2_cj)
    - sum_c gamma_c log(pi_c / gamma_c) - 0.5 sum_j (1 + log v_j).
    """
    gamma = numpy_responsibilities(z, weights, means, variances)
    v = np.exp(z_log_var)
    per_component = (
        np.log(variances)[None]
        + v[:, None, :] / variances[None]
        + (z_mean[:, None, :] - means[None]) ** 2 / variances[None]
    ).sum(-1)
    return (
        0.5 * (gamma * per_component).sum(1)
        - (gamma * np.log(weights[None] / gamma)).sum(1)
        - 0.5 * (1 + z_log_var).sum(1)
    )


@pytest.mark.parametrize("seed, components, latent", [(0, 3, 4), (1, 5, 2), (2, 10, 8)])
def test_kl_equals_float64_vade_formula(seed, components, latent):
    z, z_mean, z_log_var, gmm = random_case(latent=latent, components=components, seed=seed)
    out = run_prior(prior_with(gmm), z, z_mean, z_log_var)
    gmm32 = [a.astype("float32").astype("float64") for a in gmm]
    expected = numpy_vade_prior_terms(
        *(a.astype("float32").astype("float64") for a in (z, z_mean, z_log_var)), *gmm32
    )
    assert out["kl"].dtype == np.float32 and out["kl"].shape == (6,)
    np.testing.assert_allclose(out["kl"], expected, rtol=2e-5, atol=2e-5)


def test_responsibilities_and_clusters_equal_sklearn():
    z, z_mean, z_log_var, (weights, means, variances) = random_case(batch=40, seed=3)
    gmm = GaussianMixture(3, covariance_type="diag")
    gmm.weights_, gmm.means_, gmm.covariances_ = weights, means, variances
    gmm.precisions_cholesky_ = 1.0 / np.sqrt(variances)
    out = run_prior(prior_with((weights, means, variances)), z, z_mean, z_log_var)
    np.testing.assert_allclose(out["responsibilities"], gmm.predict_proba(z), atol=1e-5)
    assert out["cluster"].dtype == np.int32
    np.testing.assert_array_equal(out["cluster"], gmm.predict(z))


def test_kl_equals_monte_carlo_decomposition():
    """kl = E_q[log q(z|x) - log p(z)] + E_q[KL(gamma || p(c|z))] for the layer's gamma.

    A different route from eq. 12: samples z ~ q(z|x) in float64 and uses the mixture's
    marginal density p(z) and posterior p(c|z); agreement within 4 standard errors.
    """
    z, z_mean, z_log_var, gmm = random_case(batch=3, latent=3, components=4, seed=4)
    weights, means, variances = gmm
    out = run_prior(prior_with(gmm), z, z_mean, z_log_var)
    rng = np.random.default_rng(5)
    samples = 200_000
    for i in range(3):
        std = np.exp(0.5 * z_log_var[i])
        draws = z_mean[i] + std * rng.standard_normal((samples, 3))
        log_q = -0.5 * (np.log(2 * np.pi) + z_log_var[i] + ((draws - z_mean[i]) / std) ** 2).sum(1)
        log_normal = -0.5 * (
            np.log(2 * np.pi * variances)[None]
            + (draws[:, None, :] - means[None]) ** 2 / variances[None]
        ).sum(-1)
        log_joint = np.log(weights)[None] + log_normal
        log_p = logsumexp(log_joint, axis=1)
        log_posterior = log_joint - log_p[:, None]
        gamma = out["responsibilities"][i].astype("float64")
        kl_c = (gamma[None] * (np.log(gamma)[None] - log_posterior)).sum(1)
        values = log_q - log_p + kl_c
        estimate, error = values.mean(), values.std(ddof=1) / np.sqrt(samples)
        assert abs(out["kl"][i] - estimate) < 4 * error + 1e-4, (
            f"example {i}: layer {out['kl'][i]:.5f}, Monte Carlo {estimate:.5f} +- {error:.5f}"
        )


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")
def test_one_component_is_the_gaussian_kl():
    z, z_mean, z_log_var, _ = random_case(batch=8, latent=5, seed=6)
    rng = np.random.default_rng(7)
    mean, variance = rng.normal(size=(1, 5)), np.exp(rng.normal(size=(1, 5)))
    out = run_prior(prior_with((np.ones(1), mean, variance)), z, z_mean, z_log_var)
    expected = kl_diagonal_gaussians(
        z_mean.astype("float32"),
        z_log_var.astype("float32"),
        mean[0].astype("float32"),
        np.log(variance[0]).astype("float32"),
    )
    np.testing.assert_allclose(out["kl"], np.asarray(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["responsibilities"], 1.0)
    np.testing.assert_array_equal(out["cluster"], 0)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_inputs_give_float32_terms(policy):
    z, z_mean, z_log_var, gmm = random_case(batch=8, latent=6, components=4, seed=8)
    half = keras.mixed_precision.Policy(policy).compute_dtype
    rounded = [np.asarray(tf.cast(tf.cast(a, half), "float32")) for a in (z, z_mean, z_log_var)]
    out = run_prior(prior_with(gmm, dtype=policy), *rounded, dtype=half)
    reference = run_prior(prior_with(gmm), *rounded)
    for key in ("kl", "responsibilities"):
        assert out[key].dtype == np.float32, f"{key} is {out[key].dtype}, expected float32"
        assert np.all(np.isfinite(out[key]))
        # Computed in float32 from the same rounded inputs: only float32 round-off differs.
        np.testing.assert_allclose(out[key], reference[key], rtol=1e-5, atol=1e-5)


def test_large_latents_stay_finite():
    z, _, z_log_var, gmm = random_case(batch=4, seed=9)
    far = 300.0 * np.ones_like(z)  # every component density underflows in linear space
    out = run_prior(prior_with(gmm), far, far, z_log_var)
    assert np.all(np.isfinite(out["kl"])) and np.all(np.isfinite(out["responsibilities"]))
    np.testing.assert_allclose(out["responsibilities"].sum(1), 1.0, atol=1e-5)


def test_mixture_round_trip_and_gradient():
    _, _, _, gmm = random_case(seed=10)
    prior = prior_with(gmm)
    with tf.GradientTape() as tape:
        mixture = prior.mixture()
        total = sum(tf.reduce_sum(v * v) for v in mixture.values())
    for key, value in zip(("weights", "means", "variances"), gmm, strict=True):
        np.testing.assert_allclose(np.asarray(mixture[key]), value, rtol=1e-5)
        assert mixture[key].dtype == tf.float32
    grads = tape.gradient(total, prior.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)


def test_gradients_reach_posterior_and_mixture():
    z, z_mean, z_log_var, gmm = random_case(seed=11)
    prior = prior_with(gmm)
    tensors = [tf.constant(a, "float32") for a in (z, z_mean, z_log_var)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        kl = tf.reduce_sum(prior(tensors[0], z_mean=tensors[1], z_log_var=tensors[2])["kl"])
    grads = tape.gradient(kl, tensors + prior.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)


def test_config_round_trip_keeps_seeded_init():
    prior = GaussianMixturePrior(4, seed=3, name="vade_prior")
    prior.build((None, 5))
    again = GaussianMixturePrior.from_config(prior.get_config())
    again.build((None, 5))
    assert again.get_config() == prior.get_config()
    assert again.num_components == 4 and again.seed == 3
    np.testing.assert_array_equal(np.asarray(again.means), np.asarray(prior.means))


def test_adapt_fits_and_assigns():
    pytest.importorskip("mmrep.heads.gmm.gmm_em")
    rng = np.random.default_rng(12)
    latents = np.concatenate([rng.normal(-3, 0.5, (100, 2)), rng.normal(3, 0.5, (100, 2))])
    prior = GaussianMixturePrior(2)
    fit = prior.adapt(latents)
    mixture = {k: np.asarray(v) for k, v in prior.mixture().items()}
    np.testing.assert_allclose(mixture["means"], fit.means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sort(mixture["means"][:, 0]), [-3, 3], atol=0.3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_components": 0}, "num_components` >= 1"),
        ({"num_components": "3"}, "positive int"),
        ({"num_components": True}, "positive int"),
        ({"num_components": 2, "seed": 1.5}, "`seed` to be an int"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixturePrior(**kwargs)


def test_bad_call_inputs():
    prior = GaussianMixturePrior(2)
    z = np.zeros((3, 4), "float32")
    with pytest.raises(ValueError, match="same shape"):
        prior(z, z_mean=z, z_log_var=np.zeros((3, 5), "float32"))
    prior(z, z_mean=z, z_log_var=z)
    with pytest.raises(ValueError, match="size 4"):
        w = np.zeros((3, 6), "float32")
        prior(w, z_mean=w, z_log_var=w)
    with pytest.raises(ValueError, match="floating `z`"):
        prior(z.astype("int32"), z_mean=z, z_log_var=z)


def test_bad_mixture():
    prior = GaussianMixturePrior(3)
    with pytest.raises(ValueError, match="mixture\\(\\) needs"):
        prior.mixture()
    with pytest.raises(ValueError, match="3 components"):
        prior.set_gmm(np.ones(2) / 2, np.zeros((2, 4)), np.ones((2, 4)))
    prior.set_gmm(np.ones(3) / 3, np.zeros((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="D=4"):
        prior.set_gmm(np.ones(3) / 3, np.zeros((3, 5)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="positive variances"):
        prior.set_gmm(np.ones(3) / 3, np.zeros((3, 4)), -np.ones((3, 4)))


def test_inside_vae_head_clusters_the_posterior_mean_at_inference():
    """VAEHead passes z = z_mean at inference: clusters are sklearn's on z_mean, and the
    head's loss is the mean of the float64 VaDE terms."""
    from mmrep.heads import VAEHead

    _, _, _, gmm = random_case(latent=3, components=4, seed=13)
    head = VAEHead(3, prior=prior_with(gmm), hidden_units=(8,), seed=0)
    features = np.random.default_rng(14).standard_normal((16, 5)).astype("float32")
    out = {k: np.asarray(v) for k, v in head(features, training=False).items()}
    np.testing.assert_array_equal(out["z"], out["z_mean"])
    weights, means, variances = gmm
    sk = GaussianMixture(4, covariance_type="diag")
    sk.weights_, sk.means_, sk.covariances_ = weights, means, variances
    sk.precisions_cholesky_ = 1.0 / np.sqrt(variances)
    np.testing.assert_array_equal(out["cluster"], sk.predict(out["z_mean"].astype("float64")))
    posterior = [out[k].astype("float64") for k in ("z_mean", "z_mean", "z_log_var")]
    expected = numpy_vade_prior_terms(*posterior, *gmm).mean()
    assert len(head.losses) == 1
    np.testing.assert_allclose(float(head.losses[0]), expected, rtol=1e-4)
