"""Variational autoencoder heads: the Gaussian VAE head (β-VAE and conditional VAE through
its arguments), vector decoders, KL annealing, the VaDE mixture prior and the multimodal
product-of-experts VAE (MVAE)."""

from mmrep.heads.vae.decoders import VectorDecoder
from mmrep.heads.vae.kl_annealing import KLAnnealing
from mmrep.heads.vae.mixture_prior import GaussianMixturePrior
from mmrep.heads.vae.multimodal_vae import MultimodalVAE
from mmrep.heads.vae.product_of_experts import ProductOfExperts
from mmrep.heads.vae.vae import VAEHead

__all__ = [
    "GaussianMixturePrior",
    "KLAnnealing",
    "MultimodalVAE",
    "ProductOfExperts",
    "VAEHead",
    "VectorDecoder",
]
