"""A modality marked missing is never read: not by the main job's models, nor their export.

In a row whose presence is 0 for a modality, that modality's values may be anything: NaN,
infinities, int16-scale floats, lengths out of range, token ids past the vocabulary,
other strings or pixels. The outputs are finite and equal (1e-6) to those with zeros
there, from the Keras model called eagerly, in a `tf.function`, and from its SavedModel
(`export_saved_model`, reloaded with `tf.saved_model.load`). A presence that does not
have one row per example, or that holds other values than 0 and 1, is an error.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.export import export_saved_model
from mmrep.job import build_run_model
from mmrep.job.encoders import tokenize
from mmrep.job.graph_layers import PresenceGate
from tests.job.tiny import VOCABULARY, raw_inputs, tiny_config

CLASSES = [str(d) for d in range(10)]
CAPTIONS = {"text": np.array([" ".join(VOCABULARY)], dtype=object)}
# Row 1 lacks text and audio, row 2 image and video (columns: image, text, audio, video).
PRESENCE = np.array([[1, 1, 1, 1], [1, 0, 0, 1], [0, 1, 1, 0]], "float32")
AUDIO_GARBAGE = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "int16_scale": 30000.0}


@pytest.fixture(scope="module")
def job():
    config = tiny_config("concat", task="classification")
    return build_run_model(config, classes=CLASSES, captions=CAPTIONS)


@pytest.fixture(scope="module")
def job_signature(job, tmp_path_factory):
    folder = export_saved_model(
        job.serving,
        str(tmp_path_factory.mktemp("job_export")),
        modalities=list(job.config["modalities"]),
        verbose=False,
    )
    return tf.saved_model.load(folder).signatures["serving_default"]


def zeros_where_absent():
    """Job serving inputs with zeros (empty strings, masked frames) where a modality is absent."""
    inputs = {**raw_inputs(batch=3, seed=7), "presence": PRESENCE.copy()}
    inputs["text"][1] = b""
    inputs["audio"][1] = 0.0
    inputs["audio_length"][1] = 0
    inputs["image"][2] = 0
    inputs["video"][2] = 0
    inputs["video_frame_mask"][2] = False
    return inputs


def garbage_where_absent(fill):
    inputs = {k: np.copy(v) for k, v in zeros_where_absent().items()}
    inputs["text"][1] = b"nine nine unknownword the"
    inputs["audio"][1] = fill
    inputs["audio"][1, ::7] = 1.0
    inputs["audio_length"][1] = 10**6
    inputs["image"][2] = 255
    inputs["video"][2] = 255
    inputs["video_frame_mask"][2] = True
    return inputs


def feed(inputs):
    return {
        k: tf.constant(np.asarray(v).astype(bytes) if k == "text" else v) for k, v in inputs.items()
    }


def keras_eager(model, inputs):
    return {k: np.asarray(v) for k, v in model(feed(inputs)).items()}


def keras_traced(model, inputs):
    return {k: np.asarray(v) for k, v in tf.function(model)(feed(inputs)).items()}


def assert_same_finite(got, expected):
    assert set(got) >= {"embedding"}
    for key in expected:
        assert np.all(np.isfinite(got[key])), key
        np.testing.assert_allclose(got[key], expected[key], atol=1e-6, rtol=0, err_msg=key)


@pytest.mark.parametrize("fill", list(AUDIO_GARBAGE.values()), ids=list(AUDIO_GARBAGE))
def test_job_keras_model_never_reads_absent_rows(job, fill):
    clean, dirty = zeros_where_absent(), garbage_where_absent(fill)
    assert_same_finite(keras_eager(job.serving, dirty), keras_eager(job.serving, clean))
    assert_same_finite(keras_traced(job.serving, dirty), keras_traced(job.serving, clean))


@pytest.mark.parametrize("fill", list(AUDIO_GARBAGE.values()), ids=list(AUDIO_GARBAGE))
def test_job_export_never_reads_absent_rows(job_signature, fill):
    def serve(inputs):
        return {k: v.numpy() for k, v in job_signature(**feed(inputs)).items()}

    assert_same_finite(serve(garbage_where_absent(fill)), serve(zeros_where_absent()))


def test_job_training_network_never_reads_absent_rows(job):
    def features(inputs):
        ids, mask = tokenize(job.layers, "text", tf.constant(inputs.pop("text").astype(bytes)))
        return {**inputs, "text_ids": np.array(ids, "int32"), "text_mask": np.array(mask)}

    clean = features(zeros_where_absent())
    dirty = features(garbage_where_absent(np.nan))
    dirty["text_ids"][1] = 10**6  # past the vocabulary, in a row without text
    dirty["text_mask"][1] = 1
    outputs = {
        name: {k: np.asarray(v) for k, v in job.training(feed(x), training=False).items()}
        for name, x in (("clean", clean), ("dirty", dirty))
    }
    assert_same_finite(outputs["dirty"], outputs["clean"])


@pytest.mark.parametrize("rows", [2, 1, 4])
def test_presence_with_another_batch_size_is_an_error(job, job_signature, rows):
    inputs = zeros_where_absent()
    inputs["presence"] = np.ones((rows, 4), "float32")
    with pytest.raises(ValueError, match=r"presence.*(3|one row per example)"):
        job.serving(feed(inputs))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"presence"):
        job_signature(**feed(inputs))


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, np.nan])
def test_presence_values_other_than_zero_and_one_are_an_error(job, job_signature, value):
    inputs = zeros_where_absent()
    inputs["presence"][1, 2] = value
    with pytest.raises(ValueError, match=r"expected presence flags .*0 \(missing\) or 1"):
        job.serving(feed(inputs))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"0 \(missing\) or 1 \(present\)"):
        job_signature(**feed(inputs))


# A model over float images and videos (value_range 0..1) and audio, each modality
# gated by its presence column before its encoder, as the main job gates its inputs.
FLOAT_MODALITIES = ("image", "audio", "video")


def float_model():
    from mmrep.encoders import ImageEncoder, VGGish, VideoEncoder
    from mmrep.fusion import ConcatFusion

    keras.utils.set_random_seed(0)

    def image_encoder():
        return ImageEncoder(
            "small_cnn", value_range=(0.0, 1.0), image_size=8, backbone_kwargs={"filters": [4]}
        )

    inputs = {
        "image": keras.Input((8, 8, 3), name="image"),
        "audio": keras.Input((None,), name="audio"),
        "video": keras.Input((3, 8, 8, 3), name="video"),
        "presence": keras.Input((3,), name="presence"),
    }
    encoders = {
        "image": image_encoder(),
        "audio": VGGish(pooling="mean", pad_short=True, conv_filters=(2, 2, 2, 2), fc_units=(4,)),
        "video": VideoEncoder(image_encoder(), pooling="mean"),
    }
    vectors = {}
    for column, m in enumerate(FLOAT_MODALITIES):
        gated = PresenceGate(column, name=f"{m}_presence_gate")(inputs[m], inputs["presence"])
        vectors[m] = encoders[m](gated)
    fused = ConcatFusion(modalities=list(FLOAT_MODALITIES), projection_dim=4)(
        vectors, presence=inputs["presence"]
    )
    return keras.Model(inputs, {"embedding": fused}, name="float_model")


def float_inputs(fill):
    rng = np.random.default_rng(3)
    inputs = {
        "image": rng.uniform(0, 1, (3, 8, 8, 3)).astype("float32"),
        "audio": (0.1 * rng.standard_normal((3, 1600))).astype("float32"),
        "video": rng.uniform(0, 1, (3, 3, 8, 8, 3)).astype("float32"),
        # Row 0 has everything; row 1 lacks image and video, row 2 audio.
        "presence": np.array([[1, 1, 1], [0, 1, 0], [1, 0, 1]], "float32"),
    }
    for m, row in (("image", 1), ("video", 1), ("audio", 2)):
        inputs[m][row] = fill
    return inputs


@pytest.fixture(scope="module")
def float_case(tmp_path_factory):
    model = float_model()
    folder = export_saved_model(
        model,
        str(tmp_path_factory.mktemp("float_export")),
        modalities=list(FLOAT_MODALITIES),
        image_bytes=False,
        verbose=False,
    )
    return model, tf.saved_model.load(folder).signatures["serving_default"]


@pytest.mark.parametrize(
    "fill", [np.nan, np.inf, -np.inf, 255.0], ids=["nan", "inf", "-inf", "255"]
)
def test_float_images_videos_and_audio_of_absent_rows_are_never_read(float_case, fill):
    model, signature = float_case
    clean, dirty = float_inputs(0.0), float_inputs(fill)
    assert_same_finite(keras_eager(model, dirty), keras_eager(model, clean))
    assert_same_finite(keras_traced(model, dirty), keras_traced(model, clean))

    def serve(inputs):
        return {k: v.numpy() for k, v in signature(**feed(inputs)).items()}

    assert_same_finite(serve(dirty), serve(clean))
    # Present rows are read, and checked: NaN there is an error.
    present = float_inputs(0.0)
    present["image"][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="expected floating pixels"):
        model(feed(present))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected floating pixels"):
        signature(**feed(present))


def test_serving_signature_checks_the_presence_of_any_model(tmp_path):
    """A model that does not gate its inputs still gets its `presence` checked when served."""
    from mmrep.fusion import ConcatFusion

    inputs = {
        "image": keras.Input((3,), name="image"),
        "text": keras.Input((2,), name="text"),
        "presence": keras.Input((2,), name="presence"),
    }
    fused = ConcatFusion(modalities=["image", "text"])(
        {"image": inputs["image"], "text": inputs["text"]}, presence=inputs["presence"]
    )
    folder = export_saved_model(keras.Model(inputs, fused), str(tmp_path), verbose=False)
    signature = tf.saved_model.load(folder).signatures["serving_default"]
    feed = {
        "image": tf.ones((2, 3)),
        "text": tf.constant([[1.0, 2.0], [np.nan, np.nan]]),  # missing text: never read
        "presence": tf.constant([[1.0, 1.0], [1.0, 0.0]]),
    }
    assert np.all(np.isfinite(signature(**feed)["output_0"].numpy()))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"0 \(missing\) or 1 \(present\)"):
        signature(**{**feed, "presence": tf.constant([[1.0, 1.0], [1.0, 0.5]])})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"presence.*one row per example"):
        signature(**{**feed, "presence": tf.constant([[1.0, 1.0]])})


def test_any_exported_model_never_reads_an_absent_modality(tmp_path):
    """A model with no gate of its own: the serving signature replaces absent rows."""
    audio = keras.Input((6,), name="audio")
    audio_length = keras.Input((), dtype="int32", name="audio_length")
    text = keras.Input((), dtype="string", name="text")
    presence = keras.Input((2,), name="presence")
    # Reads the waveform and its length whatever the presence says: NaN would flow out.
    total = keras.ops.sum(audio, axis=1, keepdims=True) + keras.ops.cast(
        audio_length[:, None], "float32"
    )
    output = keras.layers.Dense(3)(keras.layers.Concatenate()([total, presence]))
    model = keras.Model(
        {"text": text, "audio": audio, "audio_length": audio_length, "presence": presence},
        {"score": output},
    )
    folder = export_saved_model(model, str(tmp_path / "m"), verbose=False)
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    waveform = np.random.default_rng(0).uniform(-1, 1, (3, 6)).astype("float32")
    flags = np.array([[1, 1], [1, 0], [0, 1]], "float32")  # columns: text, audio
    garbage = waveform.copy()
    garbage[1] = np.nan
    lengths = np.array([6, 10**6, 6], "int32")
    texts = tf.constant(["a", "b", "c"])
    got = serve(text=texts, audio=garbage, audio_length=lengths, presence=flags)["score"]
    zeros = waveform.copy()
    zeros[1] = 0.0
    expected = model(
        {"text": texts, "audio": tf.constant(zeros),
         "audio_length": tf.constant([6, 0, 6]), "presence": tf.constant(flags)}
    )["score"]  # fmt: skip
    assert np.isfinite(got.numpy()).all()
    np.testing.assert_allclose(got.numpy(), keras.ops.convert_to_numpy(expected), atol=1e-6)
