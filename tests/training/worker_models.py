"""Small models + data that the multi-worker job trains (tests/training/multi_worker_job.py).

`MODELS` maps a name to a builder `builder(num_examples) -> (model, x, y)`: a compiled
Keras model (the job calls the builder under `strategy.scope()`, after
`keras.utils.set_random_seed`), its inputs `x` (an array or a dict of arrays) and targets
`y` (or `None`). The data must depend on nothing but `num_examples`, so that every
process builds the same examples. Optimizers are SGD: its update is linear in the
gradient, so the float round-off between a summed per-replica gradient and the global
one stays round-off (Adam's first steps, about `lr * sign(g)`, would magnify it where a
gradient is near zero). Training must be deterministic: no dropout, and random draws
that the outputs do not depend on.

To add a model, write a builder and add one line to `MODELS`; the multi-worker test
(tests/training/test_multi_worker.py) then trains it on two workers and in one process
and compares the weights. `CONTROLS` holds models that must not match (negative
controls: they show the comparison can fail).
"""

import keras
import numpy as np

from mmrep.fusion import (
    ConcatFusion,
    ContrastiveModel,
    CoordinatedEmbedding,
    MultimodalAutoencoder,
)
from mmrep.heads import EBMGAN, VAEHead, dcgan_discriminator, dcgan_generator
from mmrep.losses import ClipLoss

# Presence patterns (float32 0/1: Keras cannot split bool inputs over replicas): both
# modalities, the first only, the second only.
_PATTERNS = np.array([[1, 1], [1, 0], [0, 1], [1, 1]], "float32")


def _presence(num_examples):
    return np.resize(_PATTERNS, (num_examples, 2))


def _sgd():
    return keras.optimizers.SGD(0.1, momentum=0.5)


def concat_fusion(num_examples):
    """uint8 images + int32 token ids -> ConcatFusion with a presence mask -> classifier.

    The input dtypes are those of real data; uint8 is one that collective ops cannot
    reduce, which Keras' `fit` asks for (see `KerasMultiWorkerMirroredStrategy`).
    """
    rng = np.random.default_rng(1)
    x = {
        "image": rng.integers(0, 256, (num_examples, 4, 4, 3), dtype=np.uint8),
        "tokens": rng.integers(1, 20, (num_examples, 5)).astype("int32"),
        "presence": _presence(num_examples),
    }
    y = rng.integers(0, 3, num_examples).astype("int32")
    image = keras.Input((4, 4, 3), dtype="uint8", name="image")
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    presence = keras.Input((2,), name="presence")
    image_vector = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(image))
    text_vector = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(tokens))
    fused = ConcatFusion(modalities=["image", "text"], projection_dim=3, normalization="layer")(
        {"image": image_vector, "text": text_vector}, presence=presence
    )
    outputs = keras.layers.Dense(3, activation="softmax")(fused)
    model = keras.Model({"image": image, "tokens": tokens, "presence": presence}, outputs)
    model.compile(optimizer=_sgd(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, x, y


def _two_modalities(num_examples, seed, image_dim, text_dim):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((num_examples, image_dim)).astype("float32"),
        "text": rng.standard_normal((num_examples, text_dim)).astype("float32"),
        "presence": _presence(num_examples),
    }


def _inputs(image_dim, text_dim):
    return {
        "image": keras.Input((image_dim,), name="image"),
        "text": keras.Input((text_dim,), name="text"),
        "presence": keras.Input((2,), name="presence"),
    }


def multimodal_autoencoder(num_examples):
    """MultimodalAutoencoder whose only losses are its `add_loss` terms (no targets).

    The reconstruction loss is divided by the local batch, and Keras divides layer
    losses by the replica count: this checks that scaling across workers.
    """
    x = _two_modalities(num_examples, 2, 5, 3)
    inputs = _inputs(5, 3)
    outputs = MultimodalAutoencoder(
        3, modalities=["image", "text"], encoder_units=(4,), sparsity="l1", sparsity_weight=0.1
    )({"image": inputs["image"], "text": inputs["text"]}, presence=inputs["presence"])
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=_sgd())
    return model, x, None


def vae_head(num_examples):
    """VAEHead (KL `add_loss`, a `kl` metric) + a decoder of `z_mean` with an MSE loss.

    The decoder reads `z_mean`, not the sampled `z`: a replica draws noise for its own
    shard, which cannot equal the single-process draw, while the KL term and its
    replica scaling are what this model checks.
    """
    x = np.random.default_rng(3).standard_normal((num_examples, 6)).astype("float32")
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    posterior = VAEHead(2, beta=0.5, hidden_units=(4,), seed=0)(hidden)
    outputs = keras.layers.Dense(6)(posterior["z_mean"])
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=_sgd(), loss="mse")
    return model, x, x


def contrastive(num_examples, loss=None):
    """CoordinatedEmbedding (learned temperature) in a `ContrastiveModel`, no targets.

    `ClipLoss` gathers the embeddings of every replica (every worker here), so each
    example's negatives are the whole global batch.
    """
    x = _two_modalities(num_examples, 4, 6, 4)
    inputs = _inputs(6, 4)
    outputs = CoordinatedEmbedding(3, hidden_dims=(5,), hidden_activation="tanh")(
        {"image": inputs["image"], "text": inputs["text"]}, presence=inputs["presence"]
    )
    model = ContrastiveModel(keras.Model(inputs, outputs), loss or ClipLoss())
    model.compile(optimizer=_sgd())
    return model, x, None


def contrastive_local_negatives(num_examples):
    """The contrastive model with `ClipLoss(cross_replica=False)`: a control.

    Each worker's negatives are its own shard only, so its training must differ from
    the single process's: the test asserts that it does, which shows that the match of
    `contrastive` comes from the cross-worker gather and that the comparison can fail.
    """
    return contrastive(num_examples, ClipLoss(cross_replica=False))


def ebm_gan(num_examples):
    """EBMGAN: its own two-optimizer `train_step`, noise drawn by the model (one global draw
    split over the replicas), the moving-average regulariser and spectral normalisation."""
    x = np.random.default_rng(5).uniform(-1, 1, (num_examples, 8, 8, 1)).astype("float32")
    model = EBMGAN(
        dcgan_generator(4, output_shape=(8, 8, 1), widths=(8, 4)),
        dcgan_discriminator((8, 8, 1), widths=(4, 8)),
        generator_regularization=1.0,
        seed=3,
    )
    model.compile(discriminator_optimizer=_sgd(), generator_optimizer=_sgd())
    return model, x, None


MODELS = {
    "concat_fusion": concat_fusion,
    "multimodal_autoencoder": multimodal_autoencoder,
    "vae_head": vae_head,
    "contrastive": contrastive,
    "ebm_gan": ebm_gan,
}

# Models whose distributed training must NOT match the single process (see each one).
CONTROLS = {"contrastive_local_negatives": contrastive_local_negatives}
