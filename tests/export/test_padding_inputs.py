"""Served models whose audio and video inputs come with their padding.

A hand-built functional model takes a waveform of any length with its lengths
(`audio`, `audio_length`), a fixed number of frames with their mask (`video`,
`video_frame_mask`) and `presence`, and returns masked means: the mean and mean square
of the valid samples, the channel means of the valid frames. The reference is a float64
numpy formula on the valid samples and frames only; garbage in the padding shows that
nothing reads it. `embed_manifest` is checked on WAV files of different lengths and MP4
videos, against the same formula on the files' samples (read with soundfile) and frames
(decoded with PyAV).
"""

import csv
import json
import os

import keras
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from keras import ops

from mmrep.data.manifest import frame_mask_key, length_key
from mmrep.export import ServingError, embed_manifest, export_saved_model
from mmrep.export import signatures as export_signatures
from mmrep.export.embed_inputs import plan_feeds
from mmrep.export.saved_model import read_description
from mmrep.preprocessing.video_io import write_video
from tests.export.fresh_process import run_signatures
from tests.preprocessing.video_files import decode_all

FRAMES, SIZE = 5, 16


class MaskedWaveformMoments(keras.layers.Layer):
    """`[mean, mean square]` of each waveform's first `length` samples (all without one)."""

    def call(self, audio, length=None):
        if length is None:
            valid = ops.ones_like(audio)
        else:
            steps = ops.arange(ops.shape(audio)[1])
            valid = ops.cast(steps[None, :] < ops.cast(length, "int32")[:, None], audio.dtype)
        count = ops.maximum(ops.sum(valid, axis=1, keepdims=True), 1.0)
        moments = [ops.sum(audio * valid, 1, keepdims=True), ops.sum(audio**2 * valid, 1, True)]
        return ops.concatenate(moments, axis=1) / count

    def compute_output_shape(self, audio_shape, length_shape=None):
        return (audio_shape[0], 2)


class MaskedFrameMean(keras.layers.Layer):
    """Channel means (pixels / 255) over the frames whose mask is True."""

    def call(self, video, frame_mask):
        frames = ops.mean(ops.cast(video, "float32"), axis=(2, 3)) / 255.0
        weights = ops.cast(frame_mask, "float32")[..., None]
        return ops.sum(frames * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, video_shape, frame_mask_shape):
        return (video_shape[0], video_shape[-1])


def build():
    """`(model, embeddings)`: the fused model and its embedding models."""
    audio = keras.Input((None,), name="audio")
    audio_length = keras.Input((), dtype="int32", name="audio_length")
    video = keras.Input((FRAMES, SIZE, SIZE, 3), dtype="uint8", name="video")
    video_frame_mask = keras.Input((FRAMES,), dtype="bool", name="video_frame_mask")
    presence = keras.Input((2,), name="presence")
    audio_vector = MaskedWaveformMoments()(audio, audio_length)
    video_vector = MaskedFrameMean()(video, video_frame_mask)
    embedding = keras.layers.Concatenate()(
        [audio_vector * presence[:, 0:1], video_vector * presence[:, 1:2]]
    )
    inputs = {"audio": audio, "audio_length": audio_length, "video": video}
    model = keras.Model(
        {**inputs, "video_frame_mask": video_frame_mask, "presence": presence},
        {"embedding": embedding},
        name="padded_model",
    )
    embeddings = {
        # A dict of inputs, a list of inputs, and a waveform with no lengths.
        "audio": keras.Model({"audio": audio, "audio_length": audio_length}, audio_vector),
        "video": keras.Model([video, video_frame_mask], video_vector),
        "audio_unmarked": keras.Model(audio, MaskedWaveformMoments()(audio)),
    }
    return model, embeddings


def audio_reference(samples):
    samples = np.asarray(samples, "float64")
    if samples.size == 0:
        return np.zeros(2)
    return np.array([samples.mean(), (samples**2).mean()])


def video_reference(frames):
    frames = np.asarray(frames, "float64")
    if frames.shape[0] == 0:
        return np.zeros(3)
    return frames.mean(axis=(0, 1, 2)) / 255.0


def embedding_reference(clips, videos, presence):
    return np.stack(
        [
            np.concatenate([audio_reference(a) * p[0], video_reference(v) * p[1]])
            for a, v, p in zip(clips, videos, presence, strict=True)
        ]
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, embeddings = build()
    base = tmp_path_factory.mktemp("padded") / "model"
    folder = export_saved_model(model, str(base), embeddings=embeddings, verbose=False)
    return model, embeddings, folder


def padded_batch():
    """Inputs for 3 rows with garbage in the padding, and the valid parts of each row."""
    rng = np.random.default_rng(0)
    lengths = np.array([1000, 2500, 0], "int32")  # row 3: audio missing
    audio = rng.uniform(-1, 1, (3, 2500)).astype("float32")  # padding is not zero
    video = rng.integers(0, 256, (3, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 1, 0, 1, 0]], bool)
    presence = np.array([[1, 1], [1, 1], [0, 1]], "float32")
    inputs = {
        "audio": audio,
        "audio_length": lengths,
        "video": video,
        "video_frame_mask": mask,
        "presence": presence,
    }
    clips = [audio[i, : lengths[i]] for i in range(3)]
    videos = [video[i][mask[i]] for i in range(3)]
    return inputs, clips, videos


def served_inputs(inputs):
    return {
        "serving_default": inputs,
        "embed_audio": {k: inputs[k] for k in ("audio", "audio_length")},
        "embed_video": {k: inputs[k] for k in ("video", "video_frame_mask")},
    }


def check_outputs(outputs, clips, videos, presence):
    np.testing.assert_allclose(
        outputs["serving_default"]["embedding"],
        embedding_reference(clips, videos, presence),
        rtol=1e-5,
        atol=1e-6,
    )
    audio = np.stack([audio_reference(c) for c in clips])
    np.testing.assert_allclose(outputs["embed_audio"]["embedding"], audio, rtol=1e-5, atol=1e-6)
    video = np.stack([video_reference(v) for v in videos])
    np.testing.assert_allclose(outputs["embed_video"]["embedding"], video, rtol=1e-5, atol=1e-6)


def test_signatures_take_the_padding_and_the_description_lists_modalities(exported):
    model, _, folder = exported
    inputs, clips, videos = padded_batch()
    loaded = tf.saved_model.load(folder)
    assert set(loaded.signatures) == {
        "serving_default",
        "embed_audio",
        "embed_video",
        "embed_audio_unmarked",
    }
    outputs = {
        name: {k: v.numpy() for k, v in loaded.signatures[name](**feed).items()}
        for name, feed in served_inputs(inputs).items()
    }
    check_outputs(outputs, clips, videos, inputs["presence"])
    np.testing.assert_allclose(  # the Keras model agrees too
        model(inputs, training=False)["embedding"],
        outputs["serving_default"]["embedding"],
        rtol=0,
        atol=1e-6,
    )
    description = read_description(folder)
    assert description["modalities"] == ["audio", "video"]
    signatures = description["signatures"]
    assert signatures["embed_audio"]["inputs"] == {
        "audio": {"dtype": "float32", "shape": [None, None]},
        "audio_length": {"dtype": "int32", "shape": [None]},
    }
    assert signatures["embed_video"]["inputs"] == {
        "video": {"dtype": "uint8", "shape": [None, FRAMES, SIZE, SIZE, 3]},
        "video_frame_mask": {"dtype": "bool", "shape": [None, FRAMES]},
    }
    assert list(signatures["serving_default"]["inputs"]) == [
        "audio",
        "audio_length",
        "video",
        "video_frame_mask",
        "presence",
    ]
    with open(os.path.join(folder, "assets.extra", "mmrep.json")) as f:
        assert json.load(f)["modalities"] == ["audio", "video"]


@pytest.mark.slow  # fresh-process serving
def test_a_tensorflow_only_process_gives_the_formula(exported, tmp_path):
    _, _, folder = exported
    inputs, clips, videos = padded_batch()
    calls = {name: (name, feed) for name, feed in served_inputs(inputs).items()}
    outputs, info = run_signatures(folder, calls, tmp_path)
    assert info["mmrep_modules"] == []
    check_outputs(outputs, clips, videos, inputs["presence"])
    assert info["signatures"]["embed_audio"]["inputs"]["audio_length"] == {
        "dtype": "int32",
        "shape": [None],
    }


def test_padding_names_agree_with_from_manifest():
    assert length_key("speech") == "speech" + export_signatures.LENGTH_SUFFIX
    assert frame_mask_key("clip") == "clip" + export_signatures.FRAME_MASK_SUFFIX
    names = ["audio", "audio_length", "video", "video_frame_mask", "x_length", "presence"]
    assert export_signatures.modality_inputs(names, exclude=("presence",)) == [
        "audio",
        "video",
        "x_length",
    ]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Three rows: WAV files of 4000 and 6400 samples and an empty cell; MP4 videos of
    3, 7 and 4 frames. Returns the manifest and each row's samples and first frames."""
    folder = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(1)
    clips, videos, rows = [], [], []
    for i, (samples, frames) in enumerate([(4000, 3), (6400, 7), (0, 4)]):
        row = {"audio": "", "video": f"v{i}.mp4"}
        if samples:
            waveform = 0.5 * np.sin(np.arange(samples) * (0.01 + 0.02 * i))
            waveform += 0.05 * rng.standard_normal(samples)
            sf.write(folder / f"a{i}.wav", waveform, 16000, subtype="PCM_16")
            row["audio"] = f"a{i}.wav"
            clips.append(sf.read(folder / f"a{i}.wav", dtype="float64")[0])
        else:
            clips.append(np.zeros(0))
        y, x = np.mgrid[0:SIZE, 0:SIZE]
        pictures = np.stack(
            [
                np.stack([x * 15, y * 15, np.full_like(x, 40 * t + 30 * i)], -1)
                for t in range(frames)
            ]
        ).astype(np.uint8)
        write_video(pictures, folder / row["video"])
        videos.append(decode_all(folder / row["video"])[0][:FRAMES])
        rows.append(row)
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["audio", "video"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path), clips, videos


def test_embed_manifest_feeds_lengths_and_frame_masks(exported, manifest, tmp_path):
    _, _, folder = exported
    path, clips, videos = manifest
    assert [len(c) for c in clips] == [4000, 6400, 0]
    assert [len(v) for v in videos] == [3, FRAMES, 4]
    summary = embed_manifest(folder, path, str(tmp_path / "e.npy"), batch_size=3, verbose=False)
    assert summary["outputs"] == {"embedding": [3, 5]}
    presence = np.array([[1, 1], [1, 1], [0, 1]], "float32")
    expected = embedding_reference(clips, videos, presence)
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, rtol=1e-5, atol=1e-6)
    # The embedding signatures over the same manifest, the other column left unread.
    output = str(tmp_path / "v.npy")
    embed_manifest(folder, path, output, signature="embed_video", ignore=("audio",), verbose=False)
    video = np.stack([video_reference(v) for v in videos])
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), video, rtol=1e-5, atol=1e-6)
    audio_only = audio_manifest(path, tmp_path)
    embed_manifest(
        folder, audio_only, str(tmp_path / "a.npy"), signature="embed_audio", allow_outside=True
    )
    audio = np.stack([audio_reference(c) for c in clips[:2]])
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), audio, rtol=1e-5, atol=1e-6)


def audio_manifest(path, folder):
    """A manifest of the first two WAV files alone (absolute paths: `allow_outside=True`)."""
    files = [os.path.join(os.path.dirname(path), f"a{i}.wav") for i in (0, 1)]
    (folder / "audio.csv").write_text("audio\n" + "\n".join(files) + "\n")
    return str(folder / "audio.csv")


def test_open_length_without_lengths_takes_only_equal_clips(exported, manifest, tmp_path):
    _, _, folder = exported
    path, clips, _ = manifest
    audio_only, output = audio_manifest(path, tmp_path), str(tmp_path / "e.npy")
    signature = "embed_audio_unmarked"
    with pytest.raises(
        ServingError,
        match=r"audio.csv: rows \[1\] have audio clips of \[4000\] samples, shorter than the "
        r"longest clip of their batch \(6400\).*no padding input 'audio_length'.*batch_size=1",
    ):
        embed_manifest(
            folder, audio_only, output, signature=signature, verbose=False, allow_outside=True
        )
    assert not os.path.exists(output)
    embed_manifest(
        folder,
        audio_only,
        output,
        signature=signature,
        batch_size=1,
        verbose=False,
        allow_outside=True,
    )
    audio = np.stack([audio_reference(c) for c in clips[:2]])
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), audio, rtol=1e-5, atol=1e-6)


def test_export_refuses_what_is_not_one_modality_with_its_padding(tmp_path):
    audio = keras.Input((None,), name="audio")
    video = keras.Input((FRAMES, SIZE, SIZE, 3), dtype="uint8", name="video")
    moments = MaskedWaveformMoments()(audio)
    model = keras.Model({"audio": audio}, moments)
    base = str(tmp_path / "m")
    two = keras.Model({"audio": audio, "video": video}, moments)
    with pytest.raises(
        ValueError,
        match=r"embeddings\['pair'\].*one modality input, plus optionally its padding inputs "
        r"named after it: `<input>_length` \(integer \[B\]\) and `<input>_frame_mask` \(bool "
        r"\[B, T\]\).*2 inputs \['audio', 'video'\].*modality inputs \['audio', 'video'\]",
    ):
        export_saved_model(model, base, embeddings={"pair": two})
    float_length = keras.Input((), name="audio_length")
    with pytest.raises(
        ValueError,
        match=r"lengths 'audio_length' must be an integer vector \[B\]; received float32",
    ):
        export_saved_model(
            model, base, embeddings={"a": keras.Model([audio, float_length], moments)}
        )
    short_mask = keras.Input((FRAMES - 1,), dtype="bool", name="video_frame_mask")
    means = MaskedFrameMean()(video, short_mask)
    with pytest.raises(
        ValueError, match=r"frame mask 'video_frame_mask' has 4 frames, the input 5"
    ):
        export_saved_model(model, base, embeddings={"v": keras.Model([video, short_mask], means)})
    length = keras.Input((), dtype="int32", name="audio_length")
    padded = keras.Model({"audio": audio, "audio_length": length}, moments)
    with pytest.raises(ValueError, match=r"`modalities`.*\['audio', 'audio_length'\].*padding"):
        export_saved_model(padded, base, modalities=["audio", "audio_length"])
    assert not os.path.exists(base) or os.listdir(base) == []


def spec(shape, dtype="float32"):
    return tf.TensorSpec(shape, dtype)


def test_embed_manifest_refuses_padding_it_cannot_feed():
    waveform = spec((None, None))
    with pytest.raises(ServingError, match=r"'text_length' looks like the lengths of input 'text'"):
        plan_feeds({"text": spec((None,), "string"), "text_length": spec((None,), "int32")})
    with pytest.raises(
        ServingError,
        match=r"'audio_length' \(float32, .*\), the lengths of input 'audio', "
        r"should be an integer vector \[B\]",
    ):
        plan_feeds({"audio": waveform, "audio_length": spec((None,))})
    video = spec((None, 4, 8, 8, 3), "uint8")
    with pytest.raises(ServingError, match=r"should be a bool mask \[B, 4\]"):
        plan_feeds({"video": video, "video_frame_mask": spec((None, 3), "bool")})
    with pytest.raises(ServingError, match=r"'speech_length'.*is not something a manifest can"):
        plan_feeds({"audio": waveform, "speech_length": spec((None,), "int32")})
    plan = plan_feeds(
        {
            "audio": waveform,
            "audio_length": spec((None,), "int64"),
            "video": spec((None, None, 8, 8, 3), "uint8"),
            "presence": spec((None, 2)),
        },
        modalities=["audio", "audio_length", "video"],  # an older export's list
    )
    assert list(plan.kinds) == ["audio", "video"]
    assert plan.padding == {"audio_length": "audio"}
    assert plan.unmarked == ["video"]
    assert plan.audio_seconds is None and plan.video_frames is None
