"""The main job's model: every fusion and head builds, trains, masks absent modalities,
embeds each modality in the fused space, and survives `.keras` save and reload.

Models use tiny encoder sizes (`TINY`) and random inputs of mmdigits' shapes.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.data.mmdigits import MODALITIES
from mmrep.job import FUSIONS, HEADS, build_job_model
from mmrep.job.data import junk_like, with_absent
from mmrep.job.encoders import EncoderSizes
from mmrep.job.model import embedding_models, layers_of
from mmrep.job.trainer import JobTrainer
from tests.job.cases import trainer_inputs, trainer_network

TINY = EncoderSizes(
    vector_dim=16,
    image_filters=(4, 8),
    video_filters=(4,),
    video_frame_size=8,
    text_length=8,
    text_layers=1,
    text_hidden=16,
    text_heads=2,
    audio_filters=(4, 4, 4, 4),
    audio_units=(8,),
)

# The examples per split of the session's tiny main-job run (`tiny_run` in tests/conftest.py).
TINY_RUN_LIMIT = 64
VOCABULARY = ["a", "the", "digit", "one", "two", "three", "seven", "handwritten", "nine"]
COMBINATIONS = [(f, None) for f in FUSIONS] + [("concat", h) for h in HEADS]
BATCH = 8


def raw_inputs(batch=BATCH, seed=0):
    """Serving inputs of mmdigits' shapes and dtypes (text as bytes), all present."""
    rng = np.random.default_rng(seed)
    words = np.array(VOCABULARY + ["unknownword"])
    return {
        "image": rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
        "text": np.array(
            [" ".join(rng.choice(words, 4)).encode() for _ in range(batch)], dtype=object
        ),
        "audio": (0.1 * rng.standard_normal((batch, 16000))).astype("float32"),
        "video": rng.integers(0, 256, (batch, 16, 32, 32, 3), dtype=np.uint8),
    }


def serve(job_or_model, inputs):
    """Runs a serving model on numpy inputs (strings as a string tensor)."""
    model = getattr(job_or_model, "serving", job_or_model)
    feed = {k: tf.constant(v) for k, v in inputs.items() if k != "text"}
    feed["text"] = tf.constant(np.asarray(inputs["text"]).astype(bytes))
    return {k: np.asarray(v) for k, v in model(feed).items()}


@functools.cache
def job(fusion, head):
    return build_job_model(fusion, head, vocabulary=VOCABULARY, seed=0, sizes=TINY)


@pytest.mark.parametrize(("fusion", "head"), COMBINATIONS)
def test_builds_trains_and_embeds_every_modality_in_the_fused_space(fusion, head):
    model = job(fusion, head)
    assert model.fusion == fusion and model.head == head
    inputs = raw_inputs()
    tokenizer = model.layers["text_tokenizer"]
    ids = np.asarray(tokenizer(inputs["text"].astype(str))).astype("int32")
    presence = np.random.default_rng(1).integers(0, 2, (BATCH, 4)).astype("float32")
    presence[presence.sum(1) == 0, 0] = 1.0
    features = {**inputs, "text_ids": ids, "presence": presence}
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
    served = serve(model, {**inputs, "presence": presence})
    for key in ("embedding", "probabilities"):
        np.testing.assert_allclose(np.asarray(trained[key]), served[key], atol=1e-5)
    assert served["embedding"].dtype == np.float32
    np.testing.assert_allclose(served["probabilities"].sum(-1), 1.0, atol=1e-5)

    # Each single-modality model is the serving model with only that modality present.
    for m in MODALITIES:
        alone = serve(model, with_absent(inputs, {m}))["embedding"]
        value = tf.constant(inputs[m].astype(bytes)) if m == "text" else inputs[m]
        got = np.asarray(model.embeddings[m](value))
        np.testing.assert_allclose(got, alone, atol=1e-5, err_msg=f"{fusion}/{head}: {m}")
    np.testing.assert_allclose(
        np.asarray(model.embeddings["text_ids"](ids)),
        np.asarray(model.embeddings["text"](tf.constant(inputs["text"].astype(bytes)))),
        atol=1e-6,
    )


@pytest.mark.parametrize(("fusion", "head"), COMBINATIONS)
def test_junk_in_absent_modalities_does_not_change_the_outputs(fusion, head):
    model = job(fusion, head)
    inputs = raw_inputs(seed=2)
    other = raw_inputs(seed=3)
    for present in ({"image", "audio"}, {"text"}, {"video", "text", "audio"}):
        junk = serve(model, with_absent(inputs, present))
        # The same present values, other real values in the absent modalities.
        mixed = {m: inputs[m] if m in present else other[m] for m in MODALITIES}
        feed = with_absent(mixed, MODALITIES)
        feed["presence"] = junk_presence(present)
        real = serve(model, feed)
        for key in ("embedding", "probabilities"):
            np.testing.assert_allclose(junk[key], real[key], atol=1e-5, err_msg=str(present))
    # ... while the same junk, marked present, does change them.
    everything = serve(model, with_absent(inputs, MODALITIES))
    lied = with_absent(inputs, {"image"})
    lied["presence"][:] = 1.0
    assert not np.allclose(serve(model, lied)["probabilities"], everything["probabilities"])


def junk_presence(present):
    return np.tile(np.array([[m in present for m in MODALITIES]], "float32"), (BATCH, 1))


@pytest.mark.parametrize(("fusion", "head"), [("bilinear", None), ("coordinated", "fisher")])
def test_keras_file_reloads_with_the_same_outputs_and_embedding_models(fusion, head, tmp_path):
    model = (
        job(fusion, head)
        if head is None
        else build_job_model(fusion, head, vocabulary=VOCABULARY, seed=1, sizes=TINY)
    )
    path = str(tmp_path / "model.keras")
    model.serving.save(path)
    reloaded = keras.models.load_model(path)
    inputs = with_absent(raw_inputs(seed=4), {"image", "text", "video"})
    expected, got = serve(model, inputs), serve(reloaded, inputs)
    for key in ("embedding", "probabilities"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
    layers, found_fusion, found_head = layers_of(reloaded)
    assert (found_fusion, found_head) == (fusion, head)
    rebuilt = embedding_models(layers, found_fusion, found_head, "reloaded")
    audio = raw_inputs(seed=5)["audio"]
    np.testing.assert_allclose(
        np.asarray(rebuilt["audio"](audio)), np.asarray(model.embeddings["audio"](audio)), atol=1e-5
    )


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


def test_bad_choices_are_refused():
    with pytest.raises(ValueError, match=r"fusion.*'concat'.*Received: fusion='sum'"):
        build_job_model("sum", vocabulary=VOCABULARY)
    with pytest.raises(ValueError, match=r"head.*Received: head='gmm'"):
        build_job_model("concat", "gmm", vocabulary=VOCABULARY)
    with pytest.raises(ValueError, match="vocabulary"):
        build_job_model("concat", vocabulary=[], sizes=TINY)
    with pytest.raises(ValueError, match="Expected a main-job serving model"):
        layers_of(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="network"):
        JobTrainer(keras.layers.Dense(3))


def test_junk_values_would_mislead():
    values = raw_inputs(batch=2)
    for m in MODALITIES:
        junk = junk_like(m, values[m])
        assert junk.shape == values[m].shape
    assert np.abs(junk_like("audio", values["audio"])).max() > 0.9
    assert set(junk_like("text", values["text"])) == {b"a handwritten nine"}
    with pytest.raises(ValueError, match="modality"):
        junk_like("smell", values["image"])
