"""The feature cache against the encoders applied directly, and its interruption and resume."""

import glob
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.data.feature_cache import cache_features, load_features, load_features_numpy

N = 50
RNG = np.random.default_rng(11)
IMAGE = RNG.standard_normal((N, 4, 4, 3)).astype("float32")
AUDIO = RNG.standard_normal((N, 16)).astype("float32")
TEXT = np.array([f"example {i}" + "!" * (i % 7) for i in range(N)], dtype=object)
LABEL = RNG.integers(0, 10, N).astype("int32")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_dataset():
    return tf.data.Dataset.from_tensor_slices(
        {"image": IMAGE, "audio": AUDIO, "text": TEXT.astype(bytes), "label": LABEL}
    )


def audio_reference(audio):
    """float64 numpy: per-clip mean, standard deviation and peak."""
    audio = np.asarray(audio, "float64")
    return np.stack([audio.mean(1), audio.std(1), np.abs(audio).max(1)], axis=1)


class AudioEncoder:
    """The audio summary in float32; records the rows it sees, and can fail or be killed.

    With `watch`, it also records the files in that directory when it is first called.
    """

    def __init__(self, fail_on_call=None, kill_on_call=None, watch=None):
        self.calls, self.rows, self.files_at_start = 0, [], None
        self.fail_on_call, self.kill_on_call, self.watch = fail_on_call, kill_on_call, watch

    def __call__(self, audio):
        self.calls += 1
        if self.calls == 1 and self.watch is not None:
            self.files_at_start = files(self.watch)
        if self.calls == self.fail_on_call:
            raise RuntimeError("encoder crashed")
        if self.calls == self.kill_on_call:
            os.kill(os.getpid(), signal.SIGKILL)
        audio = np.asarray(audio)
        self.rows.append(audio.copy())
        return audio_reference(audio).astype("float32")

    def seen(self):
        return np.concatenate(self.rows) if self.rows else np.zeros((0, 16), "float32")


def image_model():
    return keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(5)])


def image_reference(model):
    kernel, bias = (w.astype("float64") for w in model.layers[-1].get_weights())
    return IMAGE.reshape(N, -1).astype("float64") @ kernel + bias


def encoders(model, audio_encoder):
    return {"image_features": ("image", model), "audio": audio_encoder}


def run(directory, model, audio_encoder, **kwargs):
    kwargs = {"shard_size": 16, "batch_size": 12, "keep": ("label", "text"), **kwargs}
    kwargs.setdefault("progress", False)
    return cache_features(make_dataset(), encoders(model, audio_encoder), directory, **kwargs)


def files(directory):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(directory, "*")))


def meta(directory):
    with open(os.path.join(directory, "cache.json")) as f:
        return json.load(f)


def assert_matches_reference(directory, model):
    arrays = load_features_numpy(directory)
    assert sorted(arrays) == ["audio", "image_features", "label", "text"]
    np.testing.assert_allclose(
        arrays["image_features"], image_reference(model), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(arrays["audio"], audio_reference(AUDIO), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(arrays["label"], LABEL)
    assert [t.decode() for t in arrays["text"]] == list(TEXT)
    return arrays


def test_features_equal_the_encoders_applied_directly(tmp_path):
    model = image_model()
    directory = str(tmp_path / "cache")
    assert run(directory, model, AudioEncoder()) == directory
    assert_matches_reference(directory, model)
    dataset = load_features(directory)
    assert int(dataset.cardinality()) == N
    assert dataset.element_spec == {
        "image_features": tf.TensorSpec((5,), tf.float32),
        "audio": tf.TensorSpec((3,), tf.float32),
        "label": tf.TensorSpec((), tf.int32),
        "text": tf.TensorSpec((), tf.string),
    }
    labels = [int(example["label"]) for example in dataset]
    assert labels == LABEL.tolist()


@pytest.mark.parametrize(
    ("shard_size", "batch_size", "sizes"),
    [(16, 12, [16, 16, 16, 2]), (7, 64, [7] * 7 + [1]), (50, 8, [50]), (100, 12, [50])],
)
def test_shards_hold_exactly_shard_size_examples(tmp_path, shard_size, batch_size, sizes):
    model = image_model()
    run(tmp_path, model, AudioEncoder(), shard_size=shard_size, batch_size=batch_size)
    shards = [f"shard-{i:05d}.tfrecord" for i in range(len(sizes))]
    assert files(tmp_path) == ["cache.json", *shards]
    counts = [sum(1 for _ in tf.data.TFRecordDataset(str(tmp_path / s))) for s in shards]
    assert counts == sizes
    info = meta(tmp_path)
    assert info["complete"] is True and info["num_examples"] == N
    assert info["shard_size"] == shard_size
    assert info["shards"] == [
        {"file": s, "num_examples": c} for s, c in zip(shards, sizes, strict=True)
    ]
    assert info["features"]["image_features"] == {"dtype": "float32", "shape": [5]}
    assert info["features"]["text"] == {"dtype": "string", "shape": []}
    assert_matches_reference(tmp_path, model)


def test_records_are_examples_of_serialized_tensors(tmp_path):
    # Read the second shard without load_features: tf.train.Example + tf.io.parse_tensor.
    run(tmp_path, image_model(), AudioEncoder())
    records = list(tf.data.TFRecordDataset(str(tmp_path / "shard-00001.tfrecord")))
    for i, record in enumerate(records, start=16):
        example = tf.train.Example.FromString(record.numpy())
        value = example.features.feature["audio"].bytes_list.value[0]
        audio = tf.io.parse_tensor(value, tf.float32).numpy()
        np.testing.assert_allclose(audio, audio_reference(AUDIO[i : i + 1])[0], rtol=1e-6)
        label = example.features.feature["label"].bytes_list.value[0]
        assert tf.io.parse_tensor(label, tf.int32).numpy() == LABEL[i]


def test_interrupted_run_keeps_complete_shards_and_resume_encodes_only_the_rest(tmp_path, capsys):
    model = image_model()
    # Batches of 12 against shards of 16: calls 1-3 cover examples 0-35, so shards 0 and 1
    # are complete and 4 examples of shard 2 are in flight when call 4 raises.
    with pytest.raises(RuntimeError, match=r"encoder crashed"):
        run(tmp_path, model, AudioEncoder(fail_on_call=4))
    assert files(tmp_path) == ["cache.json", "shard-00000.tfrecord", "shard-00001.tfrecord"]
    info = meta(tmp_path)
    assert info["complete"] is False and info["num_examples"] == 32
    with pytest.raises(ValueError, match=r"incomplete cache.*run cache_features again"):
        load_features(tmp_path)

    counting = AudioEncoder()
    run(tmp_path, model, counting, progress=True)
    np.testing.assert_array_equal(counting.seen(), AUDIO[32:])
    assert "resuming: 2 of 4 shards already cached (32 examples)" in capsys.readouterr().out
    resumed = assert_matches_reference(tmp_path, model)

    fresh = load_features_numpy(run(tmp_path / "fresh", model, AudioEncoder()))
    for name in ("audio", "label", "text"):
        np.testing.assert_array_equal(resumed[name], fresh[name])
    np.testing.assert_allclose(resumed["image_features"], fresh["image_features"], rtol=1e-6)


@pytest.mark.slow  # kill and resume
def test_killed_run_leaves_a_tmp_shard_that_resume_discards(tmp_path):
    directory = str(tmp_path / "cache")
    script = (
        "import tensorflow as tf\n"
        "from mmrep.data.feature_cache import cache_features\n"
        "from tests.data.test_feature_cache import AudioEncoder, make_dataset\n"
        "cache_features(make_dataset(), {'audio': AudioEncoder(kill_on_call=4)}, "
        f"{directory!r}, shard_size=16, batch_size=12, progress=False)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, timeout=300)
    assert result.returncode == -signal.SIGKILL
    assert "shard-00002.tfrecord.tmp" in files(directory)
    assert meta(directory)["num_examples"] == 32

    counting = AudioEncoder()
    cache_features(
        make_dataset(), {"audio": counting}, directory, shard_size=16, batch_size=12, progress=False
    )
    np.testing.assert_array_equal(counting.seen(), AUDIO[32:])
    assert not [f for f in files(directory) if f.endswith(".tmp")]
    arrays = load_features_numpy(directory)
    np.testing.assert_allclose(arrays["audio"], audio_reference(AUDIO), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(arrays["label"], LABEL)


def test_shard_renamed_but_not_recorded_is_written_again(tmp_path, monkeypatch):
    # Interrupt between a shard's rename and the cache.json update that records it.
    real_replace, meta_writes = os.replace, []

    def replace(src, dst):
        if str(dst).endswith("cache.json"):
            meta_writes.append(dst)
            if len(meta_writes) == 3:  # 1: the empty cache, 2: shard 0, 3: shard 1
                raise KeyboardInterrupt
        real_replace(src, dst)

    model = image_model()
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, model, AudioEncoder())
    monkeypatch.undo()
    assert "shard-00001.tfrecord" in files(tmp_path)
    assert meta(tmp_path)["num_examples"] == 16

    counting = AudioEncoder(watch=tmp_path)
    run(tmp_path, model, counting)
    np.testing.assert_array_equal(counting.seen(), AUDIO[16:])
    # The unrecorded shard is gone before encoding starts, along with the cache.json.tmp.
    assert counting.files_at_start == ["cache.json", "shard-00000.tfrecord"]
    assert files(tmp_path) == ["cache.json"] + [f"shard-{i:05d}.tfrecord" for i in range(4)]
    assert_matches_reference(tmp_path, model)


def test_finished_cache_is_not_recomputed_nor_read(tmp_path):
    reads = []

    def examples():
        for i in range(N):
            reads.append(i)
            yield {"audio": AUDIO[i], "label": LABEL[i]}

    signature = {"audio": tf.TensorSpec((16,), tf.float32), "label": tf.TensorSpec((), tf.int32)}
    dataset = tf.data.Dataset.from_generator(examples, output_signature=signature)
    cache_features(dataset, {"audio": AudioEncoder()}, tmp_path, shard_size=16, progress=False)
    assert len(reads) == N
    before = {f: (tmp_path / f).read_bytes() for f in files(tmp_path)}
    counting = AudioEncoder()
    reads.clear()
    path = cache_features(dataset, {"audio": counting}, tmp_path, shard_size=16, progress=False)
    assert path == str(tmp_path)
    assert counting.calls == 0 and reads == []
    assert {f: (tmp_path / f).read_bytes() for f in files(tmp_path)} == before


def test_rebuilt_model_of_the_same_architecture_resumes(tmp_path):
    # A second Sequential gets auto-names sequential_1/dense_1: still the same configuration.
    model = image_model()
    with pytest.raises(RuntimeError):
        run(tmp_path, model, AudioEncoder(fail_on_call=3))
    rebuilt = image_model()
    rebuilt.set_weights(model.get_weights())
    counting = AudioEncoder()
    run(tmp_path, rebuilt, counting)
    np.testing.assert_array_equal(counting.seen(), AUDIO[16:])
    assert_matches_reference(tmp_path, model)


def other_dense():
    return keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(6)])


@pytest.mark.parametrize(
    ("change", "kwargs"),
    [
        ("shard_size 16 -> 8", {"shard_size": 8}),
        (r"keep \['label', 'text'\] -> \['label'\]", {"keep": ("label",)}),
        ("output 'image_features'", {"model": other_dense}),
        ("output 'audio'", {"audio": lambda x: audio_reference(x).astype("float32")}),
    ],
)
@pytest.mark.parametrize("finished", [False, True])
def test_other_configuration_raises_until_overwrite(tmp_path, change, kwargs, finished):
    model = image_model()
    if finished:
        run(tmp_path, model, AudioEncoder())
    else:
        with pytest.raises(RuntimeError):
            run(tmp_path, model, AudioEncoder(fail_on_call=3))
    kwargs = dict(kwargs)
    model = kwargs.pop("model", lambda: model)()
    audio = kwargs.pop("audio", AudioEncoder())
    with pytest.raises(ValueError, match=rf"Received: other {change}\. Pass overwrite=True"):
        run(tmp_path, model, audio, **kwargs)

    counting = AudioEncoder()
    run(tmp_path, model, counting, overwrite=True, **kwargs)
    np.testing.assert_array_equal(counting.seen(), AUDIO)
    arrays = load_features_numpy(tmp_path)
    np.testing.assert_allclose(
        arrays["image_features"], image_reference(model), rtol=1e-5, atol=1e-6
    )
    shard_size = kwargs.get("shard_size", 16)
    assert len(glob.glob(str(tmp_path / "shard-*.tfrecord"))) == -(-N // shard_size)


def test_stale_tmp_files_are_removed(tmp_path):
    (tmp_path / "shard-00000.tfrecord.tmp").write_bytes(b"half a record")
    (tmp_path / "shard-00009.tfrecord.tmp").write_bytes(b"from a longer data set")
    (tmp_path / "cache.json.tmp").write_text("{")
    model = image_model()
    watching = AudioEncoder(watch=tmp_path)
    run(tmp_path, model, watching)
    assert watching.files_at_start == ["cache.json"]
    assert files(tmp_path) == ["cache.json"] + [f"shard-{i:05d}.tfrecord" for i in range(4)]
    assert_matches_reference(tmp_path, model)


def test_shard_files_without_cache_json_are_refused(tmp_path):
    (tmp_path / "shard-00000.tfrecord").write_bytes(b"")
    with pytest.raises(ValueError, match=r"without cache\.json.*overwrite=True"):
        run(tmp_path, image_model(), AudioEncoder())


def test_load_features_needs_a_complete_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"without cache\.json"):
        load_features(tmp_path / "missing")
    with pytest.raises(RuntimeError):
        run(tmp_path, image_model(), AudioEncoder(fail_on_call=1))
    with pytest.raises(ValueError, match=r"incomplete cache \(0 shards, 0 examples"):
        load_features_numpy(tmp_path)


def test_unknown_cardinality_tf_function_and_string_input(tmp_path, capsys):
    dataset = make_dataset().filter(lambda example: example["label"] >= 0)
    assert int(dataset.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    length = tf.function(tf.strings.length)
    cache_features(dataset, {"text_length": ("text", length)}, tmp_path, shard_size=20)
    assert "example" in capsys.readouterr().out  # the progress bar counts examples
    arrays = load_features_numpy(tmp_path)
    assert arrays["text_length"].tolist() == [len(t) for t in TEXT]
    np.testing.assert_array_equal(arrays["label"], LABEL)


def test_batch_with_another_shape_raises(tmp_path):
    def ragged(audio):
        # The last batch (2 examples) gets 4 features instead of 3.
        return np.zeros((len(audio), 3 if len(audio) == 12 else 4), "float32")

    with pytest.raises(ValueError, match=r"first one's per-example specs.*starting at example 48"):
        run(tmp_path, image_model(), ragged)
    assert meta(tmp_path)["num_examples"] == 48


def test_encoder_output_without_the_batch_dimension_raises(tmp_path):
    with pytest.raises(ValueError, match=r"encoder 'audio'.*batch 12.*shape \(3,\)"):
        run(tmp_path, image_model(), lambda audio: np.zeros(3, "float32"))


def test_other_dataset_for_a_finished_cache_raises(tmp_path):
    model = image_model()
    run(tmp_path, model, AudioEncoder())
    with pytest.raises(ValueError, match=r"50 examples cached.*dataset of 40 examples"):
        cache_features(
            make_dataset().take(40),
            encoders(model, AudioEncoder()),
            tmp_path,
            shard_size=16,
            keep=("label", "text"),
            progress=False,
        )


@pytest.mark.parametrize(
    ("encoders_", "kwargs", "error", "match"),
    [
        (
            {"video": np.abs},
            {},
            ValueError,
            r"input key of output 'video'.*\['audio', 'image', 'label', 'text'\].*'video'",
        ),
        ({"emb": ("pixels", np.abs)}, {}, ValueError, r"\['audio', 'image', 'label', 'text'\]"),
        ({"audio": "not callable"}, {}, TypeError, "output 'audio' to be callable"),
        ({"audio": ("audio", 3)}, {}, TypeError, "output 'audio' to be callable"),
        ({"label": ("audio", np.abs)}, {}, ValueError, "distinct from the `keep` keys"),
        ({"audio": np.abs}, {"keep": ("label", "id")}, ValueError, r"keep=\['label', 'id'\]"),
        ({}, {}, TypeError, "non-empty dict"),
        ({"audio": np.abs}, {"shard_size": 0}, ValueError, "shard_size=0"),
        ({"audio": np.abs}, {"batch_size": 2.5}, ValueError, "batch_size=2.5"),
    ],
)
def test_bad_arguments_are_named(tmp_path, encoders_, kwargs, error, match):
    with pytest.raises(error, match=match):
        cache_features(make_dataset(), encoders_, tmp_path, progress=False, **kwargs)
    assert files(tmp_path) == []


def test_dataset_of_non_dict_examples_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"dict examples.*TensorSpec"):
        cache_features(tf.data.Dataset.from_tensor_slices(AUDIO), {"audio": np.abs}, tmp_path)
