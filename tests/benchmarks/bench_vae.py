"""VAE benchmark: training steps of the image VAE recipe with and without XLA.

The model of recipes/image_vae.py (two strided convolutions, `VAEHead` with a hidden
layer and KL `add_loss`, Dense + two transposed convolutions, Bernoulli loss), one
`train_on_batch` of 64 mmdigits-sized images per call, compiled with `jit_compile=True`
(mmrep) against the same model, same starting weights, with `jit_compile=False`.

Run: `python -m tests.benchmarks image_vae_xla`.
"""

import numpy as np

from tests.benchmarks.runner import Comparison, benchmark

SIZES = {"full": {"batch": 64, "width": 32}, "smoke": {"batch": 4, "width": 4}}


def _recipe():
    from tests.recipes import load_recipe

    return load_recipe("image_vae.py")


@benchmark("image_vae_xla")
def image_vae_xla(size="full"):
    """Training steps/s of the image VAE recipe's model, XLA-compiled vs not."""
    recipe = _recipe()
    s = SIZES[size]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (s["batch"], recipe.SIDE, recipe.SIDE, 3)).astype("float32")
    labels = np.eye(recipe.CLASSES, dtype="float32")[rng.integers(0, 10, s["batch"])]
    x = {"image": images, "label": labels}
    models = []
    for jit in (True, False):
        vae = recipe.ImageVAE(width=s["width"], seed=0)
        vae.compile(jit_compile=jit)
        if models:
            vae.model.set_weights(models[0].get_weights())
        vae.model.train_on_batch(x, images)  # trace (and XLA-compile)
        models.append(vae.model)
    return Comparison(
        mmrep=lambda: models[0].train_on_batch(x, images),
        reference=lambda: models[1].train_on_batch(x, images),
        reference_name="the same Keras model and step with jit_compile=False",
        work=f"image VAE train step, batch {s['batch']} x 32x32x3, Adam",
        items=s["batch"],
    )
