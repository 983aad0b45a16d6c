"""Run folders `runs/<name>/`: finding them, reading their files, writing them atomically.

A run folder holds `model.keras` (the serving model), `config.toml` (the run config),
`run.json` (classes, timings, versions), `history.json`, `metrics.json` and PNG plots. `train_run` writes it into a temporary folder beside the
final one and renames it into place, so a run folder is never half written; an existing
folder of the same name is replaced (and a line says so).
"""

import json
import os
import shutil
import tempfile

MODEL_FILE = "model.keras"
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
    with open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=False)
        f.write("\n")
    return path


def new_run_folder(runs_dir, name):
    """A temporary folder beside `runs_dir/name`, to be moved there by `commit_run_folder`.

    Args:
        runs_dir: str. The runs folder (created if missing).
        name: str. The run name: a single folder name.

    Returns:
        str. The temporary folder.

    Raises:
        ValueError: for a name that is empty, `.`/`..` or holds a path separator.
    """
    name = str(name)
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(
            f"Expected `name` to be a folder name without path separators. Received: {name!r}"
        )
    os.makedirs(runs_dir, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=runs_dir)
    # mkdtemp makes a private folder; a run folder gets the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
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
