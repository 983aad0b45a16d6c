"""Training losses: contrastive (CLIP / InfoNCE, NT-Xent, VSE++ max-margin) and the ELBO's
terms (Gaussian KL divergences, reconstruction negative log-likelihoods).

Functions (`clip_loss`, `nt_xent_loss`, `max_margin_ranking_loss`) take two embedding
tensors and return a scalar; the `keras.losses.Loss` classes read the output dict of
`mmrep.fusion.CoordinatedEmbedding` and are attached to it (`loss=`) for `model.fit`.
All gather negatives across `tf.distribute` replicas (`mmrep.losses.cross_replica`).
"""

from mmrep.losses.contrastive import clip_loss, max_margin_ranking_loss, nt_xent_loss
from mmrep.losses.contrastive_keras import ClipLoss, MaxMarginRankingLoss, NTXentLoss
from mmrep.losses.cross_replica import gather_batch, num_replicas_in_sync, strategy_replicas
from mmrep.losses.divergences import (
    gaussian_log_density,
    kl_diagonal_gaussians,
    kl_standard_normal,
)
from mmrep.losses.reconstruction import (
    BernoulliNLL,
    GaussianNLL,
    bernoulli_nll,
    categorical_nll,
    gaussian_nll,
    split_gaussian,
)

__all__ = [
    "BernoulliNLL",
    "ClipLoss",
    "GaussianNLL",
    "MaxMarginRankingLoss",
    "NTXentLoss",
    "bernoulli_nll",
    "categorical_nll",
    "clip_loss",
    "gather_batch",
    "gaussian_log_density",
    "gaussian_nll",
    "kl_diagonal_gaussians",
    "kl_standard_normal",
    "max_margin_ranking_loss",
    "nt_xent_loss",
    "num_replicas_in_sync",
    "split_gaussian",
    "strategy_replicas",
]
