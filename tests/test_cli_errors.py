"""The `mmrep` command on a user's mistakes: exit status 2 and one line, never a traceback.

Each case runs `mmrep.cli.main` in this process on a bad name, seed or destination, or
on a run folder with a broken model, and checks the one `mmrep <command>: error: ...`
line names what was wrong. Nothing here trains: a destination is refused before any
work, and a run folder is made by hand from a tiny model that was never trained.
"""

import os
import shutil
import struct
import zipfile

import pytest

from mmrep.cli import main
from tests.job.tiny import tiny_config


def error_line(capsys, command, argv):
    """Runs `mmrep ARGV`, expecting exit status 2; returns its one error line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.out[-2000:] + captured.err[-2000:]
    assert "Traceback" not in captured.err, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"mmrep {command}: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def tiny_toml(tmp_path_factory):
    """A tiny run config file (one step of one epoch, exports into the test's folder)."""
    from mmrep.job import config_to_toml, with_overrides

    root = tmp_path_factory.mktemp("config")
    config = with_overrides(
        tiny_config(),
        epochs=1,
        steps_per_epoch=1,
        limit=16,
        batch_size=8,
        export_dir=str(root / "exports"),
    )
    path = root / "tiny.toml"
    path.write_text(config_to_toml(config))
    return str(path)


def train_args(tiny_toml, tmp_path, *args):
    return ["train", "--config", tiny_toml, "--runs-dir", str(tmp_path / "runs"), *args]


@pytest.mark.parametrize(
    "name, words",
    [
        ("a/b", "'a/b'"),
        ("a\\b", "'a\\\\b'"),
        ("", "''"),
        (".", "'.'"),
        ("..", "'..'"),
        (".hidden", "'.hidden'"),
        ("x" * 300, "at most"),
    ],
)
def test_a_run_name_that_is_no_plain_folder_name_is_refused(
    name, words, tiny_toml, tmp_path, capsys
):
    line = error_line(capsys, "train", train_args(tiny_toml, tmp_path, "--name", name))
    assert "`name`" in line and words in line, line
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_out_of_range_is_refused(seed, tiny_toml, tmp_path, capsys):
    line = error_line(capsys, "train", train_args(tiny_toml, tmp_path, "--seed", seed))
    assert "`seed`" in line and seed in line and ">= 0" in line, line
    assert not os.path.exists(tmp_path / "runs")


def test_a_runs_dir_that_is_a_file_is_refused(tiny_toml, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for runs in (afile, afile / "sub"):
        argv = ["train", "--config", tiny_toml, "--runs-dir", str(runs)]
        line = error_line(capsys, "train", argv)
        assert str(afile) in line and "a file" in line and "folder" in line, line
    assert afile.read_text() == "x"


def test_a_runs_dir_that_cannot_be_written_is_refused(tiny_toml, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "read_only"
    runs.mkdir()
    if os.geteuid() == 0:  # root ignores permissions: make the folder refuse what it gets
        real_mkdir = os.mkdir

        def refusing_mkdir(path, *args, **kwargs):
            if os.path.dirname(os.fspath(path)) == str(runs):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", refusing_mkdir)
    else:
        runs.chmod(0o555)
    try:
        argv = ["train", "--config", tiny_toml, "--runs-dir", str(runs)]
        line = error_line(capsys, "train", argv)
    finally:
        runs.chmod(0o755)
    assert str(runs) in line and "Permission denied" in line, line
    assert os.listdir(runs) == []


@pytest.mark.parametrize("under", [False, True])
def test_an_export_dir_that_is_a_file_is_refused_before_training(
    under, tiny_toml, tmp_path, capsys
):
    afile = tmp_path / "afile"
    afile.write_text("x")
    export_dir = afile / "sub" if under else afile
    argv = train_args(tiny_toml, tmp_path, "--name", "r", "--export-dir", str(export_dir))
    line = error_line(capsys, "train", argv)
    assert str(afile) in line and "a file" in line, line
    # Refused before any work: no run folder (and no temporary one) was made.
    assert not os.path.exists(tmp_path / "runs") or os.listdir(tmp_path / "runs") == []


def hand_made_run(runs, name="r"):
    """A run folder by hand: `config.toml`, `run.json` and a `model.keras` archive.

    The model is a small Keras model, not the run's: every case below is refused before
    the model is loaded or because it cannot be.
    """
    import keras

    from mmrep.job import config_to_toml
    from mmrep.job import run_folder as rf

    config = tiny_config()
    classes = [str(d) for d in range(10)]
    inputs = keras.Input((64,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(64)(inputs))
    folder = os.path.join(runs, name)
    os.makedirs(folder)
    model.save(os.path.join(folder, rf.MODEL_FILE))
    with open(os.path.join(folder, rf.CONFIG_FILE), "w") as f:
        f.write(config_to_toml(config))
    rf.write_json(folder, rf.RUN_FILE, {"name": name, "classes": classes})
    return folder


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    return hand_made_run(str(tmp_path_factory.mktemp("made") / "runs"))


def copy_run(made_run, tmp_path, name="r"):
    runs = tmp_path / "runs"
    shutil.copytree(made_run, runs / name)
    return str(runs), str(runs / name)


def test_export_to_a_file_is_refused_naming_it(made_run, tmp_path, capsys):
    runs, _ = copy_run(made_run, tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    for export_dir in (afile, afile / "sub"):
        argv = ["export", "r", "--runs-dir", runs, "--export-dir", str(export_dir)]
        line = error_line(capsys, "export", argv)
        assert str(afile) in line and "a file" in line, line


def truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def corrupt(path):
    """Zeroes 64 bytes amid the weights: the archive reads, a member's CRC does not match."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    # A local file header is 30 bytes, then the name and the extra field, then the data.
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 :][:4])
    start = info.header_offset + 30 + name_length + extra_length + info.compress_size // 2
    data[start : start + 64] = bytes(64)
    with open(path, "wb") as f:
        f.write(data)


def not_a_model(path):
    os.remove(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "a zip, but not a Keras model")


def a_folder(path):
    os.remove(path)
    os.mkdir(path)


@pytest.mark.parametrize("command", ["export", "evaluate"])
@pytest.mark.parametrize(
    "damage, words",
    [
        (truncate, "not a complete .keras file"),
        (corrupt, "damaged"),
        (not_a_model, "config.json"),
        (a_folder, "is a folder"),
    ],
    ids=["truncated", "corrupt", "not_a_model", "a_folder"],
)
def test_a_broken_model_file_is_one_error_naming_it(
    command, damage, words, made_run, tmp_path, capsys
):
    runs, folder = copy_run(made_run, tmp_path)
    model = os.path.join(folder, "model.keras")
    damage(model)
    argv = [command, "r", "--runs-dir", runs]
    if command == "export":
        argv += ["--export-dir", str(tmp_path / "exports")]
    line = error_line(capsys, command, argv)
    assert model in line and words in line, line
    assert not os.path.exists(tmp_path / "exports")


@pytest.mark.parametrize("missing", ["config.toml", "model.keras"])
def test_evaluate_on_a_run_folder_missing_a_file_names_it(missing, made_run, tmp_path, capsys):
    runs, folder = copy_run(made_run, tmp_path)
    os.remove(os.path.join(folder, missing))
    line = error_line(capsys, "evaluate", ["evaluate", "r", "--runs-dir", runs])
    assert folder in line and missing in line, line


def test_evaluate_refuses_a_run_folder_it_cannot_write(made_run, tmp_path, capsys, monkeypatch):
    runs, folder = copy_run(made_run, tmp_path)
    real_access = os.access

    def access(path, mode, **kwargs):
        if os.fspath(path) == folder and mode & os.W_OK:
            return False  # as a read-only folder answers a user who is not root
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    line = error_line(capsys, "evaluate", ["evaluate", "r", "--runs-dir", runs])
    assert folder in line and "cannot be written" in line and "--manifest" in line, line


def test_a_permission_error_on_a_path_the_user_gave_is_one_error(tmp_path, capsys, monkeypatch):
    """The command's last line of defence: an OSError about the user's own path."""
    import mmrep.job

    runs = str(tmp_path / "runs")

    def refused(run, runs_dir, **kwargs):
        raise PermissionError(13, "Permission denied", os.path.join(runs_dir, run, "x"))

    monkeypatch.setattr(mmrep.job, "evaluate_run", refused)
    line = error_line(capsys, "evaluate", ["evaluate", "r", "--runs-dir", runs])
    assert os.path.join(runs, "r", "x") in line and "Permission denied" in line, line

    def bug(run, runs_dir, **kwargs):
        raise PermissionError(13, "Permission denied", "/somewhere/else")

    # Not about a path the user gave: a bug, shown as one.
    monkeypatch.setattr(mmrep.job, "evaluate_run", bug)
    with pytest.raises(PermissionError):
        main(["evaluate", "r", "--runs-dir", runs])
