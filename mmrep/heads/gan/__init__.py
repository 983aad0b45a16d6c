"""The energy-based GAN and its Adversarial Fisher Vectors: DCGAN networks, the EBM-GAN
model, the AFV feature extractor and the Fisher distance between sets of AFVs."""

from mmrep.heads.gan.adversarial_fisher_vector import AdversarialFisherVector
from mmrep.heads.gan.ebm_gan import EBMGAN
from mmrep.heads.gan.fisher_set_distance import fisher_distance, fisher_similarity
from mmrep.heads.gan.fisher_similarity_callback import FisherSimilarityCallback
from mmrep.heads.gan.gan_networks import dcgan_discriminator, dcgan_generator

__all__ = [
    "EBMGAN",
    "AdversarialFisherVector",
    "FisherSimilarityCallback",
    "dcgan_discriminator",
    "dcgan_generator",
    "fisher_distance",
    "fisher_similarity",
]
