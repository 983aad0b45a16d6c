"""JobTrainer: the main job's training model, the classifier loss plus the fusion's own.

The layers' losses (the autoencoder's reconstruction, the VAE's KL) come in through
`keras.Model.compute_loss`; coordinated embeddings also get a CLIP loss for every pair of
modalities, computed in `compute_loss` (not with `add_loss`: under `tf.distribute` a
cross-replica loss added from a layer would collect the other replicas' values, see
`mmrep.losses.contrastive_keras`).
"""

import copy

import keras
from keras import ops, tree

from mmrep.losses import ClipLoss


@keras.saving.register_keras_serializable(package="mmrep")
class JobTrainer(keras.Model):
    """Trains the main job's network: compiled losses, layer losses and pair losses.

    Compile it with the loss and metrics of the `"probabilities"` output alone (e.g.
    `loss="sparse_categorical_crossentropy", metrics=["accuracy"]`) and fit it on
    `(inputs, labels)`; a network without `"probabilities"` (retrieval alone) is
    compiled without a loss and fit on inputs alone.

    Args:
        network: functional `keras.Model` over token ids whose output dict holds
            `"probabilities"` (unless it trains on the pair losses alone) and, with `contrastive_pairs`, `"coordinated_<modality>"`
            embeddings and `"logit_scale"`.
        contrastive_pairs: sequence of `(modality, modality)`. A `ClipLoss` for each,
            averaged, is added to the loss (pairs with a missing side are left out by
            the loss). Defaults to `()`.
        contrastive_weight: float. Weight of that average. Defaults to `1.0`.
        **kwargs: `keras.Model` arguments, such as `name`.

    Call arguments:
        inputs: the network's input dict.
        training: bool.

    Returns:
        The network's output dict, floating values in float32.

    Reference:
        Radford et al., "Learning Transferable Visual Models From Natural Language
        Supervision", ICML 2021 (the pair loss).
    """

    def __init__(self, network, contrastive_pairs=(), contrastive_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(network, keras.Model):
            raise ValueError(
                "Expected `network` to be a keras.Model with a dict output holding "
                f"'probabilities'. Received: {type(network).__name__}"
            )
        self.network = network
        self.contrastive_pairs = [tuple(p) for p in contrastive_pairs]
        self.contrastive_weight = float(contrastive_weight)
        self.pair_losses = [
            ClipLoss(modalities=(f"coordinated_{a}", f"coordinated_{b}"), name=f"clip_{a}_{b}")
            for a, b in self.contrastive_pairs
        ]
        self.built = network.built

    def call(self, inputs, training=None):
        outputs = self.network(inputs, training=training)
        # float32 outputs: the losses read them, and `predict` gives plain float32 arrays.
        return tree.map_structure(
            lambda y: ops.cast(y, "float32") if keras.backend.is_float_dtype(y.dtype) else y,
            outputs,
        )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # The compiled loss scores the probabilities only; the other outputs have none.
        # A network without a classifier (retrieval) has the layers' losses alone.
        if "probabilities" in y_pred:
            loss = super().compute_loss(
                x=x,
                y=y,
                y_pred=y_pred["probabilities"],
                sample_weight=sample_weight,
                training=training,
            )
        else:
            layer_losses = [ops.cast(value, "float32") for value in self.losses]
            loss = ops.sum(ops.stack(layer_losses)) if layer_losses else ops.zeros(())
        if self.pair_losses:
            pairs = sum(pair_loss(None, y_pred) for pair_loss in self.pair_losses)
            loss = loss + self.contrastive_weight * pairs / len(self.pair_losses)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if "probabilities" not in y_pred:
            return super().compute_metrics(x, None, None, sample_weight)
        return super().compute_metrics(x, y, y_pred["probabilities"], sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "network": keras.saving.serialize_keras_object(self.network),
                "contrastive_pairs": [list(p) for p in self.contrastive_pairs],
                "contrastive_weight": self.contrastive_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        # Deserialising a functional model consumes its config; the caller keeps hers.
        config["network"] = keras.saving.deserialize_keras_object(
            copy.deepcopy(config["network"]), custom_objects=custom_objects
        )
        return cls(**config)
