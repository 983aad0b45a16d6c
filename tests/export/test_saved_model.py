"""export_saved_model: the SavedModel runs in a TensorFlow-only process like the Keras model.

A four-modality model (mmrep's image, audio and video encoders, an in-graph tokenizer,
ConcatFusion with presence, dropout) is exported with one embedding model per modality;
a fresh `python -I` process that refuses to import mmrep loads it with
`tf.saved_model.load` and calls every signature. The reference is the Keras model itself
(`training=False`) in this process; image-bytes signatures are checked against the
pixel signature on the same pixels, and JPEG decoding against PIL's.
"""

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import mmrep
from mmrep.export import export_saved_model
from tests.export import multimodal_model as mm
from tests.export.fresh_process import run_signatures

SIGNATURES = {
    "serving_default",
    "embed_image",
    "embed_image_bytes",
    "embed_text",
    "embed_audio",
    "embed_video",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, embeddings = mm.build()
    base = tmp_path_factory.mktemp("saved_models") / "test_model"
    folder = export_saved_model(model, str(base), embeddings=embeddings, verbose=False)
    return model, embeddings, folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Encoded test images: PNG/BMP at the model size (lossless), JPEG, other sizes, GIF."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    # Smooth images (JPEG keeps them close), one per row of the batch.
    ramp = np.linspace(0, 1, 32)
    pixels = np.stack(
        [
            (255 * np.clip(np.add.outer(ramp * a, ramp * b)[..., None] * [1, 0.6, 0.3], 0, 1))
            for a, b in rng.uniform(0.3, 1.0, (2, 2))
        ]
    ).astype(np.uint8)
    files = {}
    for kind, fmt, size in (
        ("png", "PNG", None),
        ("bmp", "BMP", None),
        ("jpeg", "JPEG", None),
        ("png_48x40", "PNG", (40, 48)),
        ("gif", "GIF", None),
    ):
        files[kind] = []
        for i, image in enumerate(pixels):
            picture = Image.fromarray(image)
            if size is not None:
                picture = picture.resize(size, Image.BICUBIC)
            path = folder / f"{kind}_{i}.{fmt.lower()}"
            picture.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
            files[kind].append(str(path))
    return pixels, files


@pytest.fixture(scope="module")
def served(exported, images, tmp_path_factory):
    """Outputs of every signature, computed in a fresh TensorFlow-only process."""
    _, _, folder = exported
    pixels, files = images
    serving = mm.example_inputs(3, seed=0)
    single = mm.example_inputs(2, seed=1)
    calls = {"serving_default": ("serving_default", serving)}
    for m in ("image", "text", "audio", "video"):
        calls[f"embed_{m}"] = (f"embed_{m}", {m: single[m]})
    calls["pixels"] = ("embed_image", {"image": pixels})
    for kind, paths in files.items():
        calls[kind] = ("embed_image_bytes", {"image_bytes": {"files": paths}})
    workdir = tmp_path_factory.mktemp("serving_process")
    outputs, info = run_signatures(folder, calls, workdir)
    return serving, single, outputs, info


@pytest.mark.slow  # fresh-process serving
def test_serving_default_matches_keras_in_fresh_process(exported, served):
    model, _, _ = exported
    serving, _, outputs, _ = served
    assert serving["presence"].min() == 0  # some modalities are absent
    expected = mm.keras_outputs(model, serving)
    assert set(outputs["serving_default"]) == set(expected) == {"embedding", "probabilities"}
    for name, value in expected.items():
        np.testing.assert_allclose(outputs["serving_default"][name], value, atol=1e-5, rtol=0)


def test_signatures_run_in_inference_mode(exported, served):
    model, _, _ = exported
    serving, _, outputs, _ = served
    feed = {k: tf.constant(v) for k, v in serving.items()}
    weights = model.get_weights()
    training = model(feed, training=True)["probabilities"].numpy()
    model.set_weights(weights)  # a training call moves the BatchNorm statistics
    # Dropout and batch statistics change the output in training mode: the match above
    # is with inference mode, not with either.
    assert np.abs(training - outputs["serving_default"]["probabilities"]).max() > 1e-3


def test_embedding_signatures_match_keras(exported, served):
    _, embeddings, _ = exported
    _, single, outputs, _ = served
    for m, embedder in embeddings.items():
        expected = embedder(tf.constant(single[m]), training=False).numpy()
        assert outputs[f"embed_{m}"]["embedding"].shape == expected.shape
        np.testing.assert_allclose(outputs[f"embed_{m}"]["embedding"], expected, atol=1e-5, rtol=0)


def test_serving_process_never_imported_mmrep(served):
    _, _, _, info = served
    assert info["mmrep_modules"] == []
    # A plain TensorFlow object graph, not revived Keras layers.
    assert info["loaded_type"].startswith("tensorflow.")


def test_signature_names_dtypes_and_shapes(exported, served):
    model, embeddings, folder = exported
    _, _, _, info = served
    signatures = info["signatures"]
    assert set(signatures) == SIGNATURES

    def spec(tensor):
        return {"dtype": str(tensor.dtype), "shape": [None, *tensor.shape[1:]]}

    expected_inputs = {name: spec(t) for name, t in model.input.items()}
    assert signatures["serving_default"]["inputs"] == expected_inputs
    assert signatures["serving_default"]["outputs"] == {
        name: spec(t) for name, t in model.output.items()
    }
    for m, embedder in embeddings.items():
        assert signatures[f"embed_{m}"]["inputs"] == {m: expected_inputs[m]}
        assert signatures[f"embed_{m}"]["outputs"] == {"embedding": spec(embedder.output)}
    assert signatures["embed_image_bytes"]["inputs"] == {
        "image_bytes": {"dtype": "string", "shape": [None]}
    }
    # The description written beside the model says the same.
    with open(os.path.join(folder, "assets.extra", "mmrep.json")) as f:
        description = json.load(f)
    assert description["signatures"] == signatures
    assert description["mmrep_version"] == mmrep.__version__
    assert description["tensorflow_version"] == tf.__version__
    assert description["modalities"] == ["image", "text", "audio", "video"]
    assert sorted(os.listdir(folder)) == sorted(
        ["assets", "assets.extra", "fingerprint.pb", "saved_model.pb", "variables"]
    )


def test_image_bytes_equal_pixels_for_lossless_formats(served):
    _, _, outputs, _ = served
    pixels = outputs["pixels"]["embedding"]
    for kind in ("png", "bmp"):
        np.testing.assert_allclose(outputs[kind]["embedding"], pixels, atol=1e-5, rtol=0)


def test_image_bytes_of_jpeg_decode_like_pil(exported, images, served):
    _, embeddings, _ = exported
    _, files = images
    _, _, outputs, _ = served
    decoded = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files["jpeg"]])
    expected = embeddings["image"](tf.constant(decoded), training=False).numpy()
    np.testing.assert_allclose(outputs["jpeg"]["embedding"], expected, atol=1e-5, rtol=0)


def test_image_bytes_resize_other_sizes_and_decode_gif(exported, images, served):
    _, embeddings, _ = exported
    _, files = images
    _, _, outputs, _ = served
    decoded = np.stack([np.asarray(Image.open(f)) for f in files["png_48x40"]])
    assert decoded.shape == (2, 48, 40, 3)  # height 48, width 40
    resized = tf.image.resize(decoded, (32, 32), method="bilinear", antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    expected = embeddings["image"](resized, training=False).numpy()
    np.testing.assert_allclose(outputs["png_48x40"]["embedding"], expected, atol=1e-5, rtol=0)
    gif = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files["gif"]])
    expected = embeddings["image"](tf.constant(gif), training=False).numpy()
    np.testing.assert_allclose(outputs["gif"]["embedding"], expected, atol=1e-5, rtol=0)


def test_bad_image_bytes_fail_at_serve_time(exported):
    _, _, folder = exported
    embed = tf.saved_model.load(folder).signatures["embed_image_bytes"]
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, "PNG")
    assert embed(image_bytes=tf.constant([buffer.getvalue()]))["embedding"].shape == (1, 8)
    with pytest.raises(tf.errors.InvalidArgumentError):
        embed(image_bytes=tf.constant([b"not an image"]))


def test_saved_model_cli_lists_every_signature(exported):
    model, _, folder = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    command = [cli] if os.path.exists(cli) else [sys.executable, "-m", "saved_model_cli"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [*command, "show", "--all", "--dir", folder],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    blocks = re.split(r"\n(?=signature_def\[)", result.stdout)
    listed = {}
    for block in blocks:
        name = re.match(r"signature_def\['([^']+)'\]", block)
        if name:
            listed[name.group(1)] = set(re.findall(r"inputs\['([^']+)'\]", block))
    assert SIGNATURES <= set(listed)
    assert listed["serving_default"] == set(model.input)
    for m in ("image", "text", "audio", "video"):
        assert listed[f"embed_{m}"] == {m}
    assert listed["embed_image_bytes"] == {"image_bytes"}
    assert "DT_UINT8" in result.stdout and "DT_STRING" in result.stdout
