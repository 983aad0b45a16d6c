"""TF Serving's version folders: numbering, the latest version, atomic publication.

TensorFlow Serving watches a base folder and serves its numeric subfolders
`base/<version>/` (the largest by default), ignoring every other name. A version must
therefore appear whole or not at all: `publish_version` writes into a hidden temporary
folder inside `base` (same file system, name starting with "." so TF Serving ignores it)
and renames it into place. Replacing a version renames the old folder aside first, so
`base/<version>` is at every moment either the complete old version, absent for the
instant between the two renames, or the complete new one.

The temporary folder is `.mmrep-export-<version>-<host>-<pid>-<random>`: an export that
was killed leaves it behind, and the next `publish_version` in the same base folder
removes it once it is stale: its process is gone (same host, POSIX), or nothing in it
changed for a day (`mmrep.utils.atomic_write.remove_stale`). A folder set aside by a
replacement that was killed (`.mmrep-replaced-...`) is removed the same way, but only
once its version folder is back in place: until then it is the only copy. Readers
(`numeric_versions`, `resolve_saved_model`) never take either for a version.

Reference:
    TensorFlow Serving, "Serving a TensorFlow Model" (the `base/<version>/` layout).
"""

import os
import re
import shutil

from mmrep.export.errors import ModelNotFoundError, ServingError, VersionExistsError
from mmrep.utils.arguments import is_int
from mmrep.utils.atomic_write import TAG_PATTERN, remove_stale, writer_tag

_TEMP_PREFIX = ".mmrep-export-"
_ASIDE_PREFIX = ".mmrep-replaced-"


def check_version(version):
    """Returns `version` as an int, refusing anything but a positive integer.

    Raises:
        ServingError: `version` is not a positive int (bools are refused too).
    """
    if not is_int(version, 1):
        raise ServingError(
            f"Expected `version` to be a positive int or None. Received: version={version!r}"
        )
    return int(version)


def numeric_versions(path):
    """The versions in a TF Serving base folder: its numeric subfolders, ascending.

    Args:
        path: str. The base folder. A missing folder has no versions.

    Returns:
        list of int. Entries whose names are not all ASCII digits, and files, are ignored.
    """
    if not os.path.isdir(path):
        return []
    return sorted(
        int(entry.name)
        for entry in os.scandir(path)
        if entry.name.isascii() and entry.name.isdigit() and entry.is_dir()
    )


def next_version(path):
    """One more than the largest version in `path`, or 1 when there is none."""
    versions = numeric_versions(path)
    return versions[-1] + 1 if versions else 1


def resolve_saved_model(path):
    """The SavedModel folder that `path` names: a version folder or a TF Serving base.

    Args:
        path: str. A folder holding `saved_model.pb`, or a base folder whose largest
            numeric subfolder holds one.

    Returns:
        `(folder, note)`: the version folder and a phrase saying how it was chosen.

    Raises:
        ModelNotFoundError: `path` does not exist, is not a folder, or holds neither a
            SavedModel nor a numeric version folder with one.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelNotFoundError(f"model not found: {path} does not exist")
    if os.path.basename(os.path.normpath(path)).startswith((_TEMP_PREFIX, _ASIDE_PREFIX)):
        raise ModelNotFoundError(
            f"model {path} is the temporary folder of an unfinished export (or of a "
            "replaced version), not a version: give its base folder or a numeric version"
        )
    if not os.path.isdir(path):
        raise ModelNotFoundError(
            f"model {path} is a file; expected a SavedModel folder (with saved_model.pb) "
            "or a TF Serving base folder of numeric versions"
        )
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path, "the version folder given"
    versions = numeric_versions(path)
    if not versions:
        listing = sorted(os.listdir(path))[:20]
        raise ModelNotFoundError(
            f"model {path} holds no SavedModel: expected saved_model.pb or numeric version "
            f"folders (path/<version>/saved_model.pb). Found: {listing}"
        )
    folder = os.path.join(path, str(versions[-1]))
    if not os.path.isfile(os.path.join(folder, "saved_model.pb")):
        raise ModelNotFoundError(
            f"model {path}: its latest version folder {folder} has no saved_model.pb "
            f"(versions found: {versions})"
        )
    return folder, f"version {versions[-1]}, the largest of {versions} in {path}"


def publish_version(path, version, write, *, overwrite=False):
    """Writes a version folder atomically: `write(temp)`, then a rename into place.

    Args:
        path: str. The TF Serving base folder (created if missing).
        version: positive int, or `None` for `next_version(path)`.
        write: callable taking the temporary folder (existing, empty) to fill.
        overwrite: bool. Replace an existing version instead of refusing it.
            Defaults to `False`.

    Returns:
        str, the version folder `path/<version>`.

    Raises:
        ServingError: `path` is a file (or lies under one), cannot be written, or
            `version` is not a positive int.
        VersionExistsError: `path/<version>` exists and `overwrite` is `False`.
        Exception: whatever `write` raises; the temporary folder is removed first and
            no version folder appears (an overwritten one stays as it was).
    """
    path = os.fspath(path)
    check_destination(path, version, overwrite)
    version = next_version(path) if version is None else int(version)
    target = os.path.join(path, str(version))
    # os.mkdir (not tempfile.mkdtemp, whose folders are private to their owner) so that
    # the published version gets the umask's permissions and a server can read it.
    temp = os.path.join(path, f"{_TEMP_PREFIX}{version}-{writer_tag()}")
    try:
        os.makedirs(path, exist_ok=True)
        os.mkdir(temp)
    except OSError as error:
        raise ServingError(
            f"cannot write the export folder {path}: {error.strerror or error}; expected a "
            "folder you can write to"
        ) from None
    _remove_stale_temporaries(path)
    try:
        write(temp)
        _refuse_existing(target, overwrite)  # another writer may have taken it meanwhile
        _move_into_place(temp, target, path, version)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def check_destination(path, version, overwrite=False):
    """Refuses, before any work, a destination that `publish_version` would refuse.

    Args:
        path: str. The TF Serving base folder.
        version: positive int or `None`.
        overwrite: bool. Whether an existing version may be replaced.

    Raises:
        ServingError: `path` is a file or lies under one, or the folder that would hold
            it cannot be written (`os.access`), or `version` is not a positive int.
        VersionExistsError: `path/<version>` exists and `overwrite` is `False`.
    """
    path = os.fspath(path)
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        if existing == os.path.abspath(path):
            raise ServingError(f"export path {path} is a file; expected a folder (or a new path)")
        raise ServingError(
            f"export path {path} lies under {existing}, which is a file; expected a folder "
            "(or a new path)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the export path" if existing == os.path.abspath(path) else "the folder"
        raise ServingError(
            f"cannot write the export path {path}: {what} {existing} is not writable "
            "(no permission, or a read-only file system)"
        )
    if version is not None:
        _refuse_existing(os.path.join(path, str(check_version(version))), overwrite)


def _refuse_existing(target, overwrite):
    if os.path.lexists(target) and not overwrite:
        raise VersionExistsError(
            f"version folder {target} already exists; pass overwrite=True (`mmrep export "
            "--overwrite`) to replace it, or choose another version"
        )


def _remove_stale_temporaries(path):
    tag = r"(?:" + TAG_PATTERN + r"|[0-9a-f]{12})"  # or an older mmrep's: no writer, age only
    remove_stale(path, re.escape(_TEMP_PREFIX) + r"[0-9]+-" + tag)
    # A folder set aside by a killed replacement is the version's only copy until the
    # version folder is back in place.
    versions = "|".join(str(v) for v in numeric_versions(path))
    if versions:
        remove_stale(path, re.escape(_ASIDE_PREFIX) + f"(?:{versions})-" + tag)


def _move_into_place(temp, target, path, version):
    if not os.path.lexists(target):
        os.rename(temp, target)
        return
    aside = os.path.join(path, f"{_ASIDE_PREFIX}{version}-{writer_tag()}")
    os.rename(target, aside)
    try:
        os.rename(temp, target)
    except BaseException:
        os.rename(aside, target)
        raise
    if os.path.isdir(aside) and not os.path.islink(aside):
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.remove(aside)
