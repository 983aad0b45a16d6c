"""Run folders: names, atomic replacement, lookup errors."""

import os

import pytest

from mmrep.job import DEFAULT_FUSION, FUSIONS, HEADS, ConfigError, builtin_config, with_overrides
from mmrep.job import run_folder as rf


def test_names_and_choices():
    assert FUSIONS == ("concat", "bilinear", "autoencoder", "coordinated")
    assert HEADS == ("vae", "fisher")
    assert DEFAULT_FUSION in FUSIONS
    assert builtin_config()["name"] == f"mmdigits_{DEFAULT_FUSION}"
    assert with_overrides(builtin_config(), fusion="bilinear")["name"] == "mmdigits_bilinear"
    named = with_overrides(builtin_config(), fusion="concat", head="vae")
    assert named["name"] == "mmdigits_concat_vae"
    with pytest.raises(ConfigError, match=r"`head.kind`.*'none', 'vae', 'fisher'.*'pca'"):
        with_overrides(builtin_config(), head="pca")


def test_a_run_folder_is_written_aside_and_replaces_the_old_one(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    first = rf.new_run_folder(runs, "r")
    rf.write_json(first, rf.RUN_FILE, {"n": 1})
    assert os.path.basename(first).startswith(".r.tmp-")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(first).st_mode & 0o777 == 0o777 & ~umask
    folder = rf.commit_run_folder(first, runs, "r")
    assert folder == os.path.join(runs, "r") and capsys.readouterr().out == ""
    second = rf.new_run_folder(runs, "r")
    rf.write_json(second, rf.RUN_FILE, {"n": 2})
    rf.commit_run_folder(second, runs, "r")
    assert f"Replacing the existing run folder {folder}" in capsys.readouterr().out
    assert rf.read_json(folder, rf.RUN_FILE) == {"n": 2}
    assert os.listdir(runs) == ["r"]
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError, match="folder name"):
            rf.new_run_folder(runs, bad)


def test_lookup_errors_name_the_folder_and_its_contents(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(rf.RunNotFoundError, match=r"'.*runs' does not exist"):
        rf.resolve_run("x", runs)
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "metrics.json").write_text("{")
    with pytest.raises(FileNotFoundError, match=r"holds: a"):
        rf.resolve_run("b", runs)
    with pytest.raises(rf.RunError, match=r"no model\.keras \(it holds: metrics\.json\)"):
        rf.resolve_run("a", runs)
    (runs / "a" / "model.keras").write_text("")
    assert rf.resolve_run("a", runs) == str(runs / "a")
    assert rf.resolve_run(str(runs / "a"), "elsewhere") == str(runs / "a")
    with pytest.raises(rf.RunError, match="not a readable JSON file"):
        rf.read_json(str(runs / "a"), "metrics.json")
    assert rf.read_json(str(runs / "a"), "history.json", required=False) is None
    with pytest.raises(rf.RunNotFoundError, match=r"history\.json' is missing"):
        rf.read_json(str(runs / "a"), "history.json")
    assert issubclass(rf.RunError, ValueError)


@pytest.mark.skipif(os.name != "posix", reason="the pid check is POSIX only")
def test_a_killed_training_s_temporary_folder_is_removed_by_the_next(tmp_path):
    import subprocess
    import sys

    from mmrep.utils.atomic_write import writer_tag

    runs = tmp_path / "runs"
    runs.mkdir()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed = runs / f".r.tmp-{writer_tag(ended.pid)}"
        training = runs / f".r.tmp-{writer_tag(running.pid)}"
        other = runs / f".s.tmp-{writer_tag(ended.pid)}"  # another run's: its own next run
        for folder in (killed, training, other):
            folder.mkdir()
            (folder / "model.keras").write_text("half")
        new = rf.new_run_folder(str(runs), "r")
        assert sorted(os.listdir(runs)) == sorted(
            [os.path.basename(new), training.name, other.name]
        )
    finally:
        running.kill()
        running.wait()


def test_a_runs_folder_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(rf.RunError, match=r"'.*afile' is a file; expected a folder"):
        rf.new_run_folder(str(afile), "r")
    with pytest.raises(rf.RunError, match=r"'.*afile/sub' lies under '.*afile', which is a file"):
        rf.new_run_folder(str(afile / "sub"), "r")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "r").mkdir()
    (runs / "r" / "model.keras").mkdir()
    with pytest.raises(rf.RunError, match=r"model\.keras' is a folder"):
        rf.resolve_run("r", str(runs))
