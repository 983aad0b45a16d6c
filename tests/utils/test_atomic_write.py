"""`atomic_write`: a whole new file or the old one, never half; stale temporaries removed."""

import json
import os
import subprocess
import sys
import time

import pytest

from mmrep.utils.atomic_write import (
    STALE_SECONDS,
    TAG_PATTERN,
    atomic_write,
    remove_stale,
    writer_tag,
)


def hidden(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "notes.txt"
    with atomic_write(path, encoding="utf-8") as f:
        f.write("first")
        # Until the block ends, the file is not there; its temporary is, hidden.
        assert not path.exists()
        (temp,) = hidden(tmp_path)
        assert temp.startswith(".notes.txt.") and temp.endswith(".tmp.txt"), temp
    assert path.read_text() == "first" and hidden(tmp_path) == []
    with atomic_write(path, "wb") as f:
        f.write(b"second")
    assert path.read_bytes() == b"second" and os.listdir(tmp_path) == ["notes.txt"]


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"old": 1}\n')
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(path) as f:
            f.write('{"new": ')
            raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]
    # A folder where the file goes is refused before the block runs, naming the path.
    (tmp_path / "plot.png").mkdir()
    with pytest.raises(IsADirectoryError, match=r"is a folder; expected a file") as error:
        with atomic_write(tmp_path / "plot.png", "wb"):
            pytest.fail("the block ran")
    assert error.value.filename == str(tmp_path / "plot.png")


def test_write_json_of_a_run_folder_is_atomic(tmp_path, monkeypatch):
    from mmrep.job import run_folder as rf

    rf.write_json(str(tmp_path), rf.METRICS_FILE, {"accuracy": 0.5})
    dump = json.dump

    def failing_dump(value, f, **kwargs):
        f.write('{"accuracy": ')  # part of the file, then the write fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", failing_dump)
    with pytest.raises(OSError, match="No space left"):
        rf.write_json(str(tmp_path), rf.METRICS_FILE, {"accuracy": 0.9})
    monkeypatch.setattr(json, "dump", dump)
    assert rf.read_json(str(tmp_path), rf.METRICS_FILE) == {"accuracy": 0.5}
    assert os.listdir(tmp_path) == [rf.METRICS_FILE]


def test_a_path_form_for_writers_that_take_a_path(tmp_path):
    path = tmp_path / "model.keras"
    with atomic_write(path, mode=None) as temp:
        assert os.path.dirname(temp) == str(tmp_path)
        assert os.path.basename(temp).startswith(".model.keras.") and temp.endswith(".keras")
        with open(temp, "w") as f:
            f.write("model")
    assert path.read_text() == "model" and os.listdir(tmp_path) == ["model.keras"]
    with pytest.raises(ValueError, match="failed"):
        with atomic_write(path, mode=None) as temp:
            with open(temp, "w") as f:
                f.write("half")
            raise ValueError("failed")
    assert path.read_text() == "model" and os.listdir(tmp_path) == ["model.keras"]
    # A writer that wrote nothing: the old file stays, and the error says so.
    with pytest.raises(FileNotFoundError, match="wrote no file"):
        with atomic_write(path, mode=None):
            pass
    assert path.read_text() == "model"


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_pid():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.mark.skipif(os.name != "posix", reason="the pid check is POSIX only")
def test_stale_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path, live_pid):
    path = tmp_path / "metrics.json"
    dead = tmp_path / f".metrics.json.{writer_tag(dead_pid())}.tmp.json"
    live = tmp_path / f".metrics.json.{writer_tag(live_pid)}.tmp.json"
    other = tmp_path / f".history.json.{writer_tag(dead_pid())}.tmp.json"  # another file's
    for temp in (dead, live, other):
        temp.write_text("{")
    with atomic_write(path) as f:
        f.write("{}")
    assert hidden(tmp_path) == sorted([live.name, other.name])
    assert path.read_text() == "{}"


def test_temporaries_older_than_a_day_are_stale_whoever_wrote_them(tmp_path, live_pid):
    folder = tmp_path / "base"
    folder.mkdir()
    pattern = r"\.export-" + TAG_PATTERN
    old = folder / f".export-{writer_tag(live_pid)}"
    young = folder / f".export-{writer_tag(live_pid)}"
    for temp in (old, young):
        temp.mkdir()
        (temp / "file").write_text("x")
    long_ago = time.time() - STALE_SECONDS - 60
    for path in (old / "file", old, young):
        os.utime(path, (long_ago, long_ago))
    # A folder's age is that of its newest entry: `young` is still being written.
    assert remove_stale(str(folder), pattern) == [str(old)]
    assert os.listdir(folder) == [young.name]
    # Runs may last days: without an age limit, only a dead writer makes one stale.
    os.utime(young / "file", (long_ago, long_ago))
    assert remove_stale(str(folder), pattern, max_age=None) == []
