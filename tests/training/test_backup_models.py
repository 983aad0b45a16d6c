"""`BackupAndRestore` with mmrep's own models: the custom `train_step`s that hold more than
`model.optimizer` (the EBM-GAN's two optimizers) or a loss of their own (ContrastiveModel)
resume from a backup to the weights and optimizer state of an uninterrupted run.

The interrupted run is a `fit` that stops after two epochs with its backup kept; the resumed
run is a fresh model (same seeds) whose `fit(epochs=3)` must restore and run only epoch 3.
"""

import keras
import numpy as np
import pytest

from mmrep.fusion import ContrastiveModel, CoordinatedEmbedding
from mmrep.heads import EBMGAN, dcgan_discriminator, dcgan_generator
from mmrep.training import BackupAndRestore

IMAGES = np.random.default_rng(0).uniform(-1, 1, (32, 16, 16, 1)).astype("float32")
PAIRS = {
    "image": np.random.default_rng(1).standard_normal((32, 6)).astype("float32"),
    "text": np.random.default_rng(2).standard_normal((32, 5)).astype("float32"),
}


def _gan():
    keras.utils.set_random_seed(0)
    gan = EBMGAN(
        dcgan_generator(8, output_shape=(16, 16, 1), widths=(16, 8)),
        dcgan_discriminator((16, 16, 1), widths=(8, 16)),
        generator_regularization=1.0,
        regularization_noise_std=0.1,
        seed=0,
    )
    gan.compile()
    return gan, IMAGES, lambda m: [m.discriminator_optimizer, m.generator_optimizer]


def _contrastive():
    keras.utils.set_random_seed(0)
    inputs = {name: keras.Input(value.shape[1:], name=name) for name, value in PAIRS.items()}
    model = ContrastiveModel(keras.Model(inputs, CoordinatedEmbedding(4)(inputs)))
    model.compile(optimizer="adam")
    return model, PAIRS, lambda m: [m.optimizer]


@pytest.mark.slow  # kill and resume
@pytest.mark.parametrize("build", [_gan, _contrastive], ids=["ebm_gan", "contrastive"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, build):
    interrupted, data, optimizers = build()
    interrupted.fit(
        data,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[BackupAndRestore(tmp_path, delete_checkpoint=False)],
    )
    resumed, _, _ = build()
    history = resumed.fit(
        data, batch_size=16, epochs=3, verbose=0, callbacks=[BackupAndRestore(tmp_path)]
    )
    assert len(next(iter(history.history.values()))) == 1, "the resumed run repeated epochs"
    uninterrupted, _, _ = build()
    uninterrupted.fit(data, batch_size=16, epochs=3, verbose=0)
    for got, want, variable in zip(
        resumed.get_weights(), uninterrupted.get_weights(), uninterrupted.weights, strict=True
    ):
        np.testing.assert_array_equal(got, want, err_msg=variable.path)
    for got, want in zip(optimizers(resumed), optimizers(uninterrupted), strict=True):
        assert int(got.iterations) == int(want.iterations) == 6
        for a, b in zip(got.variables, want.variables, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.path)
