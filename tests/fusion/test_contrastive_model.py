"""ContrastiveModel: its loss against float64 formulas, and its training at scale.

The issue-11 test is `test_mirrored_fit_matches_one_device_with_cross_replica_negatives`:
several epochs of Adam under MirroredStrategy on two logical CPUs against one device on
the same global batches, with missing modalities; without cross-replica negatives the
runs must differ. The float64 references (`ref_clip` & co.) are written from the papers
on the subset of valid pairs (tests/losses/test_contrastive.py).
"""

import functools
import os

import keras
import numpy as np
import pytest

from mmrep.fusion.contrastive_model import ContrastiveModel
from mmrep.fusion.coordinated import CoordinatedEmbedding
from mmrep.losses import ClipLoss, MaxMarginRankingLoss, NTXentLoss
from tests.fusion.contrastive_model_cases import embedding_model
from tests.harness import two_device_strategy
from tests.losses.test_contrastive import DualEncoder, ref_clip, ref_nt_xent, ref_vse

GLOBAL_BATCH = 8
STEPS = 3  # batches per epoch
EPOCHS = 2
RNG = np.random.default_rng(21)
DATA = {
    "image": RNG.standard_normal((GLOBAL_BATCH * STEPS, 6)).astype("float32"),
    "text": RNG.standard_normal((GLOBAL_BATCH * STEPS, 4)).astype("float32"),
    # Columns image, text. Every batch has missing modalities on both replicas' shards.
    "presence": np.tile(
        np.array([[1, 1], [1, 0], [1, 1], [1, 1], [0, 1], [1, 1], [1, 1], [1, 0]], "float32"),
        (STEPS, 1),
    ),
}
VALID = DATA["presence"].all(axis=1)


def _embedder(**kwargs):
    # tanh rather than ReLU: a row whose hidden ReLUs are all off would project to an
    # exactly zero embedding, which the losses read as a missing modality.
    return embedding_model(hidden_dims=(5,), hidden_activation="tanh", **kwargs)


def _numpy(outputs):
    return {k: keras.ops.convert_to_numpy(v).astype("float64") for k, v in outputs.items()}


# === The loss ===


@pytest.mark.parametrize(
    ("loss", "reference"),
    [
        (ClipLoss(), lambda a, b, s: ref_clip(a, b, s)),
        (NTXentLoss(temperature=0.3), lambda a, b, s: ref_nt_xent(a, b, 0.3)),
        (MaxMarginRankingLoss(0.2, max_violation=True), lambda a, b, s: ref_vse(a, b, 0.2, True)),
        (MaxMarginRankingLoss(0.3, max_violation=False), lambda a, b, s: ref_vse(a, b, 0.3, False)),
    ],
    ids=["clip", "nt_xent", "vse_hardest", "vse_sum"],
)
def test_loss_is_the_pair_loss_of_the_outputs_over_valid_pairs(loss, reference):
    model = ContrastiveModel(_embedder(), loss)
    x = {k: v[:GLOBAL_BATCH] for k, v in DATA.items()}
    outputs = model(x)
    out = _numpy(outputs)
    valid = VALID[:GLOBAL_BATCH]
    expected = reference(out["image"][valid], out["text"][valid], out["logit_scale"][0, 0])
    actual = keras.ops.convert_to_numpy(model.compute_loss(x, None, outputs))
    np.testing.assert_allclose(actual, expected, rtol=2e-5)
    model.compile(optimizer="sgd")
    evaluated = model.evaluate(x, batch_size=GLOBAL_BATCH, verbose=0)
    np.testing.assert_allclose(evaluated, expected, rtol=2e-5)


def test_presence_given_as_targets_when_the_model_has_no_presence_input():
    model = ContrastiveModel(_embedder(presence=False), NTXentLoss(temperature=0.5))
    x = {k: DATA[k][:GLOBAL_BATCH] for k in ("image", "text")}
    presence = DATA["presence"][:GLOBAL_BATCH]
    out = _numpy(model(x))
    valid = presence.all(axis=1)
    expected = ref_nt_xent(out["image"][valid], out["text"][valid], 0.5)
    model.compile(optimizer="sgd")
    evaluated = model.evaluate(x, presence, batch_size=GLOBAL_BATCH, verbose=0)
    np.testing.assert_allclose(evaluated, expected, rtol=2e-5)
    with_all = model.evaluate(x, batch_size=GLOBAL_BATCH, verbose=0)
    assert abs(with_all - expected) > 1e-3, "the targets were not read as presence"


def test_a_step_equals_the_compute_loss_override_pattern():
    """The same model trained as the documented `keras.Model` subclass trains identically."""
    embedder = _embedder()
    start = embedder.get_weights()
    ready = ContrastiveModel(embedder, ClipLoss())
    inputs = {k: keras.Input(v.shape[1:], name=k) for k, v in DATA.items()}
    manual_embedder = _embedder()
    manual_embedder.set_weights(start)
    manual = DualEncoder(inputs, manual_embedder(inputs), contrastive=ClipLoss())
    histories = []
    for model in (ready, manual):
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        fit = model.fit(DATA, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
        histories.append(fit.history["loss"])
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-6)
    for w_r, w_m, s in zip(ready.get_weights(), manual.get_weights(), start, strict=True):
        np.testing.assert_allclose(w_r, w_m, rtol=1e-6, atol=1e-7)
        assert np.abs(w_r - s).max() > 1e-4, "the weights did not train"


def test_compiled_losses_and_layer_losses_are_added():
    inputs = {"image": keras.Input((6,), name="image"), "text": keras.Input((4,), name="text")}
    outputs = CoordinatedEmbedding(3)(inputs)
    logits = keras.layers.Dense(
        3, kernel_regularizer=keras.regularizers.L2(0.1), name="classifier"
    )(inputs["image"])
    embedder = keras.Model(inputs, {**outputs, "class_logits": logits})
    model = ContrastiveModel(embedder, ClipLoss(modalities=("image", "text")))
    model.compile(
        optimizer="sgd",
        loss={"class_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    x = {k: DATA[k][:GLOBAL_BATCH] for k in ("image", "text")}
    labels = np.arange(GLOBAL_BATCH) % 3
    out = _numpy(model(x))
    z = out["class_logits"] - out["class_logits"].max(axis=1, keepdims=True)
    cross_entropy = -(z[np.arange(GLOBAL_BATCH), labels] - np.log(np.exp(z).sum(1))).mean()
    kernel = model.embedding_model.get_layer("classifier").kernel.numpy().astype("float64")
    expected = (
        ref_clip(out["image"], out["text"], out["logit_scale"][0, 0])
        + cross_entropy
        + 0.1 * np.sum(kernel**2)
    )
    evaluated = model.evaluate(x, {"class_logits": labels}, batch_size=GLOBAL_BATCH, verbose=0)
    np.testing.assert_allclose(evaluated, expected, rtol=2e-5)


# === Training under MirroredStrategy (issue 11) ===


def _train(strategy=None, cross_replica=True, jit_compile=False, start=None):
    """Fits from the weights `start` for EPOCHS epochs; returns (weights, loss history)."""

    def build():
        model = ContrastiveModel(_embedder(), ClipLoss(cross_replica=cross_replica))
        if start is not None:
            model.set_weights(start)
        model.compile(optimizer=keras.optimizers.Adam(0.02), jit_compile=jit_compile)
        return model

    if strategy is None:
        model = build()
    else:
        with strategy.scope():
            model = build()
    history = model.fit(
        DATA, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0
    ).history["loss"]
    return model.get_weights(), history


@functools.cache
def _start():
    keras.utils.set_random_seed(7)
    return tuple(ContrastiveModel(_embedder()).get_weights())


@functools.cache
def _one_device():
    # One replica gathers nothing, so `cross_replica` does not matter here.
    return _train(start=list(_start()))


def test_mirrored_fit_matches_one_device_with_cross_replica_negatives():
    weights, history = _train(two_device_strategy(), start=list(_start()))
    expected_weights, expected_history = _one_device()
    assert len(history) == EPOCHS
    np.testing.assert_allclose(history, expected_history, rtol=1e-5)
    moved = max(np.abs(w - s).max() for w, s in zip(expected_weights, _start(), strict=True))
    assert moved > 0.05, "training hardly changed the weights"
    # Measured: 6e-8 apart after the 6 steps (float round-off); 0.19 without gathering.
    for w_m, w_s in zip(weights, expected_weights, strict=True):
        np.testing.assert_allclose(w_m, w_s, rtol=1e-4, atol=1e-6)


def test_without_cross_replica_negatives_mirrored_fit_differs():
    weights, history = _train(two_device_strategy(), cross_replica=False, start=list(_start()))
    expected_weights, expected_history = _one_device()
    # Each replica ranks against its 4 local pairs instead of the 8 of the global batch.
    assert abs(history[0] - expected_history[0]) > 0.05, (history, expected_history)
    gap = max(np.abs(w_m - w_s).max() for w_m, w_s in zip(weights, expected_weights, strict=True))
    assert gap > 1e-2, gap


def test_presence_targets_under_the_strategy_match_one_device():
    x = {k: DATA[k] for k in ("image", "text")}

    def build():
        # VSE++ does not use the temperature: it is not learned here.
        embedder = _embedder(presence=False, learn_logit_scale=False)
        model = ContrastiveModel(embedder, MaxMarginRankingLoss())
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        return model

    single = build()
    with two_device_strategy().scope():
        mirrored = build()
    mirrored.set_weights(single.get_weights())
    histories = [
        m.fit(x, DATA["presence"], batch_size=GLOBAL_BATCH, shuffle=False, verbose=0).history
        for m in (single, mirrored)
    ]
    np.testing.assert_allclose(histories[1]["loss"], histories[0]["loss"], rtol=1e-5)
    for w_m, w_s in zip(mirrored.get_weights(), single.get_weights(), strict=True):
        np.testing.assert_allclose(w_m, w_s, rtol=1e-4, atol=1e-6)


# === Precision, XLA, saving, embeddings ===


def test_jit_compiled_fit_matches_the_uncompiled_one():
    weights, history = _train(jit_compile=True, start=list(_start()))
    expected_weights, expected_history = _one_device()
    np.testing.assert_allclose(history, expected_history, rtol=1e-4)
    for w_j, w_s in zip(weights, expected_weights, strict=True):
        np.testing.assert_allclose(w_j, w_s, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_fit_is_finite_with_float32_variables(policy):
    keras.config.set_dtype_policy(policy)
    model = ContrastiveModel(_embedder())
    start = model.get_weights()
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    scaled = policy == "mixed_float16"
    if scaled:  # Model.compile adds dynamic loss scaling itself
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        initial_scale = model.optimizer.initial_scale
    # float16: the first steps overflow at the initial scale (2**15) and are skipped
    # while the scale comes down, so train for a few more.
    epochs = 4 if scaled else 1
    history = model.fit(DATA, batch_size=GLOBAL_BATCH, epochs=epochs, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)), history
    if scaled:
        assert float(model.optimizer.dynamic_scale) < initial_scale
    assert all(v.dtype == "float32" for v in model.weights)
    assert max(np.abs(w - s).max() for w, s in zip(model.get_weights(), start, strict=True)) > 0
    embeddings = model.embed(DATA, "image")
    assert embeddings.dtype == np.float32 and np.all(np.isfinite(embeddings))


def test_keras_file_round_trip_gives_equal_outputs_loss_and_training(tmp_path):
    embedder = _embedder(learn_logit_scale=False)  # the loss has a fixed temperature
    model = ContrastiveModel(embedder, NTXentLoss(temperature=0.25), name="dual")
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(DATA, batch_size=GLOBAL_BATCH, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "contrastive.keras")
    model.save(path)
    revived = keras.models.load_model(path)
    assert isinstance(revived, ContrastiveModel) and revived.name == "dual"
    assert revived.contrastive_loss.get_config() == model.contrastive_loss.get_config()
    for key, value in _numpy(model.predict(DATA, verbose=0)).items():
        np.testing.assert_allclose(revived.predict(DATA, verbose=0)[key], value, atol=1e-6)
    losses = [m.evaluate(DATA, batch_size=GLOBAL_BATCH, verbose=0) for m in (model, revived)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
    # The optimizer state came back too: one more epoch trains both alike.
    for m in (model, revived):
        m.fit(DATA, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    for w_r, w_m in zip(revived.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(w_r, w_m, rtol=1e-5, atol=1e-6)


def test_a_bare_coordinated_embedding_layer_trains_and_round_trips(tmp_path):
    x = {k: DATA[k] for k in ("image", "text")}
    model = ContrastiveModel(CoordinatedEmbedding(4))
    model.compile(optimizer="adam")
    history = model.fit(x, batch_size=GLOBAL_BATCH, epochs=1, verbose=0).history["loss"]
    assert np.isfinite(history[0])
    out = _numpy(model(x))
    expected = ref_clip(out["image"], out["text"], out["logit_scale"][0, 0])
    np.testing.assert_allclose(
        model.evaluate(x, batch_size=len(VALID), verbose=0), expected, rtol=2e-5
    )
    path = os.path.join(tmp_path, "bare.keras")
    model.save(path)
    revived = keras.models.load_model(path)
    np.testing.assert_allclose(revived.embed(x, "text"), model.embed(x, "text"), atol=1e-6)


def test_embed_one_modality_alone_with_zeros_marked_absent():
    model = ContrastiveModel(_embedder())
    full = model.embed(DATA, batch_size=5)
    assert sorted(full) == ["image", "text"]
    outputs = _numpy(model(DATA))
    np.testing.assert_allclose(full["image"], outputs["image"], atol=1e-6)
    images_only = {
        "image": DATA["image"],
        "text": np.zeros_like(DATA["text"]),
        "presence": np.stack([DATA["presence"][:, 0], np.zeros(len(VALID))], axis=1),
    }
    alone = model.embed(images_only, "image")
    np.testing.assert_allclose(alone, full["image"], atol=1e-6)
    present = DATA["presence"][:, 0] == 1
    np.testing.assert_allclose(np.linalg.norm(alone[present], axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(alone[~present], 0.0)
    with pytest.raises(ValueError, match=r"`modality` to be one of \['image', 'text'\]"):
        model.embed(DATA, "logit_scale")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ContrastiveModel("embedder"), "`embedding_model` to be a Keras layer"),
        (lambda: ContrastiveModel(_embedder(), "clip"), "`contrastive_loss` to be a"),
        (
            lambda: ContrastiveModel(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])),
            "output to be a dict",
        ),
        (
            lambda: ContrastiveModel(_embedder(), ClipLoss(modalities=("image", "audio"))),
            r"outputs \['image', 'logit_scale', 'text'\] do not give",
        ),
    ],
    ids=["not_a_layer", "not_a_loss", "not_a_dict", "unknown_modality"],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()
