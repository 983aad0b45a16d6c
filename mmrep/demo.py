"""The built-in demo: fusion with missing modalities on synthetic three-modality data.

Stands in for the main job until the embedded data set lands: it needs no files and no
network, and shows the core idea of mmrep's fusion layers in a minute on a CPU. Each
example has an "image", "text" and "audio" feature vector drawn around a class prototype
with heavy noise, so that every modality alone is a weak classifier and together they are
a strong one. The model is trained with random modality dropout and evaluated with every
modality present and with each one missing (its input filled with NaN, which the presence
mask keeps out of the computation).
"""

import numpy as np

MODALITIES = {"image": 32, "text": 24, "audio": 16}
NUM_CLASSES = 10
_NOISE = 2.2


def synthetic_split(num_examples, seed):
    """Features `{modality: [N, D]}` and labels `[N]`; prototypes are shared by all splits."""
    prototypes = np.random.default_rng(1234)
    centres = {m: prototypes.standard_normal((NUM_CLASSES, d)) for m, d in MODALITIES.items()}
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, num_examples)
    features = {
        m: (centres[m][labels] + _NOISE * rng.standard_normal((num_examples, d))).astype("float32")
        for m, d in MODALITIES.items()
    }
    return features, labels


def random_presence(num_examples, drop_rate, rng):
    """Drops each modality with `drop_rate`, keeping at least one per example."""
    presence = rng.random((num_examples, len(MODALITIES))) >= drop_rate
    empty = ~presence.any(axis=1)
    presence[empty, rng.integers(0, len(MODALITIES), empty.sum())] = True
    return presence.astype("float32")


def build_model(seed):
    import keras

    from mmrep.fusion import ConcatFusion

    inputs = {m: keras.Input((d,), name=m) for m, d in MODALITIES.items()}
    presence = keras.Input((len(MODALITIES),), name="presence")
    fused = ConcatFusion(
        modalities=list(MODALITIES),
        projection_dim=16,
        projection_activation="relu",
        normalization="layer",
        kernel_initializer=keras.initializers.GlorotUniform(seed),
    )(inputs, presence=presence)
    hidden = keras.layers.Dense(64, activation="relu")(fused)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(hidden)
    model = keras.Model({**inputs, "presence": presence}, outputs, name="concat_fusion_demo")
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _with_missing(features, presence, missing):
    """Marks `missing` absent and fills its input with NaN: the mask must keep it out."""
    features = dict(features)
    presence = presence.copy()
    index = list(MODALITIES).index(missing)
    presence[:, index] = 0.0
    features[missing] = np.full_like(features[missing], np.nan)
    return features, presence


def run_demo(epochs=12, seed=0, save=None, num_train=4000, num_test=1000):
    """Trains the demo model and prints accuracy with all modalities and with each missing.

    Returns a dict `{condition: accuracy}`.
    """
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    train_x, train_y = synthetic_split(num_train, seed=seed + 1)
    test_x, test_y = synthetic_split(num_test, seed=seed + 2)
    model = build_model(seed)
    print(
        f"Training {model.name}: {num_train} examples, modalities {list(MODALITIES)}, "
        f"{NUM_CLASSES} classes, modality dropout 0.3"
    )
    for epoch in range(epochs):
        # A new dropout pattern every epoch, so the model learns every subset.
        presence = random_presence(num_train, 0.3, rng)
        print(f"epoch {epoch + 1}/{epochs}", end=" ", flush=True)
        model.fit({**train_x, "presence": presence}, train_y, batch_size=128, epochs=1, verbose=2)

    def accuracy(features, presence):
        probs = model.predict({**features, "presence": presence}, batch_size=512, verbose=0)
        return float(np.mean(probs.argmax(-1) == test_y))

    all_present = np.ones((num_test, len(MODALITIES)), "float32")
    results = {"all modalities": accuracy(test_x, all_present)}
    for m in MODALITIES:
        results[f"{m} missing (NaN input)"] = accuracy(*_with_missing(test_x, all_present, m))
    for m in MODALITIES:
        only = np.zeros_like(all_present)
        only[:, list(MODALITIES).index(m)] = 1.0
        results[f"{m} only"] = accuracy(test_x, only)

    print(f"\nTest accuracy ({num_test} examples, chance {1 / NUM_CLASSES:.2f}):")
    for condition, value in results.items():
        print(f"  {condition:<28} {value:.3f}")

    if save:
        model.save(save)
        reloaded = keras.models.load_model(save)
        feed = {**test_x, "presence": all_present}
        same = np.allclose(
            reloaded.predict(feed, verbose=0), model.predict(feed, verbose=0), atol=1e-6
        )
        if not same:
            raise RuntimeError(f"the model reloaded from {save} gives different predictions")
        print(f"\nSaved to {save} (reloaded: identical predictions)")
    return results
