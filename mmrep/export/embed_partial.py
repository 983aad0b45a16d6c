"""The work folder of an unfinished `embed_manifest` run, so a killed run can resume.

`embed_manifest` works through the manifest in chunks of rows and writes each finished
chunk into a hidden folder beside the output, `.<output name>.partial/`: `state.json`
(what the run is: the manifest's and model's fingerprints and the options that decide
the results, plus the writer's process id) and one `chunk-<index>.npz` per finished
chunk (the outputs of the chunk's rows, their row numbers, labels and file paths, and the
rows left out with their reasons), each written atomically. When every chunk is done the
output is assembled from them and the folder is removed. A killed or failed run leaves
the folder: `resume=True` continues from the first unfinished chunk, and since a chunk's
batches depend only on the chunk, the result is bit for bit that of an uninterrupted run.
"""

import hashlib
import json
import os
import shutil

import numpy as np

from mmrep.export.errors import ServingError
from mmrep.utils.atomic_write import atomic_write

STATE_FILE = "state.json"
SKIPPED_KEY = "__skipped__"


def partial_folder(output):
    """The work folder of `output`: `.<name>.partial` in the output's folder."""
    folder, name = os.path.split(os.path.abspath(output))
    return os.path.join(folder, f".{name}.partial")


def file_digest(path, chunk=1 << 20):
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_digest(folder):
    """The SHA-256 of a SavedModel's graph and variable index (what decides its outputs)."""
    digest = hashlib.sha256()
    for name in ("saved_model.pb", os.path.join("variables", "variables.index")):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            digest.update(file_digest(path).encode())
    return digest.hexdigest()


def _alive(pid):
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PartialRun:
    """The chunks an `embed_manifest` run has finished, kept in its work folder.

    Args:
        output: str. The output file the run writes.
        state: dict. What decides the results (JSON-serialisable); a resumed run must
            have the same.
        resume: bool. Continue the run a work folder holds; without it, an existing
            work folder is an error.

    Raises:
        ServingError: a work folder exists and `resume` is off; `resume` with a work
            folder of a different run (the differing keys named) or one another live
            process is writing.
    """

    def __init__(self, output, state, resume):
        self.output, self.folder = output, partial_folder(output)
        self.state = dict(state)
        if os.path.isdir(self.folder):
            if not resume:
                raise ServingError(
                    f"output {output}: an unfinished run left {self.folder} (killed or "
                    "stopped at a bad row); pass --resume (resume=True) to continue it, or "
                    "remove that folder to start over"
                )
            self._check_same_run()
        else:
            os.makedirs(self.folder)
        self._write_json(STATE_FILE, {**self.state, "pid": os.getpid()})

    def _check_same_run(self):
        try:
            with open(os.path.join(self.folder, STATE_FILE), encoding="utf-8") as f:
                saved = json.load(f)
        except (OSError, ValueError):
            saved = None
        if not isinstance(saved, dict):
            raise ServingError(
                f"output {self.output}: {self.folder} holds no readable {STATE_FILE}; "
                "remove the folder to start over"
            )
        pid = saved.pop("pid", None)
        if isinstance(pid, int) and _alive(pid):
            raise ServingError(
                f"output {self.output}: another process (pid {pid}) is writing this "
                f"output's run in {self.folder}"
            )
        differ = sorted(k for k in {*saved, *self.state} if saved.get(k) != self.state.get(k))
        if differ:
            details = "; ".join(
                f"{k}: was {saved.get(k)!r}, now {self.state.get(k)!r}" for k in differ
            )
            raise ServingError(
                f"output {self.output}: cannot resume the run in {self.folder}, it was "
                f"started with different {differ} ({details}); remove the folder to "
                "start over"
            )

    def _write_json(self, name, value):
        self._atomic(name, lambda f: f.write(json.dumps(value, indent=2).encode()))

    def _atomic(self, name, write):
        """Writes `name` in the work folder atomically, flushed to disk before the rename."""
        with atomic_write(os.path.join(self.folder, name), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    @staticmethod
    def chunk_name(index):
        return f"chunk-{index:06d}.npz"

    def finished(self):
        """The number of chunks finished in order from the first (0 for a new run)."""
        count = 0
        while os.path.isfile(os.path.join(self.folder, self.chunk_name(count))):
            count += 1
        return count

    def write_chunk(self, index, arrays, skipped):
        """Saves a finished chunk: `arrays` `{name: array [rows, ...]}`, `skipped` records."""
        extra = {SKIPPED_KEY: np.array(json.dumps(skipped))}
        self._atomic(self.chunk_name(index), lambda f: np.savez(f, **arrays, **extra))

    def read_chunks(self, count):
        """`(arrays, skipped)` of chunks `0..count-1`, concatenated in row order."""
        parts, skipped = {}, []
        for index in range(count):
            with np.load(os.path.join(self.folder, self.chunk_name(index))) as chunk:
                skipped.extend(json.loads(str(chunk[SKIPPED_KEY])))
                for name in chunk.files:
                    if name != SKIPPED_KEY:
                        parts.setdefault(name, []).append(chunk[name])
        return {name: np.concatenate(values) for name, values in parts.items()}, skipped

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)
