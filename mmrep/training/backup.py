"""Atomic backups of the whole training state, and resuming a killed `fit` from the last one.

`keras.callbacks.BackupAndRestore` (Keras 3.15) writes `latest.weights.h5` and then
`training_metadata.json` in place: a kill during or between the two writes leaves a torn
or mismatched backup; its weights file leaves out the `SeedGenerator` states (dropout's
RNG), so a resumed run draws other dropout masks; a backup of another architecture loads
partly with warnings; and every worker of a multi-worker run writes the same files. This
callback replaces it:

- a backup holds every variable of `model.variables` (weights, non-trainable statistics
  and `SeedGenerator` states) and of every optimizer the model holds as an attribute
  (`model.optimizer` and, for custom `train_step`s, others: iterations, moments, the loss
  scale of a `LossScaleOptimizer`), with the epoch to resume at and the epoch's logs;
- atomic (`mmrep.training.backup_store`): a backup is written into a temporary folder
  inside `backup_dir`, fsync'ed, renamed, and published by an `os.replace` of the small
  index `backup_dir/backups.json`. A process killed at any moment leaves the index naming
  complete backups only; what it does not name is the leftover of a killed write, ignored
  and removed at the next start. Old backups are pruned after publication (`keep`);
- restore at `on_train_begin`: the variables of the model and optimizers are checked
  against the backup's manifest (count, shapes, dtypes, optimizer classes), so a backup of
  another model raises `BackupMismatchError` instead of loading partly, and `fit` resumes
  at the backed-up epoch;
- multi-worker (`MultiWorkerMirroredStrategy`): every worker reads its state (so any
  collective a read needs runs everywhere), only the chief writes; every worker restores
  from the chief's `backup_dir`, which must therefore be on a file system that all
  workers share (NFS, a mounted bucket with atomic rename). Object-store URLs
  (`gs://...`) have no atomic rename and are refused.

The guarantee is per epoch: a run killed at any moment and restarted with the same
command loses no completed epoch, and with deterministic ops and an epoch-deterministic
input (`mmrep.training.epoch_shuffled`) it ends with the weights of an uninterrupted run.
`save_freq=N` also writes a backup every N batches, but a restart always resumes from the
newest end-of-epoch backup: Keras' `fit` cannot start an epoch at batch k, and resuming
from a mid-epoch state at batch 0 would train on part of the epoch twice. Mid-epoch backups
are kept (within `keep`) for inspection. For shorter losses, make epochs shorter.
"""

import os
import warnings

import keras
import numpy as np

from mmrep.training import backup_store as store
from mmrep.training.strategy import is_chief
from mmrep.utils.arguments import check_int, is_int


class BackupMismatchError(ValueError):
    """A backup does not hold the training state of the model being restored."""


def _set_initial_epoch(model, epoch):
    # Keras 3 offers callbacks no public way to move `fit`'s first epoch. Its TF, JAX and
    # torch trainers read `model._initial_epoch` right after `on_train_begin`
    # (`initial_epoch = self._initial_epoch or initial_epoch`), which is what
    # keras.callbacks.BackupAndRestore sets. This is the one place mmrep relies on it;
    # tests/training/test_backup.py::test_keras_reads_private_initial_epoch fails if it goes.
    if not hasattr(model, "_initial_epoch"):
        raise RuntimeError(
            "This Keras version has no `Model._initial_epoch`; BackupAndRestore cannot set "
            f"the epoch to resume at (keras {keras.__version__})."
        )
    model._initial_epoch = epoch


def _optimizers(model):
    """`[(attribute, optimizer)]`: `model.optimizer` first, then other optimizer attributes."""
    found = []
    candidates = [("optimizer", getattr(model, "optimizer", None))] + sorted(vars(model).items())
    for name, value in candidates:
        if isinstance(value, keras.optimizers.Optimizer) and all(value is not o for _, o in found):
            found.append((name, value))
    return found


def _state(model):
    """`[(group, variable)]`: the model's variables, then each optimizer's, no duplicates."""
    seen, state = set(), []
    groups = [("model", model.variables)]
    groups += [(f"optimizer:{name}", opt.variables) for name, opt in _optimizers(model)]
    for group, variables in groups:
        for variable in variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                state.append((group, variable))
    return state


def _manifest(model, state):
    return {
        "variables": [
            {"group": g, "path": v.path, "shape": list(v.shape), "dtype": str(v.dtype)}
            for g, v in state
        ],
        "optimizers": {name: type(opt).__name__ for name, opt in _optimizers(model)},
    }


def _mismatches(saved, current):
    """Human-readable differences between two manifests (empty when they agree)."""
    problems = []
    if saved["optimizers"] != current["optimizers"]:
        problems.append(
            f"optimizers {saved['optimizers']} in the backup, {current['optimizers']} in the model"
        )
    groups = dict.fromkeys(v["group"] for v in saved["variables"] + current["variables"])
    for group in groups:
        old = [v for v in saved["variables"] if v["group"] == group]
        new = [v for v in current["variables"] if v["group"] == group]
        if len(old) != len(new):
            problems.append(f"{group}: {len(old)} variables in the backup, {len(new)} now")
            continue
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if (a["shape"], a["dtype"]) != (b["shape"], b["dtype"]):
                problems.append(
                    f"{group} variable {i}: {a['path']!r} {tuple(a['shape'])} {a['dtype']} in "
                    f"the backup, {b['path']!r} {tuple(b['shape'])} {b['dtype']} now"
                )
    return problems


class BackupAndRestore(keras.callbacks.Callback):
    """Backs up the training state atomically and resumes a killed `fit` from it.

    Pass it to every `fit` of a run (the same `backup_dir`); restart a killed process
    with the same command. See the module docstring for what a backup holds, the
    publication protocol and the multi-worker rules.

    Args:
        backup_dir: str or path-like. A local or shared (all workers) directory owned by
            this run; created when missing.
        save_freq: `"epoch"` (the default) or int. `"epoch"` backs up at the end of every
            epoch; an int N also backs up every N batches (resuming still starts from the
            newest end-of-epoch backup, see the module docstring).
        delete_checkpoint: bool. Whether to delete the backups when `fit` ends normally.
            Defaults to `True`.
        keep: int >= 1. How many published backups to keep; the newest end-of-epoch
            backup is always kept. Defaults to `2`, so that a damaged newest backup can
            fall back to the previous one.
        verbose: int. 1 prints a line per restore and backup. Defaults to `0`.

    Raises:
        ValueError: for a `backup_dir` that is empty, a URL or an existing file, or an
            invalid `save_freq`, `keep`, `delete_checkpoint` or `verbose`. In `fit`,
            when a backup exists but the model, or an optimizer other than
            `model.optimizer`, is not built yet.
        BackupMismatchError: in `fit`, when the backup holds another model's state
            (the message lists the differing variables or optimizers).
        OSError: in `fit`, when every published backup is damaged (a damaged one is
            skipped with a warning when an older one can be read).

    Example:

    >>> backup = BackupAndRestore("/shared/run-17/backup")
    >>> model.fit(train.dataset, epochs=20, callbacks=[train.callback, backup])  # doctest: +SKIP
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True, keep=2, verbose=0):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)) or not os.fspath(backup_dir):
            raise ValueError(f"Expected `backup_dir` to be a path. Received: {backup_dir!r}")
        backup_dir = os.fspath(backup_dir)
        if "://" in backup_dir:
            raise ValueError(
                "Expected `backup_dir` to be a file-system path with atomic renames (local or "
                f"a shared mount). Received: backup_dir={backup_dir!r}"
            )
        if save_freq != "epoch":
            if not is_int(save_freq, 1):
                raise ValueError(
                    f"Expected `save_freq` to be 'epoch' or a positive int. Received: {save_freq!r}"
                )
            save_freq = int(save_freq)
        keep = check_int("keep", keep, minimum=1)
        if not isinstance(delete_checkpoint, bool):
            raise ValueError(
                f"Expected `delete_checkpoint` to be a bool. Received: {delete_checkpoint!r}"
            )
        verbose = check_int("verbose", verbose, minimum=0)
        self.backup_dir = backup_dir
        self.save_freq = save_freq
        self.delete_checkpoint = delete_checkpoint
        self.keep = keep
        self.verbose = verbose
        self._check_dir()
        self._entries = []
        self._epoch = 0
        self._step = 0
        self._since_save = 0

    def _check_dir(self):
        if os.path.exists(self.backup_dir) and not os.path.isdir(self.backup_dir):
            raise ValueError(
                "Expected `backup_dir` to be a directory (or a path to create). Received: "
                f"backup_dir={self.backup_dir!r}, which is a file."
            )

    def _log(self, message):
        if self.verbose:
            print(f"BackupAndRestore: {message}", flush=True)

    # --- restore ---------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._check_dir()
        self._step = self._since_save = 0
        entries = store.read_index(self.backup_dir)
        resumed, epoch, damaged = None, None, []
        for entry in reversed(entries):
            if entry["step"] != 0:
                continue
            try:
                epoch = self._restore(entry)
            except OSError as error:  # damaged after publication: fall back to an older one
                damaged.append(str(error))
                warnings.warn(f"BackupAndRestore: {error}", stacklevel=2)
                continue
            resumed = entry
            break
        if damaged and resumed is None:
            raise OSError(f"No backup in {self.backup_dir} can be read: " + " | ".join(damaged))
        if is_chief():
            os.makedirs(self.backup_dir, exist_ok=True)
            if entries and entries[-1] is not resumed:
                # Backups newer than the resume point (mid-epoch ones, or damaged ones)
                # describe a future this run replays; unpublish them before pruning.
                entries = entries[: entries.index(resumed) + 1] if resumed else []
                store.publish_index(self.backup_dir, entries)
            self._entries = entries
            store.remove_leftovers(self.backup_dir, {e["name"] for e in entries})
        _set_initial_epoch(self.model, epoch)
        self._epoch = epoch or 0

    def _restore(self, entry):
        """Loads a published backup into the model and its optimizers; returns its epoch."""
        if not self.model.built:
            raise ValueError(
                f"BackupAndRestore found a backup in {self.backup_dir} but the model is not "
                "built; build it (call it on a batch or use keras.Input) before `fit`."
            )
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            with self.model.distribute_strategy.scope():
                optimizer.build(self.model.trainable_variables)
        for name, opt in _optimizers(self.model):
            if not opt.built:
                raise ValueError(
                    f"BackupAndRestore cannot restore `model.{name}`: the optimizer is not "
                    "built, so its slot variables do not exist yet. Build it before `fit` "
                    f"(`model.{name}.build(variables)`)."
                )
        folder = os.path.join(self.backup_dir, entry["name"])
        metadata, values = store.read_backup(self.backup_dir, entry["name"])
        state = _state(self.model)
        problems = _mismatches(metadata, _manifest(self.model, state))
        if problems:
            raise BackupMismatchError(
                f"The backup {folder} does not hold the training state of this model: "
                + "; ".join(problems[:6])
                + ("; ..." if len(problems) > 6 else "")
                + ". Use another `backup_dir` for another model, or delete this one."
            )
        for (_, variable), value in zip(state, values, strict=True):
            if str(value.dtype) != variable.dtype:  # bfloat16 and friends: stored as raw bits
                value = value.view(np.asarray(variable.numpy()).dtype)
            variable.assign(value)
        self._log(f"resumed from {folder} at epoch {metadata['epoch']}")
        return metadata["epoch"]

    # --- backup ----------------------------------------------------------------------

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._step = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the index of the last batch run (several with `steps_per_execution`).
        self._since_save += batch + 1 - self._step
        self._step = batch + 1
        last = self._step == (self.params or {}).get("steps")  # the epoch-end backup follows
        if self.save_freq != "epoch" and self._since_save >= self.save_freq and not last:
            self._save(self._epoch, self._step, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, 0, logs)

    def _save(self, epoch, step, logs):
        self._since_save = 0
        state = _state(self.model)
        values = [np.asarray(variable.numpy()) for _, variable in state]
        if not is_chief():
            return
        metadata = {
            "format": store.FORMAT,
            "epoch": epoch,
            "step": step,
            "logs": {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0},
            "keras_version": keras.__version__,
            **_manifest(self.model, state),
        }
        name = store.write_backup(self.backup_dir, epoch, step, values, metadata)
        entries = self._entries + [{"name": name, "epoch": epoch, "step": step}]
        kept = self._prune(entries)
        store.publish_index(self.backup_dir, kept)
        self._entries = kept
        for entry in entries:
            if entry not in kept:
                store.remove_backup(self.backup_dir, entry["name"])
        self._log(f"backed up epoch {epoch}" + (f" step {step}" if step else "") + f" to {name}")

    def _prune(self, entries):
        """The newest `keep` entries, plus the newest end-of-epoch one if it is older."""
        kept = entries[-self.keep :]
        ends = [entry for entry in entries if entry["step"] == 0]
        if ends and ends[-1] not in kept:
            kept = [ends[-1]] + kept
        return kept

    def on_train_end(self, logs=None):
        # Keras never clears its start epoch; a later `fit` of this model must not inherit it.
        _set_initial_epoch(self.model, None)
        if not self.delete_checkpoint or not is_chief() or not os.path.isdir(self.backup_dir):
            return
        store.delete_all(self.backup_dir)
        self._entries = []
