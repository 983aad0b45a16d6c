"""Adversarial Fisher Vectors: the discriminator of an energy-based GAN as a feature extractor.

Zhai, Talbott, Guestrin & Susskind (NeurIPS 2019) read the discriminator `D_θ(x)` of an
EBM-GAN as a negative energy, `p_θ(x) = exp(D_θ(x)) / Z(θ)`, whose generator's samples
estimate expectations under `p_θ`. An example's Fisher score is

    U_x = ∇θ log p_θ(x) = ∇θ D(x) − E_{x'~p_θ} ∇θ D(x')   (the expectation over G(z)),

the diagonal Fisher information is `I = E_z[U_{G(z)}²]` (the variance of the generated
samples' scores), and the Adversarial Fisher Vector is `V_x = diag(I)^(-1/2) U_x`.

`AdversarialFisherVector` computes `V_x` for a batch with `per_example_gradients`
(vectorised, in chunks of `batch_size`), after `adapt` has estimated the mean score and
`I` from generated samples (float64 accumulation, Chan et al.'s pairwise update).
"""

import copy
import weakref

import keras
import numpy as np
import tensorflow as tf
from keras import ops, tree

from mmrep.heads.gan.random_projection import count_sketch, random_subset
from mmrep.utils.arguments import check_int, is_int
from mmrep.utils.example_gradients import per_example_gradients
from mmrep.utils.finite_inputs import checked_finite
from mmrep.utils.power_normalization import l2_normalize, signed_sqrt
from mmrep.utils.running_moments import RunningMoments
from mmrep.utils.sample_batches import known_total, sample_batches

# Traced functions for eager use (`pfor` needs a graph), one set per layer, reused across
# calls. Held outside the layer's attributes, so that Keras and TensorFlow tracking (and
# saving) do not see them, and weakly, so that they go with the layer.
_TRACED = weakref.WeakKeyDictionary()

# The keys of `statistics=` and of `get_statistics()`.
STATISTICS_KEYS = ("mean_score", "fisher_information")


@keras.saving.register_keras_serializable(package="mmrep")
class AdversarialFisherVector(keras.layers.Layer):
    """Adversarial Fisher Vectors `[B, P]` of a batch under an EBM-GAN's discriminator.

    For each example, the gradient `g` of the discriminator's scalar output w.r.t. the
    chosen parameters, then `(g − mean_score) / sqrt(fisher_information + epsilon)`, then
    a random coordinate subset or a count-sketch projection (optional, to bound `P`),
    then the signed square root and L2 normalisation (optional). `adapt(samples)` sets
    `mean_score` and `fisher_information` (float32 weights `[P_full]`, saved with the
    layer) from the generator's samples; calling the layer before is an error.

    The discriminator (a `keras.Model` mapping a batch to `[B]` or `[B, 1]`) is shared,
    not copied: the layer always reads its current weights, e.g. while an EBM-GAN trains
    it. It is frozen inside the layer: it runs in inference mode (`training=False`; it
    must treat examples independently) and the output carries no gradient to its weights
    (read through a `keras.StatelessScope` of stopped values), only to the input. The
    layer adds no trainable weight; the discriminator's stay trainable for the GAN, so a
    model that trains on the AFVs lists them without gradients (Keras warns): set
    `discriminator.trainable = False` once the GAN is trained.

    Gradients, statistics and outputs are float32 under any dtype policy (half precision
    is too coarse for Fisher statistics); the discriminator computes in its own policy.
    Eager calls reuse one traced function per layer; `transform` encodes arrays.

    Args:
        discriminator: `keras.Model`. `D(x)`, the negative energy, output `[B]` or `[B, 1]`.
        parameters: `"all"` (the discriminator's trainable weights when the layer is
            built) or a list of layer names (their trainable weights, in the order
            given). Defaults to `"all"`.
        subset_size: int or `None`. Keep this many of the `P_full` gradient coordinates,
            a sorted random subset drawn once from `seed`. Defaults to `None`.
        projection_dim: int or `None`. Count-sketch projection to this many dimensions
            (each coordinate hashed to one bucket with a random sign, drawn from `seed`;
            preserves inner products in expectation; O(P_full) memory). At most one of
            `subset_size` and `projection_dim`. Defaults to `None`.
        seed: int. Seed of the subset or the sketch. Defaults to `0`.
        batch_size: int. Examples per vectorised chunk; bounds peak memory. Defaults to `64`.
        power_normalize: bool. Signed square root of the output. Defaults to `False`.
        l2_normalize: bool. L2 normalisation of the output. Defaults to `False`.
        epsilon: float. Added to the Fisher information under the square root.
            Defaults to `1e-8`.
        statistics: dict `{"mean_score": [P_full], "fisher_information": [P_full]}` of
            array-likes, or `None`: statistics assigned at build and kept in the config
            (so only for small `P_full`); `adapt` is the usual way. Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a batch the discriminator takes (a tensor or a structure of tensors).
        training: ignored; the discriminator always runs in inference mode.

    Returns:
        float32 `[B, P]`: `P` is `projection_dim`, `subset_size` or `P_full`.

    Raises:
        ValueError: bad constructor arguments; a discriminator without trainable weights,
            whose output is not `[B]`/`[B, 1]`, or unknown layer names (listing the known
            ones); inputs of another shape than the discriminator's (naming both); a
            call before `adapt`; NaN/Inf inputs (eagerly; in graphs an
            `InvalidArgumentError` when run, a check XLA drops).

    Example:

    >>> d = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> afv = AdversarialFisherVector(d)
    >>> afv.adapt(np.random.normal(size=(100, 4)), verbose=0)
    >>> tuple(afv(np.ones((2, 4))).shape)
    (2, 5)

    Reference:
        Zhai, Talbott, Guestrin & Susskind, "Adversarial Fisher Vectors for Unsupervised
        Representation Learning", NeurIPS 2019. Charikar, Chen & Farach-Colton, "Finding
        Frequent Items in Data Streams", ICALP 2002 (count sketch).
    """

    def __init__(
        self,
        discriminator,
        parameters="all",
        subset_size=None,
        projection_dim=None,
        seed=0,
        batch_size=64,
        power_normalize=False,
        l2_normalize=False,
        epsilon=1e-8,
        statistics=None,
        **kwargs,
    ):
        # Inputs reach the discriminator as given (it casts them to its own policy).
        super().__init__(autocast=False, **kwargs)
        check_arguments(
            discriminator, parameters, subset_size, projection_dim, seed, batch_size,
            power_normalize, l2_normalize, epsilon,
        )  # fmt: skip
        self.discriminator = discriminator
        self.parameters = parameters if parameters == "all" else list(parameters)
        self.subset_size = None if subset_size is None else int(subset_size)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.power_normalize = power_normalize
        self.l2_normalize = l2_normalize
        self.epsilon = float(epsilon)
        self.statistics = None if statistics is None else check_statistics(statistics)
        self.full_dim = None
        self._adapted = False
        if discriminator.built:  # early errors; resolved again at build
            resolve_parameters(discriminator, self.parameters, self.name)

    @property
    def compute_dtype(self):
        """Always float32: per-example gradients and Fisher statistics need it."""
        return "float32"

    def build(self, inputs_shape):
        d = self.discriminator
        if not d.built:
            d.build(inputs_shape)
        got, declared = shapes_without_batch(inputs_shape), declared_input_shapes(d)
        self._check_input_shapes(got, declared)
        self._input_shapes = got if declared is None else declared
        check_discriminator_output(d, inputs_shape, self.name)
        self._parameter_indices = resolve_parameters(d, self.parameters, self.name)
        self.full_dim = sum(int(np.prod(d.weights[i].shape)) for i in self._parameter_indices)

        def state(name, shape, dtype="float32"):
            return self.add_weight(
                name=name, shape=shape, initializer="zeros", dtype=dtype, trainable=False,
                autocast=False,
            )  # fmt: skip

        self.mean_score = state("mean_score", (self.full_dim,))
        self.fisher_information = state("fisher_information", (self.full_dim,))
        self.statistics_adapted = state("statistics_adapted", ())
        if self.subset_size is not None:
            indices = random_subset(self.full_dim, self.subset_size, self.seed)
            self.subset_indices = state("subset_indices", (self.subset_size,), "int32")
            self.subset_indices.assign(indices)
        if self.projection_dim is not None:
            buckets, signs = count_sketch(self.full_dim, self.projection_dim, self.seed)
            self.sketch_buckets = state("sketch_buckets", (self.full_dim,), "int32")
            self.sketch_signs = state("sketch_signs", (self.full_dim,))
            self.sketch_buckets.assign(buckets)
            self.sketch_signs.assign(signs)
        if self.statistics is not None:
            self._assign_statistics(*check_statistics(self.statistics, arrays=True))
        self.built = True

    def _check_input_shapes(self, got, expected):
        if expected is not None and not shapes_match(expected, got):
            raise ValueError(
                f"{self.name}: expected inputs of shape {readable_shapes(expected)} (the "
                f"discriminator's input). Received: {readable_shapes(got)}"
            )

    # === Statistics ===

    def set_statistics(self, mean_score, fisher_information):
        """Assigns the mean score and the diagonal Fisher information (`[P_full]` each).

        Raises:
            ValueError: the layer is not built; arrays of another length than `P_full`,
                non-finite values or a negative Fisher information.
        """
        if not self.built:
            raise ValueError(f"{self.name}: build the layer (call or adapt it) first")
        statistics = {"mean_score": mean_score, "fisher_information": fisher_information}
        self._assign_statistics(*check_statistics(statistics, arrays=True))

    def _assign_statistics(self, mean, fisher):
        if mean.shape != (self.full_dim,):
            raise ValueError(
                f"{self.name}: expected statistics of length P_full={self.full_dim}. "
                f"Received: {len(mean)}"
            )
        self.mean_score.assign(mean.astype("float32"))
        self.fisher_information.assign(fisher.astype("float32"))
        self.statistics_adapted.assign(1.0)
        self._adapted = True

    def adapt(self, samples, num_samples=None, batch_size=None, verbose="auto"):
        """Estimates the mean score and diagonal Fisher information from generated samples.

        The per-example gradients of each batch are merged in float64 into a running mean
        and sum of squared deviations (`RunningMoments`, Chan et al.'s pairwise update);
        the Fisher information is their population variance (`1/N`). Reads the
        discriminator's current weights: call it again after training it further.

        Args:
            samples: generated examples: an array (or structure of arrays), a
                `tf.data.Dataset` of batches, or a callable `n -> examples` (such as a
                generator's `sample`).
            num_samples: int. How many samples to draw; required for a callable, else
                the first `num_samples` (default: all).
            batch_size: int. Examples per batch; defaults to the layer's `batch_size`.
            verbose: `0`, `1` or `"auto"` (= 1): a progress bar.

        Raises:
            ValueError: fewer than 2 samples; non-finite gradients (naming the batch); as
                `sample_batches`.
        """
        batch_size = self.batch_size if batch_size is None else batch_size
        gradients = self._traced("gradients")
        bar = None
        if verbose:
            bar = keras.utils.Progbar(known_total(samples, num_samples), unit_name="sample")
        moments = RunningMoments()
        for i, batch in enumerate(sample_batches(samples, batch_size, num_samples, "samples")):
            if not self.built:
                self.build(shapes_of(batch))
            g = gradients(batch).numpy()
            if not np.isfinite(g).all():
                raise ValueError(
                    f"{self.name}: non-finite per-example gradients in batch {i} of the "
                    "samples; are the generated samples finite?"
                )
            moments.update(g)
            if bar is not None:
                bar.update(moments.count)
        if moments.count < 2:
            raise ValueError(
                f"{self.name}: `adapt` needs at least 2 samples to estimate the Fisher "
                f"information. Received: {moments.count}"
            )
        self._assign_statistics(moments.mean, moments.variance)

    def _check_adapted(self):
        if self._adapted:
            return
        # The weight is the truth (saved, loaded and copied with the weights); read it
        # eagerly even while a graph is traced.
        with tf.init_scope():
            self._adapted = bool(np.asarray(self.statistics_adapted.value) > 0.5)
        if not self._adapted:
            raise ValueError(
                f"{self.name}: the Fisher statistics are not set. Call `adapt(samples)` with "
                "samples of the generator first (or `set_statistics`)."
            )

    # === Calling ===

    def _per_example_gradients(self, inputs):
        """`[B, P_full]` float32 gradients of the discriminator's score, weights frozen."""
        d = self.discriminator
        weights = [w for w in d.weights if keras.backend.is_float_dtype(w.dtype)]
        values = {id(w): tf.stop_gradient(w.value) for w in weights}
        params = [values[id(d.weights[i])] for i in self._parameter_indices]
        mapping = [(w, values[id(w)]) for w in weights]

        def scores(batch):
            with keras.StatelessScope(mapping):
                out = d(batch, training=False)
            return ops.reshape(out, (-1,))

        g = per_example_gradients(scores, params, inputs, batch_size=self.batch_size)
        return ops.cast(g, "float32")

    def _traced(self, which):
        """This layer's cached `tf.function` of `_per_example_gradients` or of `__call__`."""
        functions = _TRACED.setdefault(self, {})
        if which not in functions:
            ref = weakref.ref(self)
            if which == "gradients":
                fn = lambda x: ref()._per_example_gradients(x)  # noqa: E731
            else:
                fn = lambda x: ref()(x)  # noqa: E731
            functions[which] = tf.function(fn, reduce_retracing=True)
        return functions[which]

    def call(self, inputs, training=None):
        self._check_adapted()
        self._check_input_shapes(shapes_of(inputs), self._input_shapes)
        inputs = tree.map_structure(lambda x: checked_finite(x, self.name), inputs)
        if tf.executing_eagerly():
            g = self._traced("gradients")(inputs)
        else:
            g = self._per_example_gradients(inputs)
        v = (g - self.mean_score) / ops.sqrt(self.fisher_information + self.epsilon)
        if self.subset_size is not None:
            v = ops.take(v, self.subset_indices, axis=1)
        if self.projection_dim is not None:
            # Count sketch: bucket h(j) collects s(j) v_j, a segment sum over coordinates.
            signed = ops.transpose(v * self.sketch_signs)  # [P_full, B]
            v = ops.transpose(
                ops.segment_sum(signed, self.sketch_buckets, num_segments=self.projection_dim)
            )
        if self.power_normalize:
            v = signed_sqrt(v)
        if self.l2_normalize:
            v = l2_normalize(v)
        return v

    def transform(self, x, batch_size=None, num_samples=None, verbose=0):
        """AFVs of `x` (anything `adapt` takes) as a float32 NumPy array `[N, P]`.

        Batches of `batch_size` (default: the layer's) through one traced function;
        `num_samples` as in `adapt`; `verbose=1` shows a progress bar.

        Raises:
            ValueError: as `call` and `sample_batches`; no examples.
        """
        size = self.batch_size if batch_size is None else batch_size
        encode, rows = self._traced("encode"), []
        bar = keras.utils.Progbar(known_total(x, num_samples), unit_name="example")
        for batch in sample_batches(x, size, num_samples, "x"):
            rows.append(encode(batch).numpy())
            if verbose:
                bar.add(len(rows[-1]))
        if not rows:
            raise ValueError(f"{self.name}: `transform` received no examples")
        return np.concatenate(rows)

    def output_dim(self):
        """`P` of the output (`None` until built, unless a subset or projection fixes it)."""
        return self.projection_dim or self.subset_size or self.full_dim

    def compute_output_shape(self, inputs_shape):
        batch = tree.flatten(tree.map_shape_structure(tuple, inputs_shape))[0]
        return (batch, self.output_dim())

    def compute_output_spec(self, inputs, training=None):
        batch = tree.flatten(inputs)[0].shape[0]
        return keras.KerasTensor((batch, self.output_dim()), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "discriminator": keras.saving.serialize_keras_object(self.discriminator),
                "parameters": self.parameters,
                "subset_size": self.subset_size,
                "projection_dim": self.projection_dim,
                "seed": self.seed,
                "batch_size": self.batch_size,
                "power_normalize": self.power_normalize,
                "l2_normalize": self.l2_normalize,
                "epsilon": self.epsilon,
                "statistics": self.statistics,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Deserialising consumes the nested config; keep the caller's intact.
        config["discriminator"] = keras.saving.deserialize_keras_object(
            copy.deepcopy(config["discriminator"])
        )
        return cls(**config)


# === Argument, discriminator, statistics and input checks ===


def check_arguments(
    discriminator,
    parameters,
    subset_size,
    projection_dim,
    seed,
    batch_size,
    power_normalize,
    l2_normalize,
    epsilon,
):
    """Raises ValueError naming the first bad constructor argument of the AFV layer."""
    if not isinstance(discriminator, keras.Model):
        raise ValueError(
            "Expected `discriminator` to be a keras.Model. "
            f"Received: {type(discriminator).__name__}"
        )
    if parameters != "all" and (
        isinstance(parameters, str)
        or not isinstance(parameters, (list, tuple))
        or not parameters
        or not all(isinstance(p, str) for p in parameters)
        or len(set(parameters)) != len(parameters)
    ):
        raise ValueError(
            "Expected `parameters` to be 'all' or a non-empty list of distinct layer "
            f"names. Received: {parameters!r}"
        )
    for name, value in (("subset_size", subset_size), ("projection_dim", projection_dim)):
        if value is not None and not is_int(value, 1):
            raise ValueError(f"Expected `{name}` to be a positive int or None. Received: {value!r}")
    if subset_size is not None and projection_dim is not None:
        raise ValueError(
            "Expected at most one of `subset_size` and `projection_dim`. Received: "
            f"subset_size={subset_size}, projection_dim={projection_dim}"
        )
    check_int("seed", seed)
    if not is_int(batch_size, 1):
        raise ValueError(f"Expected `batch_size` to be a positive int. Received: {batch_size!r}")
    for name, value in (("power_normalize", power_normalize), ("l2_normalize", l2_normalize)):
        if not isinstance(value, bool):
            raise ValueError(f"Expected `{name}` to be a bool. Received: {value!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ValueError(f"Expected `epsilon` to be a positive float. Received: {epsilon!r}")


def resolve_parameters(discriminator, parameters, name):
    """Indices into `discriminator.weights` of the weights to differentiate, in order.

    `"all"`: its trainable weights; a list of layer names: their trainable weights, in the
    order of the names.

    Raises:
        ValueError: no trainable weight; unknown layer names (listing the known ones); a
            named layer without trainable weights.
    """
    if parameters == "all":
        chosen = discriminator.trainable_weights
        if not chosen:
            raise ValueError(
                f"{name}: the discriminator {discriminator.name!r} has no trainable weights "
                "to differentiate (is it frozen, `trainable=False`?)"
            )
    else:
        known = [layer.name for layer in discriminator.layers]
        unknown = [p for p in parameters if p not in known]
        if unknown:
            raise ValueError(
                f"{name}: `parameters` names layers {unknown} that the discriminator "
                f"{discriminator.name!r} does not have. Its layers are: {known}"
            )
        chosen = []
        for layer_name in parameters:
            weights = discriminator.get_layer(layer_name).trainable_weights
            if not weights:
                raise ValueError(
                    f"{name}: layer {layer_name!r} of `parameters` has no trainable weights"
                )
            chosen += weights
    position = {id(w): i for i, w in enumerate(discriminator.weights)}
    return tuple(position[id(w)] for w in chosen)


def check_discriminator_output(discriminator, inputs_shape, name):
    """Raises ValueError unless the discriminator maps `inputs_shape` to `[B]` or `[B, 1]`."""
    spec = discriminator.compute_output_spec(
        tree.map_shape_structure(keras.KerasTensor, inputs_shape)
    )
    shape = tuple(spec.shape) if isinstance(spec, keras.KerasTensor) else None
    if shape is None or not (len(shape) == 1 or shape[1:] == (1,)):
        got = tree.map_structure(lambda s: tuple(s.shape), spec)
        raise ValueError(
            f"{name}: expected the discriminator to output one score per example, shape "
            f"[B] or [B, 1]. Received output shape(s): {got}"
        )


def check_statistics(statistics, arrays=False):
    """Validated statistics: float64 arrays (`arrays=True`) or a config dict of lists.

    Raises:
        ValueError: not a dict with the keys `mean_score` and `fisher_information`;
            not 1-D of one length; NaN/Inf; a negative Fisher information.
    """
    if not isinstance(statistics, dict) or sorted(statistics) != sorted(STATISTICS_KEYS):
        got = sorted(statistics) if isinstance(statistics, dict) else type(statistics).__name__
        raise ValueError(
            f"Expected `statistics` to be a dict with keys {list(STATISTICS_KEYS)}. Received: {got}"
        )
    mean, fisher = (np.asarray(statistics[k], dtype="float64") for k in STATISTICS_KEYS)
    if mean.ndim != 1 or mean.shape != fisher.shape:
        raise ValueError(
            "Expected `mean_score` and `fisher_information` to be 1-D of the same length. "
            f"Received shapes {mean.shape} and {fisher.shape}"
        )
    if not (np.isfinite(mean).all() and np.isfinite(fisher).all()) or (fisher < 0).any():
        raise ValueError(
            "Expected finite statistics and a non-negative Fisher information. Received "
            "NaN, Inf or negative values"
        )
    if arrays:
        return mean, fisher
    return {"mean_score": mean.tolist(), "fisher_information": fisher.tolist()}


# === Input shapes: a shape is a tuple of ints/None; inputs may be a dict/list of them ===


def _is_shape(x):
    return isinstance(x, (tuple, list)) and all(isinstance(d, (int, type(None))) for d in x)


def _map_shapes(fn, structure):
    if _is_shape(structure) or hasattr(structure, "as_list"):
        return fn(tuple(structure))
    if isinstance(structure, dict):
        return {k: _map_shapes(fn, v) for k, v in structure.items()}
    return [_map_shapes(fn, v) for v in structure]


def shapes_without_batch(shapes):
    """The same structure of shapes with the batch axis `None`."""
    return _map_shapes(lambda s: (None, *s[1:]) if s else s, shapes)


def shapes_of(inputs):
    """The shapes (batch axis `None`) of a tensor or structure of tensors."""
    return shapes_without_batch(tree.map_structure(lambda t: tuple(t.shape), inputs))


def declared_input_shapes(model):
    """The input shapes a functional model declares (batch `None`), or `None`."""
    try:
        inputs = model.input
    except (AttributeError, ValueError):
        return None
    return shapes_of(inputs)


def shapes_match(expected, got):
    """Same structure and rank, and equal sizes wherever both are known."""
    if _is_shape(expected) or _is_shape(got):
        return (
            _is_shape(expected)
            and _is_shape(got)
            and len(expected) == len(got)
            and all(e is None or g is None or e == g for e, g in zip(expected, got, strict=True))
        )
    if isinstance(expected, dict) or isinstance(got, dict):
        return (
            isinstance(expected, dict)
            and isinstance(got, dict)
            and sorted(expected) == sorted(got)
            and all(shapes_match(expected[k], got[k]) for k in expected)
        )
    return len(expected) == len(got) and all(
        shapes_match(e, g) for e, g in zip(expected, got, strict=True)
    )


def readable_shapes(shapes):
    """Shapes as plain tuples, for error messages."""
    return _map_shapes(tuple, shapes)
