"""Heads over encoder or fusion outputs: VAEs (Gaussian, beta, conditional, mixture prior,
product of experts), Fisher-vector pooling (GMM Fisher vectors, NetVLAD family), and the
energy-based GAN with its Adversarial Fisher Vectors.
"""

from mmrep.lazy_exports import lazy_getattr

# Public name -> module inside mmrep.heads.
_EXPORTS = {
    "VAEHead": "vae",
    "KLAnnealing": "kl_annealing",
    "VectorDecoder": "decoders",
    "GaussianMixturePrior": "mixture_prior",
    "ProductOfExperts": "product_of_experts",
    "MultimodalVAE": "multimodal_vae",
    "FisherVector": "fisher_vector",
    "fit_diagonal_gmm": "gmm_em",
    "GMMFit": "gmm_em",
    "NetVLAD": "netvlad",
    "NetRVLAD": "netvlad",
    "SoftBagOfWords": "netvlad",
    "NetFV": "net_fisher_vector",
    "ContextGating": "context_gating",
    "EBMGAN": "ebm_gan",
    "dcgan_generator": "gan_networks",
    "dcgan_discriminator": "gan_networks",
    "per_example_gradients": "example_gradients",
    "AdversarialFisherVector": "adversarial_fisher_vector",
    "fisher_distance": "fisher_set_distance",
    "fisher_similarity": "fisher_set_distance",
    "FisherSimilarityCallback": "fisher_similarity_callback",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
