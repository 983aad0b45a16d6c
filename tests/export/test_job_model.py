"""The main job's model (`mmrep.job.build_job_model`) exported and served without mmrep.

The serving model and its per-modality embedding models (random weights: export does
not depend on training) go through `export_saved_model`; a fresh TensorFlow-only process
calls every signature on mmdigits test examples with some modalities absent, and the
Keras models in this process are the reference.
"""

import numpy as np
import pytest
import tensorflow as tf

from mmrep.data import load_mmdigits
from mmrep.export import export_saved_model
from tests.export.fresh_process import run_signatures

MODALITIES = ("image", "text", "audio", "video")


@pytest.fixture(scope="module")
def job():
    from mmrep.job import build_job_model
    from mmrep.job.encoders import caption_vocabulary

    captions = load_mmdigits("train", modalities=("text",), as_numpy=True)["text"]
    return build_job_model(vocabulary=caption_vocabulary(captions), seed=0)


@pytest.mark.slow  # fresh-process serving
def test_job_model_serves_like_keras_in_a_fresh_process(job, tmp_path):
    folder = export_saved_model(
        job.serving, str(tmp_path / "saved_models" / "job"), embeddings=job.embeddings
    )
    test = load_mmdigits("test", as_numpy=True)
    inputs = {m: test[m][:4] for m in MODALITIES}
    inputs["presence"] = np.array(
        [[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], "float32"
    )
    token_ids = job.embeddings["text_ids"].input
    ids = job.layers["text_tokenizer"](tf.constant(inputs["text"])).numpy()
    ids = ids.astype(token_ids.dtype)
    assert ids.shape[1:] == tuple(token_ids.shape[1:])
    calls = {"serving_default": ("serving_default", inputs)}
    for m in MODALITIES:
        calls[f"embed_{m}"] = (f"embed_{m}", {m: inputs[m]})
        alone = {
            **inputs,
            "presence": np.tile(np.eye(4, dtype="float32")[MODALITIES.index(m)], (4, 1)),
        }
        calls[f"{m}_alone"] = ("serving_default", alone)
    calls["embed_text_ids"] = ("embed_text_ids", {"text_ids": ids})
    files = []
    for i, image in enumerate(inputs["image"]):
        files.append(str(tmp_path / f"{i}.png"))
        tf.io.write_file(files[-1], tf.io.encode_png(image))
    calls["embed_image_bytes"] = ("embed_image_bytes", {"image_bytes": {"files": files}})
    outputs, info = run_signatures(folder, calls, tmp_path)

    assert info["mmrep_modules"] == []
    assert set(info["signatures"]) == {
        "serving_default",
        *(f"embed_{m}" for m in (*MODALITIES, "text_ids", "image_bytes")),
    }
    assert info["signatures"]["serving_default"]["inputs"] == {
        "image": {"dtype": "uint8", "shape": [None, 32, 32, 3]},
        "text": {"dtype": "string", "shape": [None]},
        "audio": {"dtype": "float32", "shape": [None, 16000]},
        "video": {"dtype": "uint8", "shape": [None, 16, 32, 32, 3]},
        "presence": {"dtype": "float32", "shape": [None, 4]},
    }
    feed = {k: tf.constant(v) for k, v in inputs.items()}
    expected = job.serving(feed, training=False)
    assert set(outputs["serving_default"]) == {"embedding", "probabilities"}
    for name, value in expected.items():
        np.testing.assert_allclose(outputs["serving_default"][name], value, atol=1e-5, rtol=0)
    for m in (*MODALITIES, "text_ids"):
        source = ids if m == "text_ids" else inputs[m]
        reference = job.embeddings[m](tf.constant(source), training=False).numpy()
        np.testing.assert_allclose(outputs[f"embed_{m}"]["embedding"], reference, atol=1e-5)
    for m in MODALITIES:
        # Each modality's signature embeds into the fused space: the served model with
        # only that modality present.
        np.testing.assert_allclose(
            outputs[f"embed_{m}"]["embedding"], outputs[f"{m}_alone"]["embedding"], atol=1e-5
        )
    np.testing.assert_allclose(
        outputs["embed_text_ids"]["embedding"], outputs["embed_text"]["embedding"], atol=1e-5
    )
    np.testing.assert_allclose(
        outputs["embed_image_bytes"]["embedding"], outputs["embed_image"]["embedding"], atol=1e-5
    )
