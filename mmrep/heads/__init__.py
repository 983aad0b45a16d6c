"""Heads over encoder or fusion outputs, by family.

- `mmrep.heads.vae`: VAEs (Gaussian, β, conditional, VaDE mixture prior, product-of-experts
  multimodal VAE).
- `mmrep.heads.gmm`: diagonal-GMM EM and Fisher vectors.
- `mmrep.heads.pooling`: the NetVLAD family of learnable set pooling and Context Gating.
- `mmrep.heads.gan`: the energy-based GAN and its Adversarial Fisher Vectors.

Every public name is re-exported here (`mmrep.heads.FisherVector`), and importing this
package registers every head layer with Keras, so `keras.saving.load_model` finds them.
"""

from mmrep.heads import gan, gmm, pooling, vae
from mmrep.heads.gan import *  # noqa: F403
from mmrep.heads.gmm import *  # noqa: F403
from mmrep.heads.pooling import *  # noqa: F403
from mmrep.heads.vae import *  # noqa: F403
from mmrep.utils.example_gradients import per_example_gradients

__all__ = [*gan.__all__, *gmm.__all__, *pooling.__all__, *vae.__all__, "per_example_gradients"]
