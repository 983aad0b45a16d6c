"""The run model: every fusion and head builds, trains, masks absent modalities,
embeds each modality in the fused space, and survives `.keras` save and reload.

Models use the built-in mmdigits config with tiny encoders (`tests.job.tiny`) and random
inputs of mmdigits' shapes.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.job import FUSIONS, HEADS, RunModel, build_run_model
from mmrep.job.encoders import tokenize
from mmrep.job.trainer import JobTrainer
from tests.job.cases import trainer_inputs, trainer_network
from tests.job.tiny import MODALITIES, VOCABULARY, raw_inputs, serve, tiny_config, with_presence

COMBINATIONS = [(f, "none") for f in FUSIONS] + [("concat", h) for h in HEADS]
BATCH = 8
CLASSES = [str(d) for d in range(10)]
CAPTIONS = {"text": np.array([" ".join(VOCABULARY)], dtype=object)}


@functools.cache
def job(fusion, head, seed=0):
    config = tiny_config(fusion, head, task="both" if fusion == "coordinated" else "classification")
    config = {**config, "seed": seed}
    return build_run_model(config, classes=CLASSES, captions=CAPTIONS)


def modality_feed(inputs, m):
    keys = {"audio": ["audio", "audio_length"], "video": ["video", "video_frame_mask"]}
    feed = {k: tf.constant(inputs[k]) for k in keys.get(m, [m]) if m != "text"}
    if m == "text":
        return tf.constant(np.asarray(inputs["text"]).astype(bytes))
    return feed if len(feed) > 1 else feed[m]


@pytest.mark.parametrize(("fusion", "head"), COMBINATIONS)
def test_builds_trains_and_embeds_every_modality_in_the_fused_space(fusion, head):
    model = job(fusion, head)
    inputs = raw_inputs()
    ids, mask = tokenize(model.layers, "text", tf.constant(inputs["text"].astype(bytes)))
    presence = np.random.default_rng(1).integers(0, 2, (BATCH, 4)).astype("float32")
    presence[presence.sum(1) == 0, 0] = 1.0
    features = {
        **inputs,
        "text_ids": np.asarray(ids, "int32"),
        "text_mask": np.asarray(mask, "int32"),
    }
    features["presence"] = presence
    del features["text"]
    labels = np.arange(BATCH) % 10
    model.training.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        # Two steps: tracing the training step would cost more than running it eagerly.
        run_eagerly=True,
    )
    before = [w.copy() for w in model.serving.get_weights()]
    history = model.training.fit(features, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]), history.history
    after = model.serving.get_weights()
    changed = [not np.array_equal(a, b) for a, b in zip(before, after, strict=True)]
    assert sum(changed) > len(changed) // 2, "training moved few of the serving model's weights"

    # The training network (token ids) and the serving model (strings) share every weight.
    trained = model.training({k: tf.constant(v) for k, v in features.items()})
    served = serve(model.serving, {**inputs, "presence": presence})
    for key in ("embedding", "probabilities"):
        np.testing.assert_allclose(np.asarray(trained[key]), served[key], atol=1e-5)
    assert served["embedding"].dtype == np.float32
    np.testing.assert_allclose(served["probabilities"].sum(-1), 1.0, atol=1e-5)

    # Each single-modality model is the serving model with only that modality present.
    for m in MODALITIES:
        alone = serve(model.serving, with_presence(inputs, {m}))["embedding"]
        got = np.asarray(model.embeddings[m](modality_feed(inputs, m)))
        np.testing.assert_allclose(got, alone, atol=1e-5, err_msg=f"{fusion}/{head}: {m}")


@pytest.mark.parametrize(("fusion", "head"), COMBINATIONS)
def test_values_of_absent_modalities_do_not_change_the_outputs(fusion, head):
    model = job(fusion, head)
    inputs = raw_inputs(seed=2)
    other = raw_inputs(seed=3)
    other["audio"] *= 100.0  # loud noise where audio is absent
    for present in ({"image", "audio"}, {"text"}, {"video", "text", "audio"}):
        base = serve(model.serving, with_presence(inputs, present))
        mixed = {k: inputs[k] if k.split("_")[0] in present else other[k] for k in inputs}
        swapped = serve(model.serving, with_presence(mixed, present))
        for key in ("embedding", "probabilities"):
            np.testing.assert_allclose(base[key], swapped[key], atol=1e-5, err_msg=str(present))
    # ... while other values, marked present, do change them.
    everything = serve(model.serving, with_presence(inputs, MODALITIES))
    lied = {k: other[k] if k.startswith("image") else inputs[k] for k in inputs}
    lied = serve(model.serving, with_presence(lied, MODALITIES))
    assert not np.allclose(lied["probabilities"], everything["probabilities"])


@pytest.mark.parametrize(("fusion", "head"), [("bilinear", "none"), ("coordinated", "fisher")])
def test_keras_file_reloads_with_the_same_outputs_and_embedding_models(fusion, head, tmp_path):
    model = job(fusion, head, seed=1)
    path = str(tmp_path / "model.keras")
    model.serving.save(path)
    reloaded = keras.models.load_model(path)
    inputs = with_presence(raw_inputs(seed=4), {"image", "text", "video"})
    expected, got = serve(model.serving, inputs), serve(reloaded, inputs)
    for key in ("embedding", "probabilities"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
    rebuilt = RunModel.from_serving(reloaded, model.config, CLASSES)
    feed = modality_feed(raw_inputs(seed=5), "audio")
    np.testing.assert_allclose(
        np.asarray(rebuilt.embeddings["audio"](feed)),
        np.asarray(model.embeddings["audio"](feed)),
        atol=1e-5,
    )
    other = tiny_config("concat", "none", task="classification")
    with pytest.raises(ValueError, match="Expected a run model of fusion 'concat'"):
        RunModel.from_serving(reloaded, other, CLASSES)


def test_padded_audio_and_masked_frames_are_not_content():
    model = job("coordinated", "none")
    inputs = raw_inputs(batch=2, seed=6)
    short = dict(inputs, audio_length=np.array([8000, 16000], "int32"))
    padded = dict(short, audio=inputs["audio"].copy())
    padded["audio"][0, 8000:] = 0.0
    noisy = dict(short, audio=inputs["audio"].copy())
    noisy["audio"][0, 8000:] = 5.0
    a = np.asarray(model.embeddings["audio"](modality_feed(padded, "audio")))
    b = np.asarray(model.embeddings["audio"](modality_feed(noisy, "audio")))
    np.testing.assert_allclose(a, b, atol=1e-5)
    mask = np.ones((2, 16), bool)
    mask[0, 10:] = False
    masked = dict(inputs, video_frame_mask=mask)
    changed = dict(masked, video=inputs["video"].copy())
    changed["video"][0, 10:] = 255 - changed["video"][0, 10:]
    a = np.asarray(model.embeddings["video"](modality_feed(masked, "video")))
    b = np.asarray(model.embeddings["video"](modality_feed(changed, "video")))
    np.testing.assert_allclose(a, b, atol=1e-5)
    unmasked = np.asarray(
        model.embeddings["video"](
            modality_feed(changed | {"video_frame_mask": np.ones((2, 16), bool)}, "video")
        )
    )
    assert not np.allclose(unmasked[0], b[0], atol=1e-4)


def test_trainer_loss_is_cross_entropy_plus_mean_pair_clip_loss():
    network = trainer_network()
    trainer = JobTrainer(network, contrastive_pairs=[("image", "text")], contrastive_weight=0.5)
    trainer.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = trainer_inputs()
    y = np.array([0, 1, 2, 0, 1, 2])
    out = {k: np.asarray(v, np.float64) for k, v in trainer(x).items()}
    loss = float(trainer.compute_loss(x, y, trainer(x)))

    cross_entropy = -np.mean(np.log(out["probabilities"][np.arange(6), y]))
    valid = np.flatnonzero(x["presence"].all(axis=1))
    a, b = out["coordinated_image"][valid], out["coordinated_text"][valid]
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    logits = out["logit_scale"][0, 0] * a @ b.T

    def ce(z):
        z = z - z.max(axis=1, keepdims=True)
        return -np.mean(np.diag(z) - np.log(np.exp(z).sum(axis=1)))

    clip = (ce(logits) + ce(logits.T)) / 2
    np.testing.assert_allclose(loss, cross_entropy + 0.5 * clip, rtol=1e-5)


def test_bad_models_are_refused():
    with pytest.raises(ValueError, match="needs two or more classes"):
        build_run_model(tiny_config(), classes=["one"], captions=CAPTIONS)
    with pytest.raises(ValueError, match="vocabulary comes from the training captions"):
        build_run_model(tiny_config(), classes=CLASSES, captions={})
    with pytest.raises(ValueError, match="network"):
        JobTrainer(keras.layers.Dense(3))
