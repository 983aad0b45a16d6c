"""Atomic file writes: a hidden temporary file in the same folder, then `os.replace`.

A reader of the file sees the old one or the new one, never half of one, and a write that
fails (an exception, a full disk) removes its temporary file and leaves the old file as it
was. A process killed while writing cannot remove its temporary file, so every temporary
entry mmrep makes (these files, the export's version folders, the run folders) names its
writer, `<host>-<pid>-<random>` (`writer_tag`), and the next writer of the same thing
removes the stale ones (`remove_stale`).

The rule: a temporary entry is stale when its writer is known to be gone (made on this
host, whose name it holds, and no process has its pid: on POSIX `os.kill(pid, 0)` fails
with ESRCH), or when nothing in it changed for longer than `max_age` (`STALE_SECONDS`, a
day, by default: for writers on other hosts sharing the folder, pids reused since, and
systems without the pid check). A writer still running on this host is never stale by
its pid; callers whose writers may run longer than a day (training) pass
`max_age=None`.
"""

import contextlib
import errno
import os
import re
import shutil
import socket
import time
import uuid

STALE_SECONDS = 24 * 60 * 60
# Matches `writer_tag()`: the host (letters, digits, "." and "_"), the pid, 12 hex digits.
TAG_PATTERN = r"(?P<host>[A-Za-z0-9._]+)-(?P<pid>[0-9]+)-[0-9a-f]{12}"


def _host():
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:32] or "host"


def writer_tag(pid=None):
    """`<host>-<pid>-<random>`: names a temporary file or folder after its writer.

    Args:
        pid: int or `None` (this process). The writer's process id.

    Returns:
        str, matching `TAG_PATTERN`.
    """
    return f"{_host()}-{os.getpid() if pid is None else int(pid)}-{uuid.uuid4().hex[:12]}"


def _writer_gone(host, pid):
    if os.name != "posix" or host != _host() or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, under another user
        return False
    return False


def _age(path):
    newest = os.lstat(path).st_mtime
    if os.path.isdir(path) and not os.path.islink(path):
        for root, folders, files in os.walk(path):
            for name in folders + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return time.time() - newest


def remove_stale(folder, pattern, max_age=STALE_SECONDS):
    """Removes the stale temporary entries of `folder` whose names match `pattern`.

    Args:
        folder: str. The folder to look in (a missing one holds nothing).
        pattern: str. A regular expression the whole name must match. Its named groups
            `host` and `pid` (as in `TAG_PATTERN`) give the writer; without them, or
            when they match nothing, only the age tells.
        max_age: float or `None`. Seconds after the last change when any matching entry
            is stale; `None`: only a writer known to be gone makes one stale. Defaults
            to `STALE_SECONDS`.

    Returns:
        list of str. The paths removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = re.fullmatch(pattern, entry.name)
        if match is None:
            continue
        groups = match.groupdict()
        try:
            stale = (
                groups.get("host") is not None
                and groups.get("pid") is not None
                and _writer_gone(groups["host"], int(groups["pid"]))
            ) or (max_age is not None and _age(entry.path) > max_age)
            if not stale:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
        except OSError:  # removed meanwhile by another writer, or not ours to remove
            continue
        removed.append(entry.path)
    return removed


@contextlib.contextmanager
def atomic_write(path, mode="w", *, encoding=None):
    """Writes `path` atomically: into a hidden temporary file beside it, then a rename.

    The temporary file is `.<name>.<writer_tag()>.tmp<ext>` in the same folder (`<ext>`
    is the target's extension, so writers that choose a format by it still do). On
    success it replaces `path` with `os.replace`; on any exception it is removed and
    `path` is left as it was. Stale temporary files of the same `path` (see the module
    docstring) are removed first.

    Args:
        path: str or path. The file to write. Its folder must exist.
        mode: str or `None`. `open`'s mode ("w", "wb", ...): the block gets the open
            file. `None`: the block gets the temporary path, for writers that open the
            file themselves (`keras.Model.save`), and must create it. Defaults to `"w"`.
        encoding: str or `None`. `open`'s encoding, for text modes.

    Yields:
        The open file, or with `mode=None` the temporary path.

    Raises:
        IsADirectoryError: `path` is a folder (before the block runs).
        FileNotFoundError: with `mode=None`, when the block wrote no file.
        OSError: when the temporary file cannot be made or renamed (the message of
            `open` names it); whatever the block raises.

    Example:

    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.json")
    >>> with atomic_write(path) as f:
    ...     json.dump({"accuracy": 0.9}, f)
    >>> os.listdir(os.path.dirname(path)), json.load(open(path))
    (['metrics.json'], {'accuracy': 0.9})
    """
    path = os.fspath(path)
    if os.path.isdir(path):  # os.replace would fail only after the work, naming the temp
        raise IsADirectoryError(errno.EISDIR, "is a folder; expected a file (or no entry)", path)
    folder, name = os.path.split(path)
    folder = folder or "."
    extension = os.path.splitext(name)[1]
    remove_stale(folder, re.escape(f".{name}.") + TAG_PATTERN + re.escape(f".tmp{extension}"))
    temp = os.path.join(folder, f".{name}.{writer_tag()}.tmp{extension}")
    try:
        if mode is None:
            yield temp
            if not os.path.isfile(temp):
                raise FileNotFoundError(f"the writer of {path} wrote no file at {temp}")
        else:
            with open(temp, mode, encoding=encoding) as f:
                yield f
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
