"""A callback that logs the Fisher similarity between real data and generated samples.

Zhai et al. (NeurIPS 2019) monitor EBM-GAN training, and detect
overfitting, with the Fisher similarity between held-out data and the generator's
samples: a discriminator that memorises its training set scores held-out examples unlike
the generated ones. At the end of every `every`-th epoch this callback re-estimates the
AFV statistics from fresh samples, encodes the validation data (and optionally a
reference set, such as a training subset) and the samples, and writes the similarity
and distance into the epoch logs (so `History` and a later `TensorBoard` callback see
them) and, with `log_dir`, as `tf.summary` scalars.
"""

import keras
import tensorflow as tf

from mmrep.heads.gan.adversarial_fisher_vector import AdversarialFisherVector
from mmrep.heads.gan.fisher_set_distance import fisher_distance, fisher_similarity
from mmrep.utils.arguments import check_int

_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
)


class FisherSimilarityCallback(keras.callbacks.Callback):
    """Logs `{prefix}_similarity_val` / `{prefix}_distance_val` (and `_train`) each epoch.

    At the end of every `every`-th epoch: `afv.adapt(sampler(...))` on `num_samples`
    fresh samples, then the AFVs of those samples, of `validation_data` and of
    `reference_data` (if given), and `fisher_similarity` / `fisher_distance` of each real
    set against the samples. The AFV layer must share the discriminator being trained
    (the same model object), so that it sees its current weights. Epochs in between
    log nothing, so `History` lists for these keys are shorter when `every > 1`.

    Args:
        afv: `AdversarialFisherVector` over the discriminator being trained.
        validation_data: held-out real examples: an array (or structure), a
            `tf.data.Dataset` of batches, or anything `afv.transform` takes.
        sampler: callable `n -> n generated samples` (such as an EBM-GAN's `sample`).
        num_samples: int. Samples drawn per evaluation. Defaults to `256`.
        reference_data: real examples to compare too (e.g. a training subset), logged
            with the suffix `_train`, or `None`. Defaults to `None`.
        every: int. Evaluate every `every` epochs. Defaults to `1`.
        log_dir: str or `None`. Also write the values as TensorBoard scalars there
            (step = epoch; `tf.summary.write` with the scalars plugin's metadata, so the
            tensorboard package is not needed to write them). Defaults to `None`.
        prefix: str. Prefix of the log keys. Defaults to `"fisher"`.
        scale: positive float. The similarity's scale (see `fisher_similarity`).
            Defaults to `10.0`.

    Raises:
        ValueError: `afv` not an `AdversarialFisherVector`; `sampler` not callable;
            bad `num_samples`, `every` or `prefix`.

    Example:

    >>> callback = FisherSimilarityCallback(AdversarialFisherVector(gan.discriminator),
    ...                                     x_val, gan.sample, log_dir="logs/fisher")  # doctest: +SKIP
    >>> history = gan.fit(x_train, epochs=10, callbacks=[callback])  # doctest: +SKIP
    >>> history.history["fisher_similarity_val"]  # doctest: +SKIP

    Reference:
        Zhai, Talbott, Guestrin & Susskind, "Adversarial Fisher Vectors for Unsupervised
        Representation Learning", NeurIPS 2019; apple/ml-afv `utils.fisher_sim`.
    """

    def __init__(
        self,
        afv,
        validation_data,
        sampler,
        num_samples=256,
        reference_data=None,
        every=1,
        log_dir=None,
        prefix="fisher",
        scale=10.0,
    ):
        super().__init__()
        if not isinstance(afv, AdversarialFisherVector):
            raise ValueError(
                f"Expected `afv` to be an AdversarialFisherVector. Received: {type(afv).__name__}"
            )
        if not callable(sampler):
            raise ValueError(
                "Expected `sampler` to be a callable n -> samples. "
                f"Received: {type(sampler).__name__}"
            )
        num_samples = check_int("num_samples", num_samples, minimum=2)
        every = check_int("every", every, minimum=1)
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"Expected `prefix` to be a non-empty str. Received: {prefix!r}")
        fisher_similarity([[0.0]], [[0.0]], scale=scale)  # validates `scale`
        self.afv = afv
        self.validation_data = validation_data
        self.sampler = sampler
        self.num_samples = num_samples
        self.reference_data = reference_data
        self.every = every
        self.log_dir = log_dir
        self.prefix = prefix
        self.scale = scale
        self._writer = None

    def evaluate(self):
        """Re-adapts `afv` on fresh samples; returns `{log key: value}` (Python floats)."""
        samples = self.sampler(self.num_samples)
        self.afv.adapt(samples, num_samples=self.num_samples, verbose=0)
        generated = self.afv.transform(samples)
        sets = {"val": self.validation_data}
        if self.reference_data is not None:
            sets["train"] = self.reference_data
        results = {}
        for suffix, data in sets.items():
            real = self.afv.transform(data)
            results[f"{self.prefix}_similarity_{suffix}"] = fisher_similarity(
                real, generated, scale=self.scale
            )
            results[f"{self.prefix}_distance_{suffix}"] = fisher_distance(real, generated)
        return results

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        results = self.evaluate()
        if logs is not None:
            logs.update(results)
        if self.log_dir is not None:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                for key, value in results.items():
                    # What `tf.summary.scalar` writes (a float32 tensor tagged for the
                    # scalars plugin), without needing the tensorboard package installed.
                    tf.summary.write(key, tf.constant(value, tf.float32), step=epoch,
                                     metadata=_SCALAR_METADATA)  # fmt: skip
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
