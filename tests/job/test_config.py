"""The run config (`mmrep.job.config`): its schema, its defaults, its errors, its TOML.

Fast: no training, no model, no TensorFlow graph. The README's example config (the block
between `<!-- own-data-config -->` markers) is checked beside empty manifests with a
header; every error is checked for the four things its message must name: the file, the
dotted key, what was expected and what came.
"""

import os
import re
import unicodedata

import pytest
import tomllib

from mmrep.job import config as config_module
from mmrep.job.config import (
    ConfigError,
    builtin_config,
    check_config,
    config_to_toml,
    load_config,
    recheck,
    with_overrides,
)
from tests.job.own_data import readme_config

HF_ID = "sentence-transformers/all-MiniLM-L6-v2"
HEADER = "image,text,audio,video,label,source\n"


def write_manifests(folder, names=("train", "val", "test")):
    """Empty but valid manifests (a header, no rows) at folder/data/NAME.csv."""
    os.makedirs(os.path.join(folder, "data"), exist_ok=True)
    for name in names:
        with open(os.path.join(folder, "data", f"{name}.csv"), "w", encoding="utf-8") as f:
            f.write(HEADER)


def write_config(folder, text, name="config.toml"):
    """`text` as folder/NAME beside folder/data/{train,val,test}.csv; returns its path."""
    folder = str(folder)
    write_manifests(folder)
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The working directory: a folder with no manifests and no config in it."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return str(cwd)


@pytest.fixture
def readme_path(tmp_path, elsewhere):
    """The README's config at tmp_path/project/photos.toml, with its manifests."""
    return write_config(tmp_path / "project", readme_config(), "photos.toml")


def readme_expected(folder):
    data = os.path.join(folder, "data")
    return {
        "name": "photos",
        "task": "classification",
        "seed": 0,
        "data": {
            "train": os.path.join(data, "train.csv"),
            "validation": os.path.join(data, "val.csv"),
            "test": os.path.join(data, "test.csv"),
            "label": "label",
            "ignore": ["source"],
            "validation_fraction": 0.2,
            "root": None,
            "allow_outside": False,
        },
        "modalities": {
            "image": {
                "kind": "image",
                "encoder": "small_cnn",
                "weights": None,
                "image_size": 32,
                "pooling": "avg",
                "trainable": True,
                "trainable_blocks": None,
                "filters": None,
            },
            "text": {
                "kind": "text",
                "encoder": "bert",
                "weights": HF_ID,
                "sequence_length": 16,
                "pooling": "mean",
                "frozen_layers": 1,
                "trainable": True,
                "layers": None,
                "hidden_size": None,
                "heads": None,
                "vocabulary_size": None,
            },
            "audio": {
                "kind": "audio",
                "encoder": "vggish",
                "weights": None,
                "seconds": 2.0,
                "trainable": True,
                "conv_filters": [4, 8, 8, 8],
                "fc_units": [16],
                "embedding_dim": 16,
            },
            "video": {
                "kind": "video",
                "encoder": "frames",
                "frame_encoder": "image",
                "fps": 4.0,
                "num_frames": 4,
                "frame_size": 32,
                "sampling": "interval",
                "pooling": "mean",
                "frame": None,
            },
        },
        "fusion": {"kind": "concat", "dim": 32, "vector_dim": 32},
        "head": {"kind": "none"},
        "train": {
            "epochs": 6,
            "batch_size": 6,
            "learning_rate": 3e-3,
            "modality_dropout": 0.3,
            "precision": "float32",
            "jit_compile": False,
            "steps_per_epoch": None,
            "limit": None,
        },
        "export": {"enabled": True, "dir": os.path.join(folder, "saved_models")},
    }


# --- The README's config ---------------------------------------------------------------


def test_readme_config_checks_with_every_default(readme_path, elsewhere):
    folder = os.path.dirname(readme_path)
    config = load_config(readme_path)
    assert config == readme_expected(folder)
    assert list(config["modalities"]) == ["image", "text", "audio", "video"]
    # Paths: absolute, from the config's folder, not the working directory.
    for key in ("train", "validation", "test"):
        assert os.path.isabs(config["data"][key])
        assert config["data"][key].startswith(folder + os.sep)
        assert not config["data"][key].startswith(elsewhere)
    assert os.getcwd() == elsewhere


def test_readme_config_relative_path_given_to_load_config(tmp_path, elsewhere):
    # A config path relative to the working directory still resolves from its own folder.
    write_config(tmp_path / "elsewhere" / "sub", readme_config(), "photos.toml")
    config = load_config(os.path.join("sub", "photos.toml"))
    assert config["data"]["train"] == os.path.join(elsewhere, "sub", "data", "train.csv")


@pytest.mark.parametrize(
    ("weights", "make_folder", "expected"),
    [
        (HF_ID, False, HF_ID),  # a Hugging Face id: kept as given
        ("./models/minilm", False, "{folder}/models/minilm"),  # ./local: made absolute
        ("./models/../models/minilm", False, "{folder}/models/minilm"),  # normalised
        ("models/minilm", True, "{folder}/models/minilm"),  # an existing folder: a path
        ("models/minilm", False, "models/minilm"),  # no such folder: a name
    ],
)
def test_readme_config_weights_by_name_or_path(tmp_path, elsewhere, weights, make_folder, expected):
    folder = str(tmp_path / "project")
    text = readme_config().replace(f'weights = "{HF_ID}"', f'weights = "{weights}"')
    assert f'weights = "{weights}"' in text
    path = write_config(folder, text)
    if make_folder:
        os.makedirs(os.path.join(folder, "models", "minilm"))
    config = load_config(path)
    assert config["modalities"]["text"]["weights"] == expected.format(folder=folder)


def test_readme_config_with_no_such_manifest_is_refused(tmp_path, elsewhere):
    folder = str(tmp_path / "project")
    path = write_config(folder, readme_config())
    os.remove(os.path.join(folder, "data", "test.csv"))
    # The manifest exists relative to the working directory, but not to the config.
    write_manifests(elsewhere)
    missing = os.path.join(folder, "data", "test.csv")
    with pytest.raises(ConfigError, match=pieces(path, "`data.test`", "no manifest", missing)):
        load_config(path)


# --- Round trips ---------------------------------------------------------------------


def _video_own_frame(tmp_path):
    return {
        "name": "clips",
        "data": {"builtin": "mmdigits"},
        "modalities": {
            "text": {"sequence_length": 8},
            "clip": {
                "kind": "video",
                "num_frames": 6,
                "fps": 2.5,
                "pooling": "max",
                "frame": {"encoder": "small_cnn", "image_size": 16, "filters": [8, 16]},
            },
            "video": {"sampling": "first", "frame": {"encoder": "mobilenet_v3_small"}},
        },
        "fusion": {"kind": "bilinear", "dim": 16},
        "head": {"kind": "fisher"},
        "train": {"steps_per_epoch": 3, "limit": 50, "precision": "mixed_bfloat16"},
        "export": {"enabled": False, "dir": "exports"},
    }


def _video_image_frames(tmp_path):
    return {
        "data": {"builtin": "mmdigits"},
        "modalities": {
            "image": {"encoder": "mobilenet_v3_small", "weights": "imagenet", "image_size": 96},
            "video": {"frame_encoder": "image", "sampling": "uniform", "num_frames": 3},
        },
    }


def _retrieval(tmp_path):
    folder = str(tmp_path / "retrieval")
    write_manifests(folder, ("train",))
    return {
        "task": "retrieval",
        "seed": 2**31 - 1,  # the largest seed
        "data": {"train": os.path.join(folder, "data", "train.csv"), "ignore": []},
        "modalities": {
            "image": {"encoder": "small_cnn", "pooling": "max", "trainable_blocks": 0},
            "text": {"weights": "./tiny-bert", "trainable": False},
            "audio": {"seconds": 0.975, "weights": "https://tfhub.dev/google/vggish/1"},
        },
        "fusion": {"kind": "coordinated", "vector_dim": 8},
        "head": {"kind": "vae"},
        "train": {"learning_rate": 1, "jit_compile": True, "modality_dropout": 0.0},
    }


def _odd_strings(tmp_path):
    config = _retrieval(tmp_path)
    # A run name is a folder name (no "\\"); the backslash is in `data.ignore` below.
    config["name"] = 'a "quoted" run with\tcontrol\nchars, é and 😀'
    config["data"]["label"] = "étiquette"
    config["data"]["ignore"] = ["source", 'qu"ote', "back\\slash"]
    return config


MAPPINGS = {
    "video_own_frame": _video_own_frame,
    "video_image_frames": _video_image_frames,
    "retrieval": _retrieval,
    "odd_strings": _odd_strings,
}


def round_trip(config, root):
    text = config_to_toml(config)
    return check_config(tomllib.loads(text), source="round trip", root=root)


def test_round_trip_readme_config(readme_path, tmp_path):
    config = load_config(readme_path)
    assert round_trip(config, str(tmp_path)) == config
    # As the run folder keeps it: written elsewhere and loaded from there.
    run = tmp_path / "runs" / "photos"
    run.mkdir(parents=True)
    (run / "config.toml").write_text(config_to_toml(config), encoding="utf-8")
    assert load_config(str(run / "config.toml")) == config


def test_round_trip_builtin_config(tmp_path):
    config = builtin_config()
    text = config_to_toml(config)
    assert "[modalities.video.frame]" in text
    assert round_trip(config, str(tmp_path)) == config


@pytest.mark.parametrize("name", sorted(MAPPINGS))
def test_round_trip(name, tmp_path, elsewhere):
    config = check_config(MAPPINGS[name](tmp_path), root=str(tmp_path))
    text = config_to_toml(config)
    again = round_trip(config, str(tmp_path / "other"))
    assert again == config
    assert list(again["modalities"]) == list(config["modalities"])
    assert config_to_toml(again) == text


def test_round_trip_shapes_of_the_video_configs(tmp_path):
    own = check_config(_video_own_frame(tmp_path), root=str(tmp_path))
    assert list(own["modalities"]) == ["text", "video", "clip"]
    clip = own["modalities"]["clip"]
    assert (clip["kind"], clip["sampling"], clip["fps"]) == ("video", "interval", 2.5)
    assert clip["frame"]["filters"] == [8, 16] and clip["frame"]["image_size"] == 16
    assert own["modalities"]["video"]["frame"]["image_size"] == 224
    assert own["export"]["dir"] == os.path.join(str(tmp_path), "exports")
    assert own["name"] == "clips"
    shared = check_config(_video_image_frames(tmp_path), root=str(tmp_path))
    assert shared["modalities"]["video"]["frame"] is None
    assert shared["modalities"]["image"]["trainable"] is False  # weights: frozen by default
    assert "[modalities.video.frame]" not in config_to_toml(shared)
    retrieval = check_config(_retrieval(tmp_path), root=str(tmp_path))
    assert retrieval["data"]["label"] is None
    assert retrieval["train"]["learning_rate"] == 1.0
    assert isinstance(retrieval["train"]["learning_rate"], float)
    assert retrieval["modalities"]["text"]["weights"] == os.path.join(str(tmp_path), "tiny-bert")
    assert retrieval["name"] == "data_coordinated_vae"


def test_recheck_gives_back_a_checked_config(readme_path):
    config = load_config(readme_path)
    assert recheck(config) == config


# --- Errors ----------------------------------------------------------------------------


def pieces(*parts):
    """A regex matching the parts in this order (each literally), anywhere on one line."""
    return "^" + ".*".join(re.escape(str(p)) for p in parts)


def config_text(
    top="",
    data='train = "data/train.csv"',
    image='encoder = "small_cnn"',
    text="",
    more="",
):
    return (
        f"{top}\n[data]\n{data}\n\n[modalities.image]\n{image}\n\n"
        f"[modalities.text]\n{text}\n\n{more}\n"
    )


TAKES_TOP = "data, export, fusion, head, modalities, name, seed, task, train"
TAKES_IMAGE = "encoder, filters, image_size, pooling, trainable, trainable_blocks, weights"
# A modality table also takes `kind`.
TAKES_IMAGE_TABLE = (
    "encoder, filters, image_size, kind, pooling, trainable, trainable_blocks, weights"
)
FUSION_CHOICES = "'concat', 'bilinear', 'autoencoder', 'coordinated'"

# (id, config text, key, expected, what came); `{root}` is the config's folder.
ERRORS = [
    (
        "unknown top-level key",
        config_text(top='colour = "red"'),
        "unknown key `colour`",
        f"(this table takes: {TAKES_TOP})",
        "",
    ),
    (
        "unknown key in a modality table",
        config_text(image='encoder = "small_cnn"\nimage_sise = 32'),
        "unknown key `modalities.image.image_sise`",
        f"(this table takes: {TAKES_IMAGE_TABLE})",
        "",
    ),
    (
        "unknown key in a frame table",
        config_text(
            more='[modalities.video]\nsampling = "first"\n[modalities.video.frame]\nsize = 3'
        ),
        "unknown key `modalities.video.frame.size`",
        f"(this table takes: {TAKES_IMAGE})",
        "",
    ),
    (
        "unknown key in [train]",
        config_text(more="[train]\nepoch = 3"),
        "unknown key `train.epoch`",
        "(this table takes: batch_size, epochs, jit_compile, learning_rate, limit, "
        "modality_dropout, precision, steps_per_epoch)",
        "",
    ),
    (
        "string for an int",
        config_text(more='[train]\nepochs = "3"'),
        "`train.epochs`",
        "expected an integer.",
        "Received: '3'",
    ),
    (
        "bool for an int",
        config_text(text="sequence_length = true"),
        "`modalities.text.sequence_length`",
        "expected an integer.",
        "Received: True",
    ),
    (
        "string for a bool",
        config_text(more='[export]\nenabled = "yes"'),
        "`export.enabled`",
        "expected true or false.",
        "Received: 'yes'",
    ),
    (
        "zero batch size",
        config_text(more="[train]\nbatch_size = 0"),
        "`train.batch_size`",
        "expected an integer >= 1.",
        "Received: 0",
    ),
    (
        "negative fusion dim",
        config_text(more="[fusion]\ndim = -4"),
        "`fusion.dim`",
        "expected an integer >= 1.",
        "Received: -4",
    ),
    (
        "negative learning rate",
        config_text(more="[train]\nlearning_rate = -0.1"),
        "`train.learning_rate`",
        "expected a number >= 1e-12.",
        "Received: -0.1",
    ),
    (
        "zero fps",
        config_text(more="[modalities.video]\nfps = 0.0"),
        "`modalities.video.fps`",
        "expected a number >= 1e-06.",
        "Received: 0.0",
    ),
    (
        "validation fraction of one",
        config_text(data='train = "data/train.csv"\nvalidation_fraction = 1.0'),
        "`data.validation_fraction`",
        "expected a number < 1.0.",
        "Received: 1.0",
    ),
    (
        "empty filters",
        config_text(image='encoder = "small_cnn"\nfilters = []'),
        "`modalities.image.filters`",
        "expected a non-empty list of positive integers.",
        "Received: []",
    ),
    (
        "fusion kind sum",
        config_text(more='[fusion]\nkind = "sum"'),
        "`fusion.kind`",
        f"expected one of {FUSION_CHOICES}.",
        "Received: 'sum'",
    ),
    (
        "task ranking",
        config_text(top='task = "ranking"'),
        "`task`",
        "expected one of 'classification', 'retrieval', 'both'.",
        "Received: 'ranking'",
    ),
    (
        "head kind",
        config_text(more='[head]\nkind = "gan"'),
        "`head.kind`",
        "expected one of 'none', 'vae', 'fisher'.",
        "Received: 'gan'",
    ),
    (
        "missing data.train",
        config_text(data='label = "label"'),
        "`data.train`",
        "is required",
        "and missing",
    ),
    (
        "no [data] table",
        "[modalities.image]\n[modalities.text]\n",
        "`data.train`",
        "is required",
        "and missing",
    ),
    (
        "a manifest that does not exist",
        config_text(data='train = "data/train.csv"\nvalidation = "data/nope.csv"'),
        "`data.validation`",
        "no manifest file at",
        "'{root}/data/nope.csv'",
    ),
    (
        "one modality",
        '[data]\ntrain = "data/train.csv"\n[modalities.image]\n',
        "`modalities`",
        "expected two or more [modalities.<name>] tables.",
        "Received: ['image']",
    ),
    (
        "no modalities",
        '[data]\ntrain = "data/train.csv"\n',
        "`modalities`",
        "expected two or more [modalities.<name>] tables.",
        "Received: []",
    ),
    (
        "a modality that is not a table",
        '[data]\ntrain = "data/train.csv"\n[modalities]\nimage = 3\ntext = {}\n',
        "`modalities.image`",
        "expected a table.",
        "Received: 3",
    ),
    (
        "a table name that is not a kind",
        config_text(more="[modalities.photo]\nimage_size = 32"),
        "`modalities.photo.kind`",
        "expected one of image, text, audio, video (or a table named like one).",
        "Received: 'photo'",
    ),
    (
        "a kind that is not a kind",
        config_text(more='[modalities.depth]\nkind = "lidar"'),
        "`modalities.depth.kind`",
        "expected one of image, text, audio, video (or a table named like one).",
        "Received: 'lidar'",
    ),
    (
        "weights with layers",
        config_text(text=f'weights = "{HF_ID}"\nlayers = 4'),
        "`modalities.text.layers`",
        "expected no `layers` with `weights` (the checkpoint sets it).",
        "Received: 4",
    ),
    (
        "heads that do not divide hidden_size",
        config_text(text="hidden_size = 64\nheads = 3"),
        "`modalities.text.heads`",
        "expected a divisor of hidden_size=64.",
        "Received: 3",
    ),
    (
        "filters on mobilenet",
        config_text(image='encoder = "mobilenet_v3_small"\nfilters = [8, 16]'),
        "`modalities.image.filters`",
        "expected no `filters` (only small_cnn takes them).",
        "Received: [8, 16]",
    ),
    (
        "imagenet weights for small_cnn",
        config_text(image='encoder = "small_cnn"\nweights = "imagenet"'),
        "`modalities.image.weights`",
        "expected no ImageNet weights for small_cnn.",
        "Received: 'imagenet'",
    ),
    (
        "an image encoder that does not exist",
        config_text(image='encoder = "vgg99"'),
        "`modalities.image.encoder`",
        "expected one of ",
        "Received: 'vgg99'",
    ),
    (
        "audio conv_filters of three",
        config_text(more="[modalities.audio]\nconv_filters = [4, 8, 8]"),
        "`modalities.audio.conv_filters`",
        "expected 4 convolution widths.",
        "Received: [4, 8, 8]",
    ),
    (
        "frame_encoder image without an image modality",
        '[data]\ntrain = "data/train.csv"\n[modalities.text]\n'
        '[modalities.video]\nframe_encoder = "image"\n',
        "`modalities.video.frame_encoder`",
        "expected 'own' (there is no image modality to share).",
        "Received: 'image'",
    ),
    (
        "frame_encoder image with a frame table",
        config_text(
            more='[modalities.video]\nframe_encoder = "image"\n'
            '[modalities.video.frame]\nencoder = "small_cnn"'
        ),
        "`modalities.video.frame`",
        "expected no [frame] table with frame_encoder = 'image'.",
        "Received: 'a table'",
    ),
    (
        "interval sampling without fps",
        config_text(more='[modalities.video]\nsampling = "interval"'),
        "`modalities.video.fps`",
        "expected frames per second for sampling = 'interval'.",
        "Received: None",
    ),
    (
        "fps with uniform sampling",
        config_text(more='[modalities.video]\nsampling = "uniform"\nfps = 4.0'),
        "`modalities.video.sampling`",
        "expected 'interval' (the sampling that uses `fps`).",
        "Received: 'uniform'",
    ),
    (
        "retrieval with concat",
        config_text(top='task = "retrieval"', more='[fusion]\nkind = "concat"'),
        "`fusion.kind`",
        "task = 'retrieval' trains one embedding per modality against the others, "
        "which needs 'coordinated'.",
        "Received: 'concat'",
    ),
    (
        "both with bilinear",
        config_text(top='task = "both"', more='[fusion]\nkind = "bilinear"'),
        "`fusion.kind`",
        "task = 'both'",
        "needs 'coordinated'. Received: 'bilinear'",
    ),
    (
        "builtin data with train",
        config_text(data='builtin = "mmdigits"\ntrain = "data/train.csv"'),
        "`data.train`",
        "expected no `train` with builtin = 'mmdigits'.",
        "Received: 'data/train.csv'",
    ),
    (
        "builtin data that is not built in",
        config_text(data='builtin = "mnist"'),
        "`data.builtin`",
        "expected one of 'mmdigits'.",
        "Received: 'mnist'",
    ),
    (
        "[data] that is not a table",
        'data = "data/train.csv"\n[modalities.image]\n[modalities.text]\n',
        "`data`",
        "expected a table.",
        "Received: 'data/train.csv'",
    ),
    (
        "an empty name",
        config_text(top='name = ""'),
        "`name`",
        "expected a non-empty string.",
        "Received: ''",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "expected", "received"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_config_error_names_file_key_expected_and_received(
    tmp_path, elsewhere, text, key, expected, received
):
    folder = str(tmp_path / "project")
    path = write_config(folder, text)
    parts = [f"{path}: ", key, expected, received.format(root=folder)]
    with pytest.raises(ConfigError, match=pieces(*parts)) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


def test_config_error_from_a_mapping_names_its_source():
    mapping = {"data": {"builtin": "mmdigits"}, "modalities": {"image": {}, "text": {}}}
    mapping["train"] = {"epochs": 0}
    with pytest.raises(
        ConfigError, match=pieces("my source: ", "`train.epochs`", ">= 1", "Received: 0")
    ):
        check_config(mapping, source="my source")


def test_a_file_that_is_not_toml(tmp_path):
    path = write_config(tmp_path, "name = \n[[modalities\n")
    with pytest.raises(ConfigError, match=pieces(f"{path}: ", "not a TOML file", "line 1")):
        load_config(path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00name = 1")
    with pytest.raises(ConfigError, match=pieces(f"{binary}: ", "not a TOML file")):
        load_config(str(binary))


def test_a_missing_file(tmp_path):
    path = str(tmp_path / "nope.toml")
    with pytest.raises(FileNotFoundError, match=pieces("no config file at", repr(path))):
        load_config(path)
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path))  # a folder is not a config file


# --- with_overrides --------------------------------------------------------------------


def test_overrides_land_in_their_tables(readme_path, tmp_path, elsewhere):
    config = load_config(readme_path)
    before = config_to_toml(config)
    out = with_overrides(
        config,
        name="mine",
        seed=7,
        fusion="bilinear",
        head="vae",
        epochs=3,
        batch_size=8,
        learning_rate=0.01,
        precision="mixed_bfloat16",
        jit_compile=True,
        steps_per_epoch=5,
        limit=100,
        export=False,
        export_dir="exports",
    )
    assert out["name"] == "mine" and out["seed"] == 7
    assert out["fusion"] == {"kind": "bilinear", "dim": 32, "vector_dim": 32}
    assert out["head"] == {"kind": "vae"}
    assert out["train"] == {
        "epochs": 3,
        "batch_size": 8,
        "learning_rate": 0.01,
        "modality_dropout": 0.3,
        "precision": "mixed_bfloat16",
        "jit_compile": True,
        "steps_per_epoch": 5,
        "limit": 100,
    }
    # A command-line folder is relative to the working directory.
    assert out["export"] == {"enabled": False, "dir": os.path.join(elsewhere, "exports")}
    # Everything else as it was, and the config given is left as it was.
    for key in ("task", "data", "modalities"):
        assert out[key] == config[key]
    assert config_to_toml(config) == before


def test_overrides_of_none_leave_the_values(readme_path):
    config = load_config(readme_path)
    nones = dict.fromkeys(
        (
            "name",
            "seed",
            "fusion",
            "head",
            "epochs",
            "batch_size",
            "learning_rate",
            "precision",
            "jit_compile",
            "steps_per_epoch",
            "limit",
            "export",
            "export_dir",
        )
    )
    assert with_overrides(config, **nones) == config
    assert with_overrides(config) == config


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"fusion": "bilinear"}, "data_bilinear"),
        ({"head": "fisher"}, "data_concat_fisher"),
        ({"fusion": "autoencoder", "head": "vae"}, "data_autoencoder_vae"),
        ({"head": "none"}, "data_concat"),
        ({"fusion": "bilinear", "name": "mine"}, "mine"),
        ({"head": "vae", "name": "mine"}, "mine"),
        ({"fusion": "bilinear", "name": None}, "data_bilinear"),
        ({"fusion": None, "head": None}, "photos"),
        ({"epochs": 2}, "photos"),
        ({"name": "mine"}, "mine"),
    ],
)
def test_fusion_and_head_overrides_rename_the_run_unless_named(readme_path, overrides, name):
    assert with_overrides(load_config(readme_path), **overrides)["name"] == name


def test_an_unknown_override_is_a_type_error(readme_path):
    config = load_config(readme_path)
    with pytest.raises(TypeError, match="unknown override 'colour'"):
        with_overrides(config, colour="red")
    with pytest.raises(TypeError, match="unknown override 'colour'"):
        with_overrides(config, colour=None)


@pytest.mark.parametrize(
    ("overrides", "key", "expected", "received"),
    [
        ({"epochs": 0}, "`train.epochs`", "an integer >= 1", "Received: 0"),
        ({"batch_size": -1}, "`train.batch_size`", "an integer >= 1", "Received: -1"),
        ({"precision": "float8"}, "`train.precision`", "one of 'float32'", "'float8'"),
        ({"fusion": "sum"}, "`fusion.kind`", "one of 'concat'", "Received: 'sum'"),
        ({"name": ""}, "`name`", "a non-empty string", "Received: ''"),
    ],
)
def test_overrides_are_checked_again(readme_path, overrides, key, expected, received):
    config = load_config(readme_path)
    match = pieces("the command line's config: ", key, expected, received)
    with pytest.raises(ConfigError, match=match):
        with_overrides(config, **overrides)


def test_a_fusion_override_is_checked_against_the_task(tmp_path):
    config = check_config(_retrieval(tmp_path))
    with pytest.raises(
        ConfigError,
        match=pieces(
            "the command line's config: ", "`fusion.kind`", "needs 'coordinated'", "'concat'"
        ),
    ):
        with_overrides(config, fusion="concat")


# --- The built-in config ---------------------------------------------------------------


def test_builtin_config_is_the_mmdigits_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = builtin_config()
    assert config == builtin_config("mmdigits")
    assert list(config["modalities"]) == ["image", "text", "audio", "video"]
    assert [t["kind"] for t in config["modalities"].values()] == list(config["modalities"])
    assert config["name"] == "mmdigits_coordinated"
    # Classification (the coordinated fusion trains its pair losses as well), so that
    # every --fusion overrides it.
    assert config["task"] == "classification"
    assert config["data"] == {"builtin": "mmdigits"}
    assert config["fusion"]["kind"] == "coordinated"
    assert config["head"] == {"kind": "none"}
    assert config["train"]["epochs"] == 20
    assert config["train"]["batch_size"] == 64
    assert config["export"] == {"enabled": True, "dir": os.path.join(str(tmp_path), "saved_models")}
    # Small encoders trained from scratch: no weights anywhere.
    assert all(t.get("weights") is None for t in config["modalities"].values())
    assert config["modalities"]["video"]["frame_encoder"] == "own"
    assert config["modalities"]["video"]["frame"]["encoder"] == "small_cnn"


def test_builtin_config_of_another_data_set_is_refused():
    with pytest.raises(ConfigError, match=pieces("no built-in config 'mnist'", "mmdigits")):
        builtin_config("mnist")


# --- The command -----------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    import mmrep.job

    def train_run(*args, **kwargs):
        raise AssertionError("the command trained")

    monkeypatch.setattr(mmrep.job, "train_run", train_run)


def test_cli_train_with_a_bad_config(tmp_path, capsys, no_training):
    from mmrep.cli import main

    path = write_config(tmp_path, config_text(more='[train]\nepochs = "many"'))
    with pytest.raises(SystemExit) as caught:
        main(["train", "--config", path])
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mmrep train: error: ")
    assert re.search(
        pieces(path, "`train.epochs`", "an integer", "Received: 'many'"), lines[0][20:]
    )


def test_cli_train_with_a_missing_config(tmp_path, capsys, no_training):
    from mmrep.cli import main

    path = str(tmp_path / "nope.toml")
    with pytest.raises(SystemExit) as caught:
        main(["train", "--config", path])
    assert caught.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmrep train: error: no config file at")


def test_cli_print_config_with_an_override(tmp_path, monkeypatch, capsys, no_training):
    from mmrep.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--print-config", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    mapping = tomllib.loads(out)
    assert mapping["train"]["epochs"] == 3
    assert check_config(mapping) == with_overrides(builtin_config(), epochs=3)
    assert not os.listdir(tmp_path)  # nothing written: no run folder, no export


def test_cli_print_config_of_a_file(readme_path, capsys, no_training):
    from mmrep.cli import main

    assert main(["train", "--config", readme_path, "--print-config", "--head", "vae"]) == 0
    config = check_config(tomllib.loads(capsys.readouterr().out))
    assert config == with_overrides(load_config(readme_path), head="vae")
    assert config["name"] == "data_concat_vae"


# --- Bugs found while writing these tests, fixed ------------------------------------


def test_cli_fusion_choices_work_on_the_builtin_job(capsys, no_training):
    # Every --fusion the command offers overrides the built-in (classification) job.
    from mmrep.cli import main
    from mmrep.job import FUSIONS

    for fusion in FUSIONS:
        assert main(["train", "--fusion", fusion, "--print-config"]) == 0
        mapping = tomllib.loads(capsys.readouterr().out)
        assert mapping["fusion"]["kind"] == fusion
        assert mapping["name"] == f"mmdigits_{fusion}"


def test_frame_encoder_image_shares_an_image_kind_table():
    config = check_config(
        {
            "data": {"builtin": "mmdigits"},
            "modalities": {
                "photo": {"kind": "image", "encoder": "small_cnn"},
                "video": {"frame_encoder": "image"},
            },
        }
    )
    assert config["modalities"]["video"]["frame_encoder"] == "image"


def test_frame_encoder_image_needs_an_image_kind():
    with pytest.raises(ConfigError, match="frame_encoder"):
        check_config(
            {
                "data": {"builtin": "mmdigits"},
                "modalities": {
                    "image": {"kind": "text"},
                    "clip": {"kind": "video", "frame_encoder": "image"},
                },
            }
        )


@pytest.mark.parametrize("name", ["depth map", "depth.map", "tiefe_ü", "1st"])
def test_a_modality_name_that_cannot_name_an_input_is_refused(name):
    with pytest.raises(ConfigError, match=r"ASCII letters, digits and underscores"):
        check_config(
            {
                "data": {"builtin": "mmdigits"},
                "modalities": {name: {"kind": "image", "encoder": "small_cnn"}, "text": {}},
            }
        )


def test_round_trip_of_astral_printable_characters():
    name = "run 😀 𝔘"
    assert name.isprintable()
    config = check_config(
        {"name": name, "data": {"builtin": "mmdigits"}, "modalities": {"image": {}, "text": {}}}
    )
    assert round_trip(config, ".")["name"] == name


def test_round_trip_of_an_astral_non_printable_character():
    name = "run\U000e0001x"
    assert unicodedata.category(name[3]) == "Cf" and not name.isprintable()
    config = check_config(
        {"name": name, "data": {"builtin": "mmdigits"}, "modalities": {"image": {}, "text": {}}}
    )
    assert round_trip(config, ".")["name"] == name


def test_unknown_key_message_of_a_modality_table_lists_kind():
    mapping = {
        "data": {"builtin": "mmdigits"},
        "modalities": {"image": {"encoder": "small_cnn", "colour": 1}, "text": {}},
    }
    with pytest.raises(ConfigError, match=r"this table takes: [^)]*\bkind\b"):
        check_config(mapping)


def test_module_names_are_the_documented_ones():
    # The schema's choices, as the README lists them.
    assert config_module.TASKS == ("classification", "retrieval", "both")
    assert config_module.HEAD_KINDS == ("none", "vae", "fisher")
    assert config_module.VIDEO_SAMPLINGS == ("first", "uniform", "interval")
    assert config_module.IMAGE_POOLINGS == ("avg", "max", "flatten")
