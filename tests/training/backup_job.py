"""A small deterministic training job that tests/training/test_backup.py kills and restarts.

Run as `python -m tests.training.backup_job --backup-dir D --out W.npz [faults]`. It trains
a Dense-ReLU-Dropout-Dense regressor with Adam for a few epochs on fixed data shuffled by
`epoch_shuffled`, under `enable_op_determinism`, with `BackupAndRestore(D)`, and writes the
final model and optimizer variables to `W.npz`. Each process appends a line
`{"pid", "epochs"}` (the epochs it began) to `--log` when it ends or is about to be killed.

Faults (each fires once: it creates its marker file first, and a later run of the same
command sees the marker and goes on):

- `--pause-at EPOCH:BATCH --pause-marker M`: after that batch, create M and sleep, for the
  test to SIGKILL the process;
- `--die-in-write EPOCH:PHASE:MARKER` (repeatable): SIGKILL itself while writing the
  end-of-epoch backup that resumes at EPOCH, with PHASE `rename` (the temporary folder is
  complete, not yet renamed) or `publish` (renamed, the index not yet replaced).
"""

import argparse
import json
import os
import signal
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from mmrep.training import backup_store
from mmrep.training.backup import BackupAndRestore
from mmrep.training.epoch_shuffle import epoch_shuffled

EXAMPLES, FEATURES, BATCH = 24, 6, 6  # 4 batches per epoch


def _kill_self():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _claim(marker):
    """Creates `marker`; False when it exists already (the fault fired in an earlier run)."""
    try:
        with open(marker, "x"):
            return True
    except FileExistsError:
        return False


def _install_write_faults(faults, log):
    rename, publish = backup_store.rename_into_place, backup_store.publish_index

    def fire(epoch, phase):
        for fault_epoch, fault_phase, marker in faults:
            if (fault_epoch, fault_phase) == (epoch, phase) and _claim(marker):
                log()
                _kill_self()

    def rename_into_place(tmp, final):
        fire(int(os.path.basename(final).split("-")[1]), "rename")
        rename(tmp, final)

    def publish_index(backup_dir, entries):
        if entries and entries[-1]["step"] == 0:
            fire(entries[-1]["epoch"], "publish")
        publish(backup_dir, entries)

    backup_store.rename_into_place = rename_into_place
    backup_store.publish_index = publish_index


class _Recorder(keras.callbacks.Callback):
    """Records the epochs run (`write_log`); pauses, to be killed, at one batch."""

    def __init__(self, log_path, pause_at, pause_marker):
        super().__init__()
        self.log_path, self.pause_at, self.pause_marker = log_path, pause_at, pause_marker
        self.epochs, self.epoch = [], None

    def write_log(self):
        with open(self.log_path, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "epochs": self.epochs}) + "\n")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epochs.append(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if self.pause_at == (self.epoch, batch) and _claim(self.pause_marker):
            self.write_log()
            time.sleep(300)  # the test kills the process here


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backup-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pause-at", default=None)
    parser.add_argument("--pause-marker", default=None)
    parser.add_argument("--die-in-write", action="append", default=[])
    args = parser.parse_args(argv)

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(1)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((EXAMPLES, FEATURES)).astype("float32")
    y = (x @ rng.standard_normal((FEATURES, 1)) + 0.1).astype("float32")
    train = epoch_shuffled(tf.data.Dataset.from_tensor_slices((x, y)), BATCH, seed=5)

    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")

    pause_at = tuple(map(int, args.pause_at.split(":"))) if args.pause_at else None
    recorder = _Recorder(args.log, pause_at, args.pause_marker)
    faults = [fault.split(":", 2) for fault in args.die_in_write]
    faults = [(int(epoch), phase, marker) for epoch, phase, marker in faults]
    _install_write_faults(faults, recorder.write_log)
    backup = BackupAndRestore(args.backup_dir)
    model.fit(
        train.dataset,
        epochs=args.epochs,
        callbacks=[train.callback, backup, recorder],
        shuffle=False,  # epoch_shuffled orders the data
        verbose=0,
    )
    state = model.variables + model.optimizer.variables
    np.savez(args.out, **{f"v{i:03d}": np.asarray(v.numpy()) for i, v in enumerate(state)})
    recorder.write_log()


if __name__ == "__main__":
    main()
