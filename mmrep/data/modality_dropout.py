"""Modality dropout: a random presence mask per example, so one model learns every subset.

Training with some modalities randomly marked absent (never all of them) teaches a fusion
model to work from any subset of its inputs; the presence mask, not the input values,
says which are absent, so the layers never read a dropped modality's values. This is the
modality dropout of Neverova et al., "ModDrop: Adaptive Multi-Modal Gesture Recognition"
(IEEE TPAMI 2016), applied through mmrep's presence mask.
"""

from mmrep.utils.modalities import ordered_modalities


def with_modality_dropout(dataset, modalities, seed, rate=0.5, rerandomize=True):
    """Adds a random presence mask `"presence"` (float32 `[M]`) to each example.

    Each modality is dropped with probability `rate`; an example that would lose all of
    them keeps one (the example's seed modulo `M`), since an example with no modality
    teaches nothing. An example that already has a `"presence"` (a manifest row with
    empty cells, see `from_manifest`) keeps its missing modalities missing, and when the
    draws would drop every modality it has, keeps one of those (the example's seed modulo
    their number, so a complete example is treated as one without a presence).

    Args:
        dataset: `tf.data.Dataset` of example dicts.
        modalities: list of str. The modalities to drop; the mask's columns follow mmrep's
            modality order (`mmrep.ordered_modalities(modalities)`), as every fusion
            layer reads them.
        seed: int. Seed of the draws.
        rate: float in [0, 1). Drop probability. Defaults to `0.5`.
        rerandomize: bool. Draw new masks at every pass over the data (training), or
            the same ones (a fixed validation set). Defaults to `True`.

    Returns:
        The dataset with `"presence"` added.

    Raises:
        ValueError: for a rate outside [0, 1) or no modalities.

    Example:

    >>> data = tf.data.Dataset.from_tensor_slices({"label": np.arange(3)})
    >>> masks = with_modality_dropout(data, ["text", "image"], seed=0)
    >>> [tuple(e["presence"].shape) for e in masks]
    [(2,), (2,), (2,)]
    """
    import tensorflow as tf

    modalities = ordered_modalities(modalities)
    if not modalities:
        raise ValueError("Expected at least one modality to drop. Received: modalities=[]")
    if not 0 <= rate < 1:
        raise ValueError(f"Expected `rate` in [0, 1). Received: rate={rate}")
    count = len(modalities)

    def drop(example, example_seed):
        keep = tf.random.stateless_uniform((count,), tf.stack([example_seed, 0])) >= rate
        if "presence" in example:
            # A row's own missing modalities stay missing; one it has is always kept.
            has = tf.ensure_shape(example["presence"], (count,)) > 0
            keep = keep & has
            # The (seed mod n)-th of its n modalities: with all of them, the rule below.
            order = tf.cumsum(tf.cast(has, tf.int64)) - 1
            chosen = example_seed % tf.maximum(tf.reduce_sum(tf.cast(has, tf.int64)), 1)
            fallback = has & tf.equal(order, chosen)
        else:
            fallback = tf.one_hot(example_seed % count, count) > 0
        keep = tf.where(tf.reduce_any(keep), keep, fallback)
        return {**example, "presence": tf.cast(keep, tf.float32)}

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=rerandomize)
    return tf.data.Dataset.zip(dataset, seeds).map(drop, num_parallel_calls=tf.data.AUTOTUNE)
