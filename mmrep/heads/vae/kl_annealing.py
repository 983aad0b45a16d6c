"""KL annealing: a per-batch schedule of the KL weight of every VAE head in a model."""

import keras

from mmrep.utils.arguments import check_int, is_int


def add_kl_weight(layer, beta):
    """Creates `layer.kl_weight`, the KL term's weight that `KLAnnealing` schedules.

    A non-trainable float32 scalar (never autocast) starting at `beta`; the layer must also
    keep `beta` as an attribute, the value the schedule rises to.
    """
    layer.kl_weight = layer.add_weight(
        name="kl_weight",
        shape=(),
        initializer=keras.initializers.Constant(beta),
        trainable=False,
        dtype="float32",
        autocast=False,
    )


def _sublayers(layer):
    """Layers held by `layer`'s attributes (directly or in lists, tuples and dicts)."""
    for value in vars(layer).values():
        if isinstance(value, keras.layers.Layer):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, keras.layers.Layer))
        elif isinstance(value, dict):
            yield from (v for v in value.values() if isinstance(v, keras.layers.Layer))


def annealed_layers(model):
    """Every layer inside `model` (itself included) that has a `kl_weight` and a `beta`.

    Walks the layers held by attributes, recursively, so heads nested in other layers
    (such as a multimodal VAE's per-modality heads) are found.

    Args:
        model: a Keras layer or model.

    Returns:
        A list of layers, each once, in discovery order.
    """
    found, seen, stack = [], set(), [model]
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if hasattr(layer, "beta") and isinstance(getattr(layer, "kl_weight", None), keras.Variable):
            found.append(layer)
        stack.extend(_sublayers(layer))
    return found


class KLAnnealing(keras.callbacks.Callback):
    """Schedules the `kl_weight` of VAE heads per training batch, from 0 up to `beta`.

    Before training batch `t` (counted from `initial_step` over every `fit` call of this
    callback) each head's `kl_weight` is set to `beta * min(1, s / warmup_steps)` with
    `s = t` (monotonic warm-up, Bowman et al.) or `s = t mod cycle_steps` (cyclical
    schedule, Fu et al.: `cycle_steps` is the period, `warmup_steps` the rising part of
    each cycle, and the weight stays at `beta` for the rest of it). `beta` is each
    head's own (`VAEHead(beta=...)`), so heads with different β anneal to their own.

    Heads: `layers` when given, else every layer of the model that has a `kl_weight`
    variable and a `beta` attribute (`VAEHead` and any layer following the same
    protocol), found when training begins. A model without one raises.

    Args:
        warmup_steps: int >= 1. Batches from weight 0 to `beta`.
        cycle_steps: int or `None`. Period of the cyclical schedule, `>= warmup_steps`.
            `None` (monotonic) by default.
        layers: list of layers or `None` (found in the model). Defaults to `None`.
        initial_step: int >= 0. The step of the first batch (to resume a schedule).
            Defaults to `0`.

    Raises:
        ValueError: for bad schedule arguments, or no head to anneal.

    Example:

    >>> callback = KLAnnealing(warmup_steps=1000)
    >>> [callback.weight_at(t, beta=2.0) for t in (0, 500, 2000)]
    [0.0, 1.0, 2.0]

    Reference:
        Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016.
        Fu et al., "Cyclical Annealing Schedule: A Simple Approach to Mitigating KL
        Vanishing", NAACL 2019.
    """

    def __init__(self, warmup_steps, cycle_steps=None, layers=None, initial_step=0):
        super().__init__()
        warmup_steps = check_int("warmup_steps", warmup_steps, minimum=1)
        if cycle_steps is not None and not is_int(cycle_steps, warmup_steps):
            raise ValueError(
                "Expected `cycle_steps` to be None or an int >= warmup_steps "
                f"({warmup_steps}). Received: {cycle_steps}"
            )
        self.warmup_steps = warmup_steps
        self.cycle_steps = None if cycle_steps is None else int(cycle_steps)
        self.layers = None if layers is None else list(layers)
        self.step = check_int("initial_step", initial_step, minimum=0)
        self._heads = []

    def weight_at(self, step, beta):
        """The scheduled weight at batch `step` for a head with `beta`.

        Args:
            step: int >= 0.
            beta: float.

        Returns:
            float.
        """
        position = step if self.cycle_steps is None else step % self.cycle_steps
        return float(beta) * min(1.0, position / self.warmup_steps)

    def on_train_begin(self, logs=None):
        self._heads = self.layers if self.layers is not None else annealed_layers(self.model)
        if not self._heads:
            raise ValueError(
                "KLAnnealing: expected the model to hold a layer with a `kl_weight` variable "
                "and a `beta` (such as mmrep.heads.VAEHead). Received a model with none; "
                "build the model before fit or pass `layers=`"
            )

    def on_train_batch_begin(self, batch, logs=None):
        for head in self._heads:
            head.kl_weight.assign(self.weight_at(self.step, head.beta))
        self.step += 1
