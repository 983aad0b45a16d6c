"""The two optimizers of a GAN: the authors' Adam defaults and loss scaling for float16.

Zhai et al. (apple/ml-afv) train both networks with Adam, β1 = 0 and β2 = 0.999, the
discriminator at twice the generator's learning rate (4e-4 and 2e-4; the two time-scale
rule of Heusel et al., NeurIPS 2017). Under a `"mixed_float16"` policy each optimizer
is wrapped in a `LossScaleOptimizer`, as `keras.Model.compile` does for its one
optimizer.
"""

import keras


def gan_optimizers(discriminator_optimizer=None, generator_optimizer=None, loss_scale=False):
    """The discriminator's and the generator's optimizers.

    Args:
        discriminator_optimizer: a Keras optimizer, its name or config, or `None` for
            `Adam(4e-4, beta_1=0, beta_2=0.999)`.
        generator_optimizer: likewise, `None` for `Adam(2e-4, beta_1=0, beta_2=0.999)`.
        loss_scale: bool. Whether to wrap each one (unless it already is) in a
            `keras.optimizers.LossScaleOptimizer` with dynamic scaling. Defaults to `False`.

    Returns:
        A tuple `(discriminator_optimizer, generator_optimizer)` of Keras optimizers.

    Raises:
        ValueError: if both arguments are the same optimizer object (each network needs
            its own slots and step counter), or for an unknown optimizer name.
    """
    if discriminator_optimizer is None:
        discriminator_optimizer = keras.optimizers.Adam(4e-4, beta_1=0.0, beta_2=0.999)
    if generator_optimizer is None:
        generator_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.0, beta_2=0.999)
    pair = keras.optimizers.get(discriminator_optimizer), keras.optimizers.get(generator_optimizer)
    if pair[0] is pair[1]:
        raise ValueError(
            "Expected two optimizer objects (each keeps its own state). Received the same "
            "object for `discriminator_optimizer` and `generator_optimizer`"
        )
    if not loss_scale:
        return pair
    return tuple(
        opt
        if isinstance(opt, keras.optimizers.LossScaleOptimizer)
        else keras.optimizers.LossScaleOptimizer(opt, name=f"{role}_loss_scale_optimizer")
        for opt, role in zip(pair, ("discriminator", "generator"), strict=True)
    )
