"""RunData reads labels as `from_manifest` does, so every example finds its class."""

import json

import numpy as np

from mmrep.job import load_config
from mmrep.job.data import RunData
from tests.export.embed_data import png_bytes

CONFIG = """
name = "labels"
task = "classification"

[data]
train = "train.jsonl"
validation = "validation.jsonl"

[modalities.image]
encoder = "small_cnn"
image_size = 8

[modalities.text]
encoder = "bert"
sequence_length = 8
"""


def test_zero_padded_and_float_labels_find_their_class(tmp_path):
    rng = np.random.default_rng(0)
    labels = {"train": ["007", 8, "007", 8.0], "validation": [7, "8"]}
    for split, values in labels.items():
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for i, label in enumerate(values):
                name = f"{split}{i}.png"
                (tmp_path / name).write_bytes(png_bytes(rng.integers(0, 256, (8, 8, 3), "uint8")))
                f.write(json.dumps({"image": name, "text": f"caption {i}", "label": label}) + "\n")
    (tmp_path / "run.toml").write_text(CONFIG)
    data = RunData(load_config(str(tmp_path / "run.toml")))
    assert data.classes == ["7", "8"]
    for split, expected in (("train", [0, 1, 0, 1]), ("validation", [0, 1])):
        got = [int(e["label"]) for e in data.examples(split)]
        assert got == expected, split


def test_paths_outside_the_manifest_folder_need_root_or_allow_outside(tmp_path):
    import pytest

    from mmrep.data.manifest import ManifestError
    from mmrep.job import ConfigError

    shared = tmp_path / "shared"
    shared.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        (shared / f"{i}.png").write_bytes(png_bytes(rng.integers(0, 256, (8, 8, 3), "uint8")))
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation"):
        with open(data / f"{split}.jsonl", "w") as f:
            for i in range(4):
                row = {"image": f"../shared/{i}.png", "text": "a caption", "label": i % 2}
                f.write(json.dumps(row) + "\n")
    config = CONFIG.replace('"train.jsonl"', '"data/train.jsonl"').replace(
        '"validation.jsonl"', '"data/validation.jsonl"'
    )
    for extra, outcome in (
        ("", "refused"),
        ('root = "."', "read"),
        ("allow_outside = true", "read"),
        ('root = "."\nallow_outside = true', "config error"),
    ):
        (tmp_path / "run.toml").write_text(config.replace("[data]", f"[data]\n{extra}"))
        if outcome == "config error":
            with pytest.raises(ConfigError, match="not both"):
                load_config(str(tmp_path / "run.toml"))
            continue
        run = RunData(load_config(str(tmp_path / "run.toml")))
        if outcome == "refused":
            with pytest.raises(Exception, match="outside"):
                list(run.examples("train"))
        else:
            assert [int(e["label"]) for e in run.examples("train")] == [0, 1, 0, 1]
    assert ManifestError  # the refusal is a ManifestError raised while iterating


def test_an_image_corrupt_inside_is_named_by_row(tmp_path, capsys):
    """The graph's decoder fails without a row; the job names the row, the CLI exits 2."""
    import pytest

    from mmrep.cli import main
    from mmrep.data import from_manifest, undecodable_images
    from tests.export.embed_data import corrupt_inside

    rng = np.random.default_rng(2)
    for split in ("train", "validation"):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for i in range(4):
                name = f"{split}{i}.png"
                data = png_bytes(rng.integers(0, 256, (8, 8, 3), "uint8"))
                if (split, i) == ("train", 2):
                    data = corrupt_inside(data)
                (tmp_path / name).write_bytes(data)
                f.write(json.dumps({"image": name, "text": "a caption", "label": i % 2}) + "\n")
    train = str(tmp_path / "train.jsonl")
    with pytest.raises(Exception, match="PNG") as error:
        list(from_manifest(train, image_size=8))
    assert "row 3" not in str(error.value)  # the graph does not know the row...
    (bad,) = undecodable_images(train)  # ...this does
    assert (bad["row"], bad["column"], bad["file"]) == (3, "image", "train2.png")
    config = CONFIG + "\n[train]\nepochs = 1\nbatch_size = 2\n\n[export]\nenabled = false\n"
    (tmp_path / "run.toml").write_text(config)
    arguments = ["train", "--config", str(tmp_path / "run.toml"), "--runs-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        main(arguments)
    assert exit_.value.code == 2
    message = capsys.readouterr().err
    assert "row 3, image file 'train2.png'" in message and "Traceback" not in message
    assert not (tmp_path / "labels").exists()
