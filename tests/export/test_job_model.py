"""The main job's model (`mmrep.job.build_run_model` of the built-in config) exported and
served without mmrep.

The serving model and its per-modality embedding models (random weights: export does
not depend on training) go through `export_saved_model`; a fresh TensorFlow-only process
calls every signature on mmdigits test examples with some modalities absent, clips
shortened and frames masked, and the Keras models in this process are the reference.
"""

import numpy as np
import pytest
import tensorflow as tf

from mmrep.data import load_mmdigits
from mmrep.export import export_saved_model
from tests.export.fresh_process import run_signatures

MODALITIES = ("image", "text", "audio", "video")
PADDING = {"audio": "audio_length", "video": "video_frame_mask"}


@pytest.fixture(scope="module")
def job():
    from mmrep.job import build_run_model, builtin_config

    captions = load_mmdigits("train", modalities=("text",), as_numpy=True)["text"]
    return build_run_model(
        builtin_config(), classes=[str(d) for d in range(10)], captions={"text": captions}
    )


def served_inputs():
    """Four mmdigits test rows: two clips cut short (zero-padded), some frames masked."""
    test = load_mmdigits("test", as_numpy=True)
    inputs = {m: test[m][:4] for m in MODALITIES}
    lengths = np.array([16000, 9000, 16000, 4000], "int32")
    inputs["audio"] = inputs["audio"].copy()
    for row, length in enumerate(lengths):
        inputs["audio"][row, length:] = 0.0
    inputs["audio_length"] = lengths
    mask = np.ones((4, 16), bool)
    mask[1, 5:] = False
    mask[3, 12:] = False
    inputs["video_frame_mask"] = mask
    inputs["presence"] = np.array(
        [[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 1]], "float32"
    )
    return inputs


@pytest.mark.slow  # fresh-process serving
def test_job_model_serves_like_keras_in_a_fresh_process(job, tmp_path):
    folder = export_saved_model(
        job.serving,
        str(tmp_path / "saved_models" / "job"),
        embeddings=job.embeddings,
        modalities=list(job.config["modalities"]),
        verbose=False,
    )
    inputs = served_inputs()

    def feed_of(m):
        return {m: inputs[m], **({PADDING[m]: inputs[PADDING[m]]} if m in PADDING else {})}

    calls = {"serving_default": ("serving_default", inputs)}
    for i, m in enumerate(MODALITIES):
        calls[f"embed_{m}"] = (f"embed_{m}", feed_of(m))
        alone = {**inputs, "presence": np.tile(np.eye(4, dtype="float32")[i], (4, 1))}
        calls[f"{m}_alone"] = ("serving_default", alone)
    files = []
    for i, image in enumerate(inputs["image"]):
        files.append(str(tmp_path / f"{i}.png"))
        tf.io.write_file(files[-1], tf.io.encode_png(image))
    calls["embed_image_bytes"] = ("embed_image_bytes", {"image_bytes": {"files": files}})
    outputs, info = run_signatures(folder, calls, tmp_path)

    assert info["mmrep_modules"] == []
    assert set(info["signatures"]) == {
        "serving_default",
        *(f"embed_{m}" for m in (*MODALITIES, "image_bytes")),
    }
    assert info["signatures"]["serving_default"]["inputs"] == {
        "image": {"dtype": "uint8", "shape": [None, 32, 32, 3]},
        "text": {"dtype": "string", "shape": [None]},
        "audio": {"dtype": "float32", "shape": [None, None]},
        "audio_length": {"dtype": "int32", "shape": [None]},
        "video": {"dtype": "uint8", "shape": [None, 16, 32, 32, 3]},
        "video_frame_mask": {"dtype": "bool", "shape": [None, 16]},
        "presence": {"dtype": "float32", "shape": [None, 4]},
    }
    assert set(info["signatures"]["embed_audio"]["inputs"]) == {"audio", "audio_length"}
    assert set(info["signatures"]["embed_video"]["inputs"]) == {"video", "video_frame_mask"}
    feed = {k: tf.constant(v.astype(bytes) if k == "text" else v) for k, v in inputs.items()}
    expected = job.serving(feed, training=False)
    assert set(outputs["serving_default"]) == {"embedding", "probabilities"}
    for name, value in expected.items():
        np.testing.assert_allclose(outputs["serving_default"][name], value, atol=1e-5, rtol=0)
    for m in MODALITIES:
        source = {
            k: tf.constant(v.astype(bytes) if k == "text" else v) for k, v in feed_of(m).items()
        }
        source = source if len(source) > 1 else source[m]
        reference = job.embeddings[m](source, training=False).numpy()
        np.testing.assert_allclose(outputs[f"embed_{m}"]["embedding"], reference, atol=1e-5)
        # Each modality's signature embeds into the fused space: the served model with
        # only that modality present.
        np.testing.assert_allclose(
            outputs[f"embed_{m}"]["embedding"], outputs[f"{m}_alone"]["embedding"], atol=1e-5
        )
    np.testing.assert_allclose(
        outputs["embed_image_bytes"]["embedding"], outputs["embed_image"]["embedding"], atol=1e-5
    )
    # The padding is not content: a clip cut short embeds as the short clip alone, and
    # masked frames as the clip without them.
    short = job.embeddings["audio"](
        {"audio": tf.constant(inputs["audio"][1:2, :9000]), "audio_length": tf.constant([9000])}
    )
    np.testing.assert_allclose(outputs["embed_audio"]["embedding"][1:2], short, atol=1e-5)
    video = inputs["video"][3:4].copy()
    video[:, 12:] = 255 - video[:, 12:]
    other = job.embeddings["video"](
        {
            "video": tf.constant(video),
            "video_frame_mask": tf.constant(inputs["video_frame_mask"][3:4]),
        }
    )
    np.testing.assert_allclose(outputs["embed_video"]["embedding"][3:4], other, atol=1e-5)
