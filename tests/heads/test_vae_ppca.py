"""A linear VAE on probabilistic-PCA data reaches the maximum-likelihood solution.

Tipping & Bishop (1999) give the pPCA maximum-likelihood fit in closed form from the
sample covariance; a linear Gaussian VAE (linear encoder, `VAEHead` without hidden
layers, linear `VectorDecoder` with a learned per-feature observation variance) has an
ELBO that is at most the exact log-likelihood of its own generative model
`x ~ N(b, W Wᵀ + diag(ψ))` and, at its optimum, equal to it (the pPCA posterior
covariance can be made diagonal by a rotation of W; Lucas et al., "Don't Blame the
ELBO!", NeurIPS 2019). Both are evaluated here in float64 from the trained weights.
"""

import keras
import numpy as np
import pytest

from mmrep.heads import VAEHead, VectorDecoder
from mmrep.losses.reconstruction import GaussianNLL

DIM, LATENT, SAMPLES = 8, 2, 2000
EPOCHS = 150  # 1500 Adam steps of batch 200, cosine-decayed learning rate
# |ELBO - pPCA MLE log-likelihood| per sample after training. Measured: 8e-4 nat (ELBO
# -8.3486, MLE -8.3493; the learned per-feature noise is factor analysis, whose fit can
# exceed pPCA's by a little). Unconverged runs were 0.05-0.15 nat away.
GAP = 0.01


def _ppca_data():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (DIM, LATENT)) * np.array([1.0, 0.6])  # moderate scales for Adam
    mu = rng.normal(0, 1, DIM)
    z = rng.standard_normal((SAMPLES, LATENT))
    return z @ w.T + mu + 0.5 * rng.standard_normal((SAMPLES, DIM))


def _gaussian_loglik(x, mean, cov):
    """Average log N(x | mean, cov) per sample, float64."""
    centred = x - mean
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("nd,de,ne->n", centred, np.linalg.inv(cov), centred)
    return np.mean(-0.5 * (DIM * np.log(2 * np.pi) + logdet + maha))


def _ppca_mle_loglik(x):
    """Tipping & Bishop's closed-form maximum-likelihood pPCA fit, evaluated on x."""
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False, bias=True)
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1], vectors[:, ::-1]
    sigma2 = values[LATENT:].mean()
    w = vectors[:, :LATENT] * np.sqrt(values[:LATENT] - sigma2)
    return _gaussian_loglik(x, mean, w @ w.T + sigma2 * np.eye(DIM))


def _elbo(x, head, decoder):
    """Average ELBO per sample in float64, with the expectation over q in closed form."""
    (a, a0), (c, c0) = (
        [np.float64(v) for v in layer.get_weights()]
        for layer in (head.mean_layer, head.log_var_layer)
    )
    w, b = (np.float64(v) for v in decoder.output_layer.get_weights())  # [L, D], [D]
    log_psi = np.float64(decoder.log_variance.numpy())
    m, log_s = x @ a + a0, x @ c + c0
    s = np.exp(log_s)
    residual = x - (m @ w + b)
    # E_q ||x - W z - b||²_ψ⁻¹ = residual term + sum_d sum_l W_ld² s_l / ψ_d
    spread = s @ (w**2 / np.exp(log_psi))
    expected_loglik = -0.5 * np.sum(
        np.log(2 * np.pi) + log_psi + residual**2 / np.exp(log_psi), axis=1
    ) - 0.5 * spread.sum(axis=1)
    kl = 0.5 * np.sum(s + m**2 - 1.0 - log_s, axis=1)
    own_loglik = _gaussian_loglik(x, b, w.T @ w + np.diag(np.exp(log_psi)))
    return np.mean(expected_loglik - kl), own_loglik


@pytest.mark.slow  # convergence
def test_linear_vae_reaches_ppca_likelihood():
    x = _ppca_data()
    inputs = keras.Input((DIM,))
    head = VAEHead(LATENT, seed=0)
    decoder = VectorDecoder(DIM, variance="learned")
    model = keras.Model(inputs, decoder(head(inputs)["z"]))
    learning_rate = keras.optimizers.schedules.CosineDecay(0.05, EPOCHS * 10, alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=GaussianNLL("learned"))
    xf = x.astype("float32")
    model.fit(xf, xf, batch_size=SAMPLES // 10, epochs=EPOCHS, verbose=0)
    elbo, own_loglik = _elbo(x, head, decoder)
    mle = _ppca_mle_loglik(x)
    print(f"ELBO {elbo:.5f}  own log-likelihood {own_loglik:.5f}  pPCA MLE {mle:.5f}")
    assert elbo <= own_loglik + 1e-9
    assert abs(elbo - mle) < GAP
