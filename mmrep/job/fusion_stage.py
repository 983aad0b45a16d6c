"""The fusion and head stages of the main job's graph: their layers and their wiring.

Layer names are fixed, so that a reloaded serving model is rewired by name (see
`mmrep.job.model.layers_of`).
"""

import keras

from mmrep.job.graph_layers import PresentMean, SelectColumns

CONCAT_PROJECTION = 32
BILINEAR_PROJECTION = 32
BILINEAR_SKETCH = 64
VAE_LATENT = 32
VAE_BETA = 0.01
FISHER_COMPONENTS = 4
FISHER_DESCRIPTOR = 16


def pairs_of(modalities):
    """Every unordered pair of modalities, in order: `[(a, b), ...]`."""
    return [(a, b) for i, a in enumerate(modalities) for b in modalities[i + 1 :]]


# The layers that identify each fusion in a model.
FUSION_LAYERS = {
    "concat": ("fusion", "joint"),
    "bilinear": ("bilinear_concat", "joint"),
    "autoencoder": ("fusion",),
    "coordinated": ("fusion", "present_mean"),
}
_FUSION_CLASSES = {
    "concat": "ConcatFusion",
    "autoencoder": "MultimodalAutoencoder",
    "coordinated": "CoordinatedEmbedding",
}


def fusion_of(layers):
    """The fusion name of a `{name: layer}` dict, or `None` if it has none."""
    for fusion, names in FUSION_LAYERS.items():
        if not all(n in layers for n in names):
            continue
        expected = _FUSION_CLASSES.get(fusion)
        if expected is None or type(layers["fusion"]).__name__ == expected:
            return fusion
    return None


def make_fusion_layers(fusion, modalities, vector_dim, dim, seed):
    """The layers of one fusion, keyed by their names.

    Args:
        fusion: str. One of `mmrep.job.FUSIONS`.
        modalities: list of str. The modalities, in presence order.
        vector_dim: int. Width of the encoders' vectors.
        dim: int. Width of the fused vector.
        seed: int. Seed of the layers' random draws (sketch hashes, dropout).

    Returns:
        dict `{name: layer}`.
    """
    from mmrep.fusion import (
        BilinearFusion,
        ConcatFusion,
        CoordinatedEmbedding,
        MultimodalAutoencoder,
    )

    modalities = list(modalities)
    if fusion == "concat":
        return {
            "fusion": ConcatFusion(
                modalities=modalities,
                projection_dim=CONCAT_PROJECTION,
                normalization="layer",
                name="fusion",
            ),
            "joint": keras.layers.Dense(dim, activation="relu", name="joint"),
        }
    if fusion == "autoencoder":
        return {
            "fusion": MultimodalAutoencoder(
                dim,
                modalities=modalities,
                encoder_units=(vector_dim,),
                decoder_units=(vector_dim,),
                return_reconstructions=False,
                seed=seed,
                name="fusion",
            )
        }
    if fusion == "coordinated":
        return {
            "fusion": CoordinatedEmbedding(dim, modalities=modalities, name="fusion"),
            "present_mean": PresentMean(modalities, name="present_mean"),
        }
    layers = {"bilinear_concat": keras.layers.Concatenate(name="bilinear_concat")}
    for m in modalities:
        layers[f"{m}_bilinear_projection"] = keras.layers.Dense(
            BILINEAR_PROJECTION, name=f"{m}_bilinear_projection"
        )
        layers[f"{m}_bilinear_norm"] = keras.layers.LayerNormalization(name=f"{m}_bilinear_norm")
    for k, (a, b) in enumerate(pairs_of(modalities)):
        columns = [modalities.index(a), modalities.index(b)]
        layers[f"{a}_{b}_presence"] = SelectColumns(columns, name=f"{a}_{b}_presence")
        layers[f"bilinear_{a}_{b}"] = BilinearFusion(
            mode="compact",
            output_dim=BILINEAR_SKETCH,
            modalities=[a, b],
            missing="learned",
            seed=seed + k,
            name=f"bilinear_{a}_{b}",
        )
    layers["joint"] = keras.layers.Dense(dim, activation="relu", name="joint")
    return layers


def head_layers(head, modalities, dim, seed):
    """The layers of a head (none for `None`), keyed by their names.

    Args:
        head: str or `None`. One of `mmrep.job.HEADS`.
        modalities: list of str. The modalities, in presence order.
        dim: int. Width of the fused vector.
        seed: int. Seed of the VAE's sampling noise.

    Returns:
        dict `{name: layer}`.
    """
    if head is None:
        return {}
    if head == "vae":
        from mmrep.heads import VAEHead

        return {
            "vae": VAEHead(VAE_LATENT, beta=VAE_BETA, hidden_units=(dim,), seed=seed, name="vae")
        }
    from mmrep.heads import FisherVector

    layers = {
        f"{m}_descriptor": keras.layers.Dense(FISHER_DESCRIPTOR, name=f"{m}_descriptor")
        for m in modalities
    }
    layers["descriptor_concat"] = keras.layers.Concatenate(name="descriptor_concat")
    layers["descriptor_set"] = keras.layers.Reshape(
        (len(modalities), FISHER_DESCRIPTOR), name="descriptor_set"
    )
    layers["fisher"] = FisherVector(FISHER_COMPONENTS, trainable_gmm=True, name="fisher")
    layers["fisher_concat"] = keras.layers.Concatenate(name="fisher_concat")
    return layers


def wire_fusion(layers, fusion, modalities, vectors, presence):
    """Fuses the per-modality vectors.

    Args:
        layers: dict `{name: layer}`.
        fusion: str. One of `mmrep.job.FUSIONS`.
        modalities: list of str. The modalities, in presence order.
        vectors: dict `{modality: [B, vector_dim]}`.
        presence: `[B, M]` in that order.

    Returns:
        `(fused, extra)`: the fused vector `[B, dim]` and a dict, holding
        `"coordinated"` (the per-modality embeddings and `"logit_scale"`) for that fusion.
    """
    if fusion == "concat":
        return layers["joint"](layers["fusion"](vectors, presence=presence)), {}
    if fusion == "autoencoder":
        return layers["fusion"](vectors, presence=presence), {}
    if fusion == "coordinated":
        embeddings = layers["fusion"](vectors, presence=presence)
        fused = layers["present_mean"]({m: embeddings[m] for m in modalities}, presence=presence)
        return fused, {"coordinated": embeddings}
    projected = {
        m: layers[f"{m}_bilinear_norm"](layers[f"{m}_bilinear_projection"](vectors[m]))
        for m in modalities
    }
    pooled = [
        layers[f"bilinear_{a}_{b}"](
            {a: projected[a], b: projected[b]}, presence=layers[f"{a}_{b}_presence"](presence)
        )
        for a, b in pairs_of(modalities)
    ]
    joined = pooled[0] if len(pooled) == 1 else layers["bilinear_concat"](pooled)
    return layers["joint"](joined), {}


def wire_head(layers, head, modalities, fused, vectors, presence):
    """Applies the head (if any) to the fused vector.

    Args:
        layers: dict `{name: layer}`.
        head: str or `None`. One of `mmrep.job.HEADS`.
        fused: the fused vector `[B, dim]`.
        vectors: dict `{modality: [B, vector_dim]}` (the Fisher vector's descriptors).
        presence: `[B, M]` in `modalities` order (the Fisher vector's mask).

    Returns:
        `(embedding, features)`: the embedding, and what the classifier reads (the same
        tensor, except the VAE's sampled latent in training).
    """
    if head is None:
        return fused, fused
    if head == "vae":
        posterior = layers["vae"](fused)
        return posterior["z_mean"], posterior["z"]
    descriptors = [layers[f"{m}_descriptor"](vectors[m]) for m in modalities]
    stacked = layers["descriptor_set"](layers["descriptor_concat"](descriptors))
    fisher = layers["fisher"](stacked, mask=presence)
    joined = layers["fisher_concat"]([fused, fisher])
    return joined, joined
