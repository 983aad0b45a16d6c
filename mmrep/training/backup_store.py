"""The on-disk layout of training backups and their atomic publication.

A backup directory holds:

    backups.json                         the index: the published backups, oldest first
    epoch-000003-1a2b3c4d/               a published backup (epoch to resume at, random tag)
        state.npz                        the variables, `v000000`, `v000001`, ... (no pickle)
        metadata.json                    epoch, step, logs and the manifest of the variables
    epoch-000004-step-000040-9f8e7d6c/   a mid-epoch backup (`save_freq=N`)
    .tmp-<hex>/                          a backup being written

Writing a backup: its files are written into a fresh `.tmp-<hex>/` folder and fsync'ed,
the folder is renamed to its final name (`rename_into_place`), and the index is replaced
by `os.replace` of a fsync'ed temporary file (`publish_index`). Only the index says which
backups exist, and it only ever names complete folders, so a process killed at any moment
leaves either the previous set of backups or the new one. A `.tmp-*` folder, a renamed but
unlisted folder, or an index temp file is a leftover of a killed write: readers ignore it
and `remove_leftovers` deletes it. `np.load` checks each array's CRC-32 as it reads it, so
a backup damaged after publication is detected rather than loaded.
"""

import json
import os
import re
import shutil
import uuid
import zipfile

import numpy as np

FORMAT = "mmrep-backup-1"
INDEX = "backups.json"
STATE = "state.npz"
METADATA = "metadata.json"
TMP = ".tmp-"
_BACKUP_NAME = re.compile(r"^epoch-\d{6,}(-step-\d{6,})?-[0-9a-f]{8}$")


def fsync_dir(path):
    """Makes a directory's entries (renames, new files) durable, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory.
        return
    try:
        os.fsync(fd)
    except OSError:  # Some file systems refuse fsync on directories.
        pass
    finally:
        os.close(fd)


def _write_file(path, write):
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def rename_into_place(tmp, final):
    """Gives a completely written backup folder its final name (not yet published)."""
    os.rename(tmp, final)
    fsync_dir(os.path.dirname(final))


def publish_index(backup_dir, entries):
    """Atomically replaces the index: the moment the listed backups become the current ones.

    Args:
        backup_dir: str. The backup directory.
        entries: list of `{"name", "epoch", "step"}` dicts, oldest first.
    """
    index = os.path.join(backup_dir, INDEX)
    tmp = f"{index}{TMP}{uuid.uuid4().hex}"
    payload = json.dumps({"format": FORMAT, "backups": entries}, indent=1).encode()
    _write_file(tmp, lambda f: f.write(payload))
    os.replace(tmp, index)
    fsync_dir(backup_dir)


def read_index(backup_dir):
    """The published entries, oldest first; `[]` when nothing was published.

    Raises:
        ValueError: if the index exists but is not a valid index of this format.
    """
    index = os.path.join(backup_dir, INDEX)
    if not os.path.exists(index):
        return []
    try:
        with open(index, "rb") as f:
            content = json.loads(f.read())
        if content.get("format") != FORMAT:
            raise ValueError(f"format {content.get('format')!r}, expected {FORMAT!r}")
        return [
            {"name": str(e["name"]), "epoch": int(e["epoch"]), "step": int(e["step"])}
            for e in content["backups"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"The backup index {index} is unreadable ({error}). It is only ever replaced "
            "atomically, so it was damaged from outside; delete `backup_dir` to start over."
        ) from error


def write_backup(backup_dir, epoch, step, values, metadata):
    """Writes a complete backup folder under a fresh name, without publishing it.

    Args:
        backup_dir: str. The backup directory (created when missing).
        epoch: int. The epoch a resumed run starts at.
        step: int. Batches done in that epoch (0 for an end-of-epoch backup).
        values: list of numpy arrays, in manifest order.
        metadata: JSON-serialisable dict stored as `metadata.json`.

    Returns:
        The new folder's name, for the index.
    """
    os.makedirs(backup_dir, exist_ok=True)
    name = f"epoch-{epoch:06d}" + (f"-step-{step:06d}" if step else "")
    name += f"-{uuid.uuid4().hex[:8]}"
    tmp = os.path.join(backup_dir, f"{TMP}{uuid.uuid4().hex}")
    os.makedirs(tmp)
    # Dtypes numpy does not know (bfloat16) are stored as their raw bits.
    arrays = {
        f"v{i:06d}": value.view(f"u{value.dtype.itemsize}") if value.dtype.kind == "V" else value
        for i, value in enumerate(values)
    }
    _write_file(os.path.join(tmp, STATE), lambda f: np.savez(f, **arrays))
    payload = json.dumps(metadata, indent=1).encode()
    _write_file(os.path.join(tmp, METADATA), lambda f: f.write(payload))
    fsync_dir(tmp)
    rename_into_place(tmp, os.path.join(backup_dir, name))
    return name


def read_backup(backup_dir, name):
    """`(metadata, values)` of a published backup.

    Raises:
        OSError: naming the folder, if its files are missing, truncated or fail their
            CRC check.
    """
    folder = os.path.join(backup_dir, name)
    try:
        with open(os.path.join(folder, METADATA), "rb") as f:
            metadata = json.loads(f.read())
        with np.load(os.path.join(folder, STATE), allow_pickle=False) as arrays:
            values = [arrays[f"v{i:06d}"] for i in range(len(metadata["variables"]))]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        raise OSError(
            f"The published backup {folder} cannot be read ({type(error).__name__}: {error}); "
            "backups are published only when complete, so it was damaged after publication."
        ) from error
    return metadata, values


def remove_backup(backup_dir, name):
    """Deletes one backup folder (after it was unpublished)."""
    shutil.rmtree(os.path.join(backup_dir, name), ignore_errors=True)


def remove_leftovers(backup_dir, listed):
    """Deletes temp folders, index temp files and backup folders not in `listed` (names)."""
    for name in os.listdir(backup_dir):
        leftover = name.startswith((TMP, INDEX + TMP)) or (
            _BACKUP_NAME.match(name) is not None and name not in listed
        )
        if not leftover:
            continue
        path = os.path.join(backup_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def delete_all(backup_dir):
    """Unpublishes every backup (one atomic step), deletes them, and the folder if empty."""
    publish_index(backup_dir, [])
    remove_leftovers(backup_dir, listed=set())
    os.remove(os.path.join(backup_dir, INDEX))
    if not os.listdir(backup_dir):
        os.rmdir(backup_dir)
