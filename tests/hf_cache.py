"""The Hugging Face Hub cache, written by the tests in its real on-disk layout.

`huggingface_hub` keeps a model repository's files in
`<cache>/models--<owner>--<name>/`: each file's bytes once in `blobs/<etag>`, one folder per
commit `snapshots/<40-hex commit>/<path>` of relative symlinks to those blobs, and
`refs/<branch>` holding the commit hash a branch pointed to when last downloaded
(huggingface.co/docs/huggingface_hub/guides/manage-cache). A blob is named by the file's
ETag on the Hub: the SHA-256 of the content for a file stored with Git LFS (weights), the
Git blob SHA-1 for any other file. `write_hf_cache` lays a checkpoint folder out this way,
so that what `snapshot_download` finds offline is what a real download leaves behind;
`hub_file_ids` gives the same ids to the loopback Hub server of `tests/hf_hub_server.py`.
"""

import hashlib
import os
from pathlib import Path

# Extensions the Hub's default .gitattributes stores with Git LFS.
LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".onnx", ".pt", ".pth", ".ckpt")


def hub_file_ids(content, name):
    """The ids the Hub gives a file: `(git blob sha1, lfs sha256 or None, etag)`.

    Args:
        content: bytes. The file's content.
        name: str. Its path in the repository (the extension decides LFS).
    """
    blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    lfs = hashlib.sha256(content).hexdigest() if name.endswith(LFS_SUFFIXES) else None
    return blob, lfs, lfs or blob


def repo_files(folder):
    """`{path in repo ('/'-separated): bytes}` for every file under `folder`, sorted."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def commit_of(files):
    """A deterministic 40-hex commit hash for `{path: bytes}`."""
    digest = hashlib.sha1()
    for name, content in sorted(files.items()):
        digest.update(name.encode() + b"\0" + hub_file_ids(content, name)[2].encode() + b"\0")
    return digest.hexdigest()


def write_hf_cache(cache_dir, repo_id, source_folder, revision_sha=None):
    """Copies a checkpoint folder into a Hugging Face Hub cache as the commit `revision_sha`.

    Writes `<cache_dir>/models--<owner>--<name>/blobs/<etag>` for every file (its sub-folders
    included), `snapshots/<revision_sha>/<path>` as relative symlinks to them, and
    `refs/main` holding `revision_sha` (the newest commit written is `main`, as after a
    download of it).

    Args:
        cache_dir: str or path. The cache folder (what `HF_HUB_CACHE` names).
        repo_id: str. `"owner/name"` (or `"name"`).
        source_folder: str or path. The checkpoint folder to copy.
        revision_sha: str or `None`. A 40-hex commit hash; `None` derives one from the
            files' content.

    Returns:
        `Path` of the snapshot folder.
    """
    files = repo_files(source_folder)
    if not files:
        raise ValueError(f"Expected files in {str(source_folder)!r}. Received an empty folder")
    commit = revision_sha or commit_of(files)
    if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
        raise ValueError(f"Expected a 40-hex commit hash. Received: revision_sha={commit!r}")
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for name, content in files.items():
        blob = repo / "blobs" / hub_file_ids(content, name)[2]
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(content)
        pointer = snapshot / name
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if pointer.is_symlink() or pointer.exists():
            pointer.unlink()
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
