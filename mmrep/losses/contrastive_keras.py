"""Keras `Loss` classes for the contrastive losses, reading `CoordinatedEmbedding` outputs.

`y_pred` is the layer's output dict (two embeddings, and `"logit_scale"` for a learned
temperature); `y_true` is `None` or a presence mask.

How they compose with training. Keras' `compile(loss=...)` gives each output of a
dict-output model its own loss, so a loss over two outputs is not compiled but called
from `keras.Model.compute_loss`, which `fit`, `evaluate` and custom `train_step`s all use.
`mmrep.fusion.ContrastiveModel` does this ready made (and adds compiled and layer
losses, reads a presence mask given as targets, serialises, and embeds):

    embedder = keras.Model(inputs, CoordinatedEmbedding(64)(features, presence=presence))
    model = ContrastiveModel(embedder, ClipLoss())
    model.compile(optimizer="adam")
    model.fit(x, epochs=10)  # no targets

A model of one's own does the same by overriding `compute_loss` to return
`loss(None, y_pred)` (plus `super().compute_loss(...)` for compiled or layer losses).

The loss is deliberately not registered with `add_loss` from inside a layer: under
`MirroredStrategy` the replicas run in threads that take turns at every collective
(`merge_call`), and the cross-replica gather is one, so a layer's shared `losses` list
collects the other replicas' values too (measured: replica 1 trained on the sum of both
replicas' losses).

Replicas. Per-example values are weighted so that Keras' `"sum_over_batch_size"`
reduction (which divides by the local batch and by the number of replicas, see
`keras.losses.Loss`) yields this replica's share of the mean over the valid pairs of the
*global* batch, the value `mmrep.losses.clip_loss` & co. return. Keras sums the replicas'
gradients, so one step equals the single-device step on the global batch, and the
reported `loss` (Keras multiplies back by the replica count and averages over replicas)
is the single-device loss when the shards have equal size.
"""

import keras
from keras import ops

from mmrep.losses.contrastive import (
    clip_per_pair,
    max_margin_per_pair,
    nt_xent_per_pair,
    pair_terms,
)
from mmrep.losses.cross_replica import strategy_replicas

LOGIT_SCALE_KEY = "logit_scale"
_REDUCTIONS = ("sum_over_batch_size", "mean")


class _PairLoss(keras.losses.Loss):
    """Base: picks the two embeddings from `y_pred`, the presence, and reduces correctly.

    Each subclass defines `_per_pair(pairs, y_pred)`, its loss term per valid pair.
    """

    def __init__(
        self,
        modalities=None,
        cross_replica=True,
        name=None,
        reduction="sum_over_batch_size",
        **kwargs,
    ):
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"Expected `reduction` in {_REDUCTIONS}: the per-example values are "
                "weighted so that this reduction gives the mean over valid pairs of the "
                f"global batch. Received: reduction={reduction!r}"
            )
        super().__init__(name=name, reduction=reduction, **kwargs)
        if modalities is not None:
            modalities = list(modalities)
            if len(modalities) != 2 or len(set(modalities)) != 2:
                raise ValueError(
                    "Expected `modalities` to name two distinct embeddings. "
                    f"Received: modalities={modalities}"
                )
        self.modalities = modalities
        self.cross_replica = bool(cross_replica)

    def _pick(self, y_pred):
        if not isinstance(y_pred, dict):
            raise ValueError(
                f"{self.name}: expected `y_pred` to be a dict of embeddings (the output "
                f"of CoordinatedEmbedding). Received: {type(y_pred).__name__}"
            )
        names = self.modalities or sorted(k for k in y_pred if k != LOGIT_SCALE_KEY)
        missing = [m for m in names if m not in y_pred]
        if len(names) != 2 or missing:
            raise ValueError(
                f"{self.name}: expected the embeddings {self.modalities or 'of two modalities'}"
                f" in `y_pred` (pass `modalities=(a, b)` to choose). Received keys: "
                f"{sorted(y_pred)}"
            )
        return y_pred[names[0]], y_pred[names[1]]

    def _scale_from(self, y_pred, temperature):
        if temperature is not None:
            return 1.0 / temperature
        if LOGIT_SCALE_KEY not in y_pred:
            raise ValueError(
                f"{self.name}: `temperature=None` means the learned scale "
                f"`y_pred[{LOGIT_SCALE_KEY!r}]` (CoordinatedEmbedding's output), which is "
                f"missing. Received keys: {sorted(y_pred)}"
            )
        return y_pred[LOGIT_SCALE_KEY]

    def __call__(self, y_true, y_pred, sample_weight=None):
        # `keras.losses.Loss.__call__` converts `y_true` to a tensor, which `None` cannot
        # be; an empty structure passes through unchanged and means the same here.
        return super().__call__(() if y_true is None else y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        """Per-example values `[B]`; `y_true` is `None` or a presence mask.

        Args:
            y_true: `None`, or a presence mask `[B, 2]` (columns in `modalities` order)
                or `[B]` (per pair). With `None`, a pair is missing when either of
                its embeddings is exactly zero, which is what `CoordinatedEmbedding`
                outputs for a missing modality (present ones have unit norm).
            y_pred: dict with the two embeddings `[B, D]` (and `"logit_scale"` when
                the temperature is learned).

        Returns:
            `[B]` values whose `"sum_over_batch_size"` reduction is this replica's
            share of the mean over valid pairs of the global batch.
        """
        a, b = self._pick(y_pred)
        if y_true is None or (isinstance(y_true, tuple) and not y_true):
            presence = ops.stack(
                [ops.any(ops.not_equal(a, 0), axis=-1), ops.any(ops.not_equal(b, 0), axis=-1)],
                axis=-1,
            )
        else:
            presence = y_true
        pairs = pair_terms(a, b, presence, self.cross_replica)
        terms = self._per_pair(pairs, y_pred)
        batch = ops.cast(ops.shape(terms)[0], terms.dtype)
        return terms * ops.divide_no_nan(batch * strategy_replicas(), pairs.count)

    def get_config(self):
        config = super().get_config()
        config.update({"modalities": self.modalities, "cross_replica": self.cross_replica})
        return config


def _check_temperature(temperature):
    if temperature is not None and not (
        isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    ):
        raise ValueError(
            f"Expected `temperature` to be a positive float or None. Received: {temperature!r}"
        )
    if temperature is not None and temperature <= 0:
        raise ValueError(f"Expected `temperature` > 0. Received: temperature={temperature}")
    return None if temperature is None else float(temperature)


@keras.saving.register_keras_serializable(package="mmrep")
class ClipLoss(_PairLoss):
    """Symmetric InfoNCE / CLIP loss over a dict of two embeddings; see `clip_loss`.

    Args:
        temperature: float or `None`. A fixed temperature, or `None` for the learned
            `y_pred["logit_scale"]` of `CoordinatedEmbedding`. Defaults to `None`.
        modalities: two str or `None`. The two embeddings of `y_pred`; `None` takes
            the two keys other than `"logit_scale"`, sorted. Defaults to `None`.
        cross_replica: bool. Gather negatives from every replica. Defaults to `True`.
        name: str. The loss name. Defaults to `"clip_loss"`.
        reduction: `"sum_over_batch_size"` (or its alias `"mean"`); others are refused.
        **kwargs: `keras.losses.Loss` arguments (`dtype`).

    Example:

    >>> loss = ClipLoss(temperature=0.07)
    >>> value = loss(None, {"image": np.eye(3, 4), "text": np.eye(3, 4)})

    Reference:
        Radford et al., "Learning Transferable Visual Models From Natural Language
        Supervision", ICML 2021.
    """

    def __init__(
        self, temperature=None, modalities=None, cross_replica=True, name="clip_loss", **kwargs
    ):
        super().__init__(modalities=modalities, cross_replica=cross_replica, name=name, **kwargs)
        self.temperature = _check_temperature(temperature)

    def _per_pair(self, pairs, y_pred):
        return clip_per_pair(pairs, self._scale_from(y_pred, self.temperature))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="mmrep")
class NTXentLoss(_PairLoss):
    """NT-Xent loss (SimCLR) over a dict of two views; see `nt_xent_loss`.

    Args:
        temperature: float or `None`. The temperature, or `None` for the learned
            `y_pred["logit_scale"]` (its inverse). Defaults to `0.5`.
        modalities: two str or `None`, as for `ClipLoss`. Defaults to `None`.
        cross_replica: bool. Gather negatives from every replica. Defaults to `True`.
        name: str. Defaults to `"nt_xent_loss"`.
        reduction: `"sum_over_batch_size"` (or `"mean"`).
        **kwargs: `keras.losses.Loss` arguments (`dtype`).

    Reference:
        Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive
        Learning of Visual Representations", ICML 2020.
    """

    def __init__(
        self, temperature=0.5, modalities=None, cross_replica=True, name="nt_xent_loss", **kwargs
    ):
        super().__init__(modalities=modalities, cross_replica=cross_replica, name=name, **kwargs)
        self.temperature = _check_temperature(temperature)

    def _per_pair(self, pairs, y_pred):
        return nt_xent_per_pair(pairs, self._scale_from(y_pred, self.temperature))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="mmrep")
class MaxMarginRankingLoss(_PairLoss):
    """VSE++ max-margin ranking loss over a dict of two embeddings.

    See `max_margin_ranking_loss`; `"logit_scale"` in `y_pred` is not used.

    Args:
        margin: float. The margin. Defaults to `0.2`.
        max_violation: bool. Hardest negative (VSE++) or sum of hinges.
            Defaults to `True`.
        modalities: two str or `None`, as for `ClipLoss`. Defaults to `None`.
        cross_replica: bool. Gather negatives from every replica. Defaults to `True`.
        name: str. Defaults to `"max_margin_ranking_loss"`.
        reduction: `"sum_over_batch_size"` (or `"mean"`).
        **kwargs: `keras.losses.Loss` arguments (`dtype`).

    Reference:
        Faghri, Fleet, Kiros & Fidler, "VSE++: Improving Visual-Semantic Embeddings
        with Hard Negatives", BMVC 2018.
    """

    def __init__(
        self,
        margin=0.2,
        max_violation=True,
        modalities=None,
        cross_replica=True,
        name="max_margin_ranking_loss",
        **kwargs,
    ):
        super().__init__(modalities=modalities, cross_replica=cross_replica, name=name, **kwargs)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
            raise ValueError(f"Expected `margin` to be a float >= 0. Received: margin={margin!r}")
        self.margin = float(margin)
        self.max_violation = bool(max_violation)

    def _per_pair(self, pairs, y_pred):
        return max_margin_per_pair(pairs, self.margin, self.max_violation)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "max_violation": self.max_violation})
        return config
