"""DCGAN builders: shapes, layer structure, per-example independence, spectral norm, bad input."""

import keras
import numpy as np
import pytest

from mmrep.heads.gan.gan_networks import check_gan_networks, dcgan_discriminator, dcgan_generator

RNG = np.random.default_rng(0)


def _layers(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def test_generator_shapes_and_structure():
    generator = dcgan_generator(10, output_shape=(16, 8, 2), widths=(12, 6, 3))
    images = generator(RNG.standard_normal((3, 10)).astype("float32"), training=False)
    assert tuple(images.shape) == (3, 16, 8, 2)
    # tanh images; three stride-2 upsamplings from a 2 x 1 map.
    assert np.abs(images).max() <= 1.0
    assert generator.get_layer("reshape").output.shape[1:] == (2, 1, 12)
    assert len(_layers(generator, keras.layers.Conv2DTranspose)) == 3
    assert len(_layers(generator, keras.layers.BatchNormalization)) == 3
    sigmoid = dcgan_generator(4, output_shape=(4, 4, 1), widths=(2,), output_activation="sigmoid")
    out = sigmoid(RNG.standard_normal((2, 4)).astype("float32"))
    assert np.all((out >= 0) & (out <= 1))


@pytest.mark.parametrize("spectral", [True, False])
def test_discriminator_structure_and_independence(spectral):
    discriminator = dcgan_discriminator((16, 16, 3), widths=(4, 8), spectral_normalization=spectral)
    x = RNG.uniform(-1, 1, (5, 16, 16, 3)).astype("float32")
    scores = discriminator(x, training=False)
    assert tuple(scores.shape) == (5, 1) and scores.dtype == "float32"
    assert not _layers(discriminator, keras.layers.BatchNormalization)
    wrapped = _layers(discriminator, keras.layers.SpectralNormalization)
    assert len(wrapped) == (3 if spectral else 0)
    assert [layer.name for layer in _layers(discriminator, keras.layers.LeakyReLU)] == [
        "block0_lrelu",
        "block1_lrelu",
    ]
    assert discriminator.get_layer("block1_lrelu").output.shape[1:] == (4, 4, 8)
    # An example's score does not depend on the rest of the batch (the AFV needs that).
    # (Inference mode: a training call of SpectralNormalization also rescales the kernel.)
    alone = np.concatenate([discriminator(x[i : i + 1], training=False) for i in range(5)])
    together = discriminator(x, training=False)
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)


def test_spectral_normalization_bounds_the_kernels():
    discriminator = dcgan_discriminator((8, 8, 1), widths=(4,), spectral_normalization=True)
    score = discriminator.get_layer("score_sn").layer
    score.kernel.assign(score.kernel * 50.0)
    x = RNG.uniform(-1, 1, (4, 8, 8, 1)).astype("float32")
    for _ in range(30):  # power iterations, one per training call
        discriminator(x, training=True)
    kernel = keras.ops.convert_to_numpy(score.kernel)
    np.testing.assert_allclose(np.linalg.svd(kernel, compute_uv=False)[0], 1.0, rtol=1e-3)


def test_check_gan_networks():
    generator = dcgan_generator(6, output_shape=(8, 8, 1), widths=(2, 2))
    discriminator = dcgan_discriminator((8, 8, 1), widths=(2,))
    assert check_gan_networks(generator, discriminator) == (6, (8, 8, 1))
    with pytest.raises(ValueError, match=r"\(None, 8, 8, 1\).*\(None, 8, 8, 3\)"):
        check_gan_networks(generator, dcgan_discriminator((8, 8, 3), widths=(2,)))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: dcgan_generator(0), "latent_dim"),
        (lambda: dcgan_generator(4, widths=()), "widths"),
        (lambda: dcgan_generator(4, widths=(8, -1)), "widths"),
        (lambda: dcgan_generator(4, output_shape=(30, 32, 3)), "output_shape"),
        (lambda: dcgan_generator(4, output_shape=(32, 32)), "output_shape"),
        (lambda: dcgan_discriminator((32, 32)), "input_shape"),
        (lambda: dcgan_discriminator(widths=[]), "widths"),
        (lambda: dcgan_discriminator(spectral_normalization="yes"), "spectral_normalization"),
    ],
)
def test_bad_arguments(build, message):
    with pytest.raises(ValueError, match=f"Expected `{message}`.*Received"):
        build()
