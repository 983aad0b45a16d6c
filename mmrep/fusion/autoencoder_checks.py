"""Argument and input checks of `MultimodalAutoencoder`: clear errors naming what was expected.

The penalty and corruption options are checked beside their math
(`autoencoder_penalties.check_penalties`, `autoencoder_corruption.check_corruption`); this
module checks the structure: sizes, modality names, activations, fusion, tied weights,
reconstruction weights, and the tensors a call receives.
"""

import keras

from mmrep.arguments import is_positive_int
from mmrep.fusion.modality_inputs import check_floating, check_modality_names

FUSIONS = ("mean", "concat")


def positive_int(name, value):
    """Returns `value` as an int, or raises a `ValueError` naming `name`."""
    if not is_positive_int(value):
        raise ValueError(f"Expected `{name}` to hold positive ints. Received: {name}={value!r}")
    return int(value)


def check_structure(code_dim, modalities, encoder_units, decoder_units, fusion, tied_weights):
    """Checks the structural arguments; returns `(modalities, encoder_units, decoder_units)`.

    Raises:
        ValueError: naming the argument, what was expected and what was received.
    """
    positive_int("code_dim", code_dim)
    modalities = check_modality_names(modalities)
    encoder_units = tuple(positive_int("encoder_units", u) for u in encoder_units)
    decoder_units = tuple(positive_int("decoder_units", u) for u in decoder_units)
    if fusion not in FUSIONS:
        raise ValueError(f"Expected `fusion` in {FUSIONS}. Received: fusion={fusion!r}")
    if tied_weights and (encoder_units or decoder_units):
        raise ValueError(
            "Tied weights need single-layer encoders and decoders. Received: "
            f"encoder_units={encoder_units}, decoder_units={decoder_units}"
        )
    return modalities, encoder_units, decoder_units


def check_activations(**activations):
    """Checks that each activation is `None` or the name of a Keras activation.

    Raises:
        ValueError: naming the argument and the value received.
    """
    for name, value in activations.items():
        if value is not None and not isinstance(value, str):
            raise ValueError(f"Expected `{name}` to be a str or None. Received: {value!r}")
        try:
            keras.activations.get(value)
        except ValueError as error:
            raise ValueError(
                f"Expected `{name}` to name a Keras activation. Received: {value!r}"
            ) from error


def reconstruction_weights(weights, modalities, where):
    """Checks `reconstruction_weight` (a float or a dict over known modalities).

    Args:
        weights: float or dict `{modality: float}`.
        modalities: the known modality names, or `None` when not yet known.
        where: str, a prefix for the error message (the layer's name).

    Returns:
        A float or a dict of floats.

    Raises:
        ValueError: when the dict names modalities that are not in `modalities`.
    """
    if not isinstance(weights, dict):
        return float(weights)
    unknown = sorted(set(weights) - set(modalities or weights))
    if unknown:
        raise ValueError(
            f"{where}: `reconstruction_weight` names unknown modalities {unknown}; expected "
            f"a subset of {list(modalities)}"
        )
    return {m: float(w) for m, w in weights.items()}


def check_inputs(layer, order, dims, inputs):
    """Checks a call's `{modality: [B, D_m]}` tensors; returns them in `order`.

    Raises:
        TypeError: for a non-floating modality.
        ValueError: for a modality whose shape is not `[batch, D_m]`.
    """
    for m in order:
        x = inputs[m]
        check_floating(layer, m, x)
        if len(x.shape) != 2 or x.shape[-1] != dims[m]:
            raise ValueError(
                f"{layer.name}: expected modality {m!r} of shape [batch, {dims[m]}]. "
                f"Received shape: {tuple(x.shape)}"
            )
    return [inputs[m] for m in order]
