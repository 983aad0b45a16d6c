"""A ready-made model that trains coordinated embeddings with a contrastive pair loss."""

import copy

import keras
from keras import ops, tree

from mmrep.losses.contrastive_keras import LOGIT_SCALE_KEY, ClipLoss


@keras.saving.register_keras_serializable(package="mmrep")
class ContrastiveModel(keras.Model):
    """Trains a model whose output is `CoordinatedEmbedding`'s dict with a pair loss.

    The dual-encoder training of CLIP without a `keras.Model` subclass of one's own: wrap
    any model (usually functional) that maps the inputs to the output dict of
    `mmrep.fusion.CoordinatedEmbedding` (the embeddings of two modalities and
    `"logit_scale"`), and `fit` trains it on the contrastive loss, with no targets. The
    loss is an `mmrep.losses` pair loss: `ClipLoss()` (symmetric InfoNCE with the learned
    temperature) by default, or `NTXentLoss` / `MaxMarginRankingLoss`. Under
    `tf.distribute` the negatives are gathered from every replica (the loss's
    `cross_replica=True`), so a step on `R` replicas equals the single-device step on
    the global batch.

    Calling the model calls the embedding model and returns its output dict in float32
    (the embeddings are normalised in float32 inside `CoordinatedEmbedding`; float32
    outputs keep `predict` results plain numpy arrays under mixed precision).

    The loss (`compute_loss`, used by `fit` and `evaluate`) is the pair loss on the
    outputs, plus whatever `keras.Model.compute_loss` adds: losses given to `compile`
    (for other outputs of the embedding model) and the losses of its layers
    (regularisers, `add_loss`). Missing modalities: an example whose modality is absent
    in the `presence` input of `CoordinatedEmbedding` gets a zero embedding, which the
    pair loss leaves out (as an anchor and as a negative). Alternatively, when no loss is
    compiled, the targets `y` of `fit(x, y)` are read as the presence mask of the pair:
    `[B, 2]` (one column per embedding, in the loss's `modalities` order, by default the
    sorted names) or `[B]` (per pair), numeric 0/1 (`MirroredStrategy` cannot split bool
    inputs). `sample_weight` scales each pair's term; the mean is still over the valid
    pairs.

    Embeddings of one modality: `embed(x, modality)`. The projection heads of
    `CoordinatedEmbedding` are independent, so when the other modality is not at hand,
    give its inputs as zeros and mark it absent in `presence`: the embeddings of the
    given modality are the same as with the real inputs.

    Args:
        embedding_model: a `keras.layers.Layer` (usually a functional `keras.Model`)
            whose output is a dict with two embeddings `[B, D]` and, for a learned
            temperature, `"logit_scale"` `[B, 1]`, such as `CoordinatedEmbedding`'s.
            With more outputs, name the two embeddings in the loss's `modalities`.
        contrastive_loss: a `keras.losses.Loss` over that dict: `ClipLoss`,
            `NTXentLoss`, `MaxMarginRankingLoss` of `mmrep.losses`, or `None` for
            `ClipLoss()`. Pass it here, not to `compile` (whose losses are per output).
            Defaults to `None`.
        **kwargs: `keras.Model` keyword arguments, such as `name`.

    Call arguments:
        inputs: the embedding model's inputs (e.g. a dict of arrays).
        training: bool. Passed to the embedding model.

    Returns:
        The embedding model's output dict, floating values in float32.

    Raises:
        ValueError: if `embedding_model` is not a Keras layer, `contrastive_loss` not a
            Keras loss, or (for a model with known outputs) the output is not a dict
            holding the two embeddings the loss reads.

    Example:

    >>> from mmrep.fusion import CoordinatedEmbedding
    >>> inputs = {"image": keras.Input((8,), name="image"), "text": keras.Input((5,), name="text")}
    >>> embeddings = CoordinatedEmbedding(4)(inputs)
    >>> model = ContrastiveModel(keras.Model(inputs, embeddings))
    >>> model.compile(optimizer="adam")
    >>> data = {"image": np.ones((8, 8), "float32"), "text": np.ones((8, 5), "float32")}
    >>> history = model.fit(data, batch_size=4, epochs=1, verbose=0)
    >>> model.embed(data, "image").shape
    (8, 4)

    Reference:
        Radford et al., "Learning Transferable Visual Models From Natural Language
        Supervision", ICML 2021 (the dual-encoder contrastive training; negatives from
        the whole global batch across devices).
    """

    def __init__(self, embedding_model, contrastive_loss=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(embedding_model, keras.layers.Layer):
            raise ValueError(
                "Expected `embedding_model` to be a Keras layer or model whose output is "
                "CoordinatedEmbedding's dict. Received: "
                f"{type(embedding_model).__name__}"
            )
        if contrastive_loss is None:
            contrastive_loss = ClipLoss()
        if not isinstance(contrastive_loss, keras.losses.Loss):
            raise ValueError(
                "Expected `contrastive_loss` to be a `keras.losses.Loss` such as "
                "`mmrep.losses.ClipLoss()`, or None. Received: "
                f"{type(contrastive_loss).__name__}"
            )
        self.embedding_model = embedding_model
        self.contrastive_loss = contrastive_loss
        self._check_outputs()
        # A built embedding model (a functional one always is) holds every weight this model
        # has, so the model is built too: callbacks that restore weights at the start of
        # `fit` (BackupAndRestore) find them before the first batch.
        self.built = embedding_model.built

    def _output_keys(self):
        """The sorted keys of the embedding model's output dict, or `None` if unknown."""
        output = None
        for attribute in ("output", "outputs"):  # functional models; Sequential's list
            try:
                output = getattr(self.embedding_model, attribute)
                break
            except (AttributeError, ValueError):  # never called symbolically
                continue
        if output is None:
            return None
        if not isinstance(output, dict):
            raise ValueError(
                f"{self.name}: expected the embedding model's output to be a dict of "
                "embeddings (CoordinatedEmbedding's). Received: "
                f"{type(output).__name__}"
            )
        return sorted(output)

    def _check_outputs(self):
        """Checks that the outputs (when known) hold the two embeddings the loss reads."""
        keys = self._output_keys()
        if keys is None:
            return
        chosen = getattr(self.contrastive_loss, "modalities", None)
        names = list(chosen or [k for k in keys if k != LOGIT_SCALE_KEY])
        if len(names) != 2 or any(n not in keys for n in names):
            raise ValueError(
                f"{self.name}: the loss reads two embeddings "
                f"({chosen or 'every output but ' + repr(LOGIT_SCALE_KEY)}), which the "
                f"embedding model's outputs {keys} do not give; pass "
                "`modalities=(a, b)` to the loss to choose two."
            )

    def call(self, inputs, training=None):
        outputs = self.embedding_model(inputs, training=training)
        return tree.map_structure(
            lambda x: ops.cast(x, "float32") if keras.backend.is_float_dtype(x.dtype) else x,
            outputs,
        )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The pair loss on `y_pred`, plus compiled losses and the layers' losses.

        Args:
            x: the inputs (passed on to `keras.Model.compute_loss`).
            y: the presence mask of the pair (`[B, 2]` or `[B]`) or `None` when no loss
                is compiled; else the targets of the compiled losses.
            y_pred: the model's output dict.
            sample_weight: optional `[B]` weights of the pairs' terms.
            training: bool. Whether the loss is for training.

        Returns:
            A float32 scalar: this replica's share of the global-batch loss (Keras sums
            the replicas' gradients).
        """
        compiled = self.loss is not None
        loss = self.contrastive_loss(None if compiled else y, y_pred, sample_weight)
        if compiled or self.losses:
            extra = super().compute_loss(x, y, y_pred, sample_weight, training=training)
            loss = loss + ops.cast(extra, loss.dtype)
        return loss

    def embed(self, x, modality=None, batch_size=None, verbose=0):
        """Embeddings of one modality (or all), computed in batches with `predict`.

        Args:
            x: the model's inputs, as for `predict` (arrays or a `tf.data.Dataset`). To
                embed one modality alone, give the other's inputs as zeros and mark it
                absent in the `presence` input (see the class docstring).
            modality: str or `None`. The output to return (any but `"logit_scale"`);
                `None` returns all of them as a dict. Defaults to `None`.
            batch_size: int or `None`. As for `predict`. Defaults to `None` (32).
            verbose: As for `predict`. Defaults to `0`.

        Returns:
            A float32 numpy array `[N, D]` (unit-norm rows; zero rows where the
            modality is absent), or a dict of them for `modality=None`.

        Raises:
            ValueError: if `modality` is not one of the model's embeddings.
        """

        def check(keys):
            embeddings = [k for k in keys if k != LOGIT_SCALE_KEY]
            if modality is not None and modality not in embeddings:
                raise ValueError(
                    f"{self.name}: expected `modality` to be one of {embeddings}. "
                    f"Received: modality={modality!r}"
                )
            return embeddings

        keys = self._output_keys()
        if keys is not None:
            check(keys)  # before the work
        outputs = self.predict(x, batch_size=batch_size, verbose=verbose)
        embeddings = check(sorted(outputs))
        if modality is not None:
            return outputs[modality]
        return {k: outputs[k] for k in embeddings}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embedding_model": keras.saving.serialize_keras_object(self.embedding_model),
                "contrastive_loss": keras.saving.serialize_keras_object(self.contrastive_loss),
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("embedding_model", "contrastive_loss"):
            # Deserialising a functional model consumes its config; the caller keeps hers.
            config[key] = keras.saving.deserialize_keras_object(
                copy.deepcopy(config[key]), custom_objects=custom_objects
            )
        return cls(**config)
