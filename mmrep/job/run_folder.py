"""Run folders `runs/<name>/`: finding them, reading their files, writing them atomically.

A run folder holds `model.keras` (the serving model), `config.toml` (the run config),
`run.json` (classes, timings, versions), `history.json`, `metrics.json` and PNG plots.
`train_run` writes it into a temporary folder beside the final one and renames it into
place, so a run folder is never half written; an existing folder of the same name is
replaced (and a line says so). Each file in it is written atomically too
(`mmrep.utils.atomic_write`), so `mmrep evaluate` rewriting `metrics.json` leaves the old
file or the new one. The temporary folder `.<name>.tmp-<host>-<pid>-<random>` of a
training that was killed is removed by the next training of the same name on that host,
once its process is gone.
"""

import json
import os
import re
import shutil
import tempfile

from mmrep.utils.atomic_write import TAG_PATTERN, atomic_write, remove_stale, writer_tag

MODEL_FILE = "model.keras"
# Leaves room in a file name's 255 bytes for the temporary folder's suffix.
MAX_NAME_LENGTH = 150
NAME_RULE = (
    f"a folder name: not empty, not starting with '.', without '/' or '\\', at most "
    f"{MAX_NAME_LENGTH} bytes in UTF-8"
)
CONFIG_FILE = "config.toml"
RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"


class RunError(ValueError):
    """A run folder that cannot be used: missing files, unreadable JSON, another model."""


class RunNotFoundError(RunError, FileNotFoundError):
    """No run folder (or no model in it) where one was asked for."""


def _listing(folder, limit=20):
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return "(cannot be listed)"
    if not names:
        return "(empty)"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def resolve_run(run, runs_dir="runs"):
    """The folder of a run given as a path or as a name under `runs_dir`.

    Args:
        run: str or path. A run folder, or the name of one in `runs_dir`.
        runs_dir: str or path. Where run names are looked up. Defaults to `"runs"`.

    Returns:
        str. The run folder, which holds `model.keras`.

    Raises:
        RunNotFoundError: when neither is a folder with `model.keras`; the message names
            the folders tried and what they hold.
    """
    run = os.fspath(run)
    candidates = [run] if os.path.isdir(run) else []
    by_name = os.path.join(os.fspath(runs_dir), run)
    if by_name not in candidates and os.path.isdir(by_name):
        candidates.append(by_name)
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, MODEL_FILE)):
            return folder
    if candidates:
        folder = candidates[0]
        model = os.path.join(folder, MODEL_FILE)
        if os.path.lexists(model):
            raise RunError(
                f"{model!r} is a folder or a broken link; expected the run's model file "
                "(a .keras archive); train the run again with `mmrep train`"
            )
        raise RunNotFoundError(
            f"run folder {folder!r} has no {MODEL_FILE} (it holds: {_listing(folder)}); "
            "train it again with `mmrep train`"
        )
    if os.path.isdir(runs_dir):
        where = f"{os.fspath(runs_dir)!r} holds: {_listing(runs_dir)}"
    else:
        where = f"the runs folder {os.fspath(runs_dir)!r} does not exist"
    raise RunNotFoundError(f"no run {run!r}: neither {run!r} nor {by_name!r} is a folder; {where}")


def read_json(folder, file, required=True):
    """Reads `folder/file` as JSON.

    Args:
        folder: str. The run folder.
        file: str. The file name.
        required: bool. Raise if the file is missing; otherwise return `None`.
            Defaults to `True`.

    Returns:
        The parsed JSON, or `None` for a missing optional file.

    Raises:
        RunNotFoundError: for a missing required file.
        RunError: for a file that is not valid JSON.
    """
    path = os.path.join(folder, file)
    if not os.path.isfile(path):
        if not required:
            return None
        raise RunNotFoundError(f"{path!r} is missing (the run folder holds: {_listing(folder)})")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"{path!r} is not a readable JSON file: {error}") from None


def write_json(folder, file, value):
    """Writes `value` as indented JSON to `folder/file`.

    Args:
        folder: str. The folder.
        file: str. The file name.
        value: JSON-serialisable value.

    Returns:
        str. The path written.
    """
    path = os.path.join(folder, file)
    with atomic_write(path, encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=False)
        f.write("\n")
    return path


def is_run_name(name):
    """Whether `name` is a plain folder name, as `NAME_RULE` says.

    Hidden names (starting with ".", which covers "." and "..") are refused because
    mmrep's temporary folders are hidden; "/" and "\\" on every system, so that a config
    means the same folder everywhere.
    """
    return (
        isinstance(name, str)
        and name != ""
        and not name.startswith(".")
        and not any(c in name for c in ("/", "\\", "\0", os.sep, os.altsep or "/"))
        and len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_LENGTH
    )


def check_run_name(name):
    """Refuses a run name that is not a plain folder name (`is_run_name`).

    Raises:
        RunError: (a `ValueError`) naming the rule and the name.
    """
    if not is_run_name(name):
        text = repr(name)
        text = text if len(text) <= 80 else text[:77] + "..."
        raise RunError(f"Expected `name` to be {NAME_RULE}. Received: {text}")


def _os_error(error):
    return error.strerror or str(error)


def check_runs_dir(runs_dir):
    """Refuses a runs folder that is a file, or lies under one.

    Args:
        runs_dir: str. The runs folder (it need not exist yet).

    Raises:
        RunError: `runs_dir`, or the nearest of its parents that exists, is not a
            folder.
    """
    runs_dir = os.path.abspath(os.fspath(runs_dir))
    existing = runs_dir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if os.path.isdir(existing):
        return
    if existing == runs_dir:
        raise RunError(f"the runs folder {runs_dir!r} is a file; expected a folder (or a new path)")
    raise RunError(
        f"the runs folder {runs_dir!r} lies under {existing!r}, which is a file; expected "
        "a folder (or a new path)"
    )


def new_run_folder(runs_dir, name):
    """A temporary folder beside `runs_dir/name`, to be moved there by `commit_run_folder`.

    Removes the temporary folders of earlier trainings of `name` whose process is gone
    (see `mmrep.utils.atomic_write`; never by age, as a training may run for days).

    Args:
        runs_dir: str. The runs folder (created if missing).
        name: str. The run name: a single folder name (see `check_run_name`).

    Returns:
        str. The temporary folder, `.<name>.tmp-<host>-<pid>-<random>`.

    Raises:
        RunError: (a `ValueError`) for a name that is not a plain folder name, a runs
            folder that is a file (or under one), or one where no folder can be made
            (no permission, a read-only file system); the message names the folder.
    """
    check_run_name(name)
    check_runs_dir(runs_dir)
    name = str(name)
    try:
        os.makedirs(runs_dir, exist_ok=True)
    except OSError as error:
        raise RunError(
            f"cannot make the runs folder {os.fspath(runs_dir)!r}: {_os_error(error)}"
        ) from None
    remove_stale(runs_dir, re.escape(f".{name}.tmp-") + TAG_PATTERN, max_age=None)
    # os.mkdir (not tempfile.mkdtemp, whose folders are private to their owner): a run
    # folder gets the umask's permissions.
    folder = os.path.join(runs_dir, f".{name}.tmp-{writer_tag()}")
    try:
        os.mkdir(folder)
    except OSError as error:
        raise RunError(
            f"cannot write in the runs folder {os.fspath(runs_dir)!r}: {_os_error(error)}; "
            "expected a folder you can write to (--runs-dir)"
        ) from None
    return folder


def commit_run_folder(temporary, runs_dir, name, verbose=True):
    """Moves a finished temporary folder to `runs_dir/name`, replacing an existing run.

    Args:
        temporary: str. The folder from `new_run_folder`.
        runs_dir: str. The runs folder.
        name: str. The run name.
        verbose: bool. Print a line when an existing run is replaced. Defaults to `True`.

    Returns:
        str. The run folder.
    """
    final = os.path.join(runs_dir, name)
    old = None
    if os.path.lexists(final):
        if verbose:
            print(f"Replacing the existing run folder {final}")
        old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=runs_dir)
        os.rmdir(old)
        os.replace(final, old)
    os.replace(temporary, final)
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old)
        else:
            os.remove(old)
    return final
