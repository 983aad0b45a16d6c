"""Tests for `mmrep.training.BackupAndRestore`: resuming after SIGKILL, atomic publication,
pruning, what a backup holds, multi-worker roles and errors.

The end-to-end tests run tests/training/backup_job.py in subprocesses (deterministic ops,
dropout, Adam, `epoch_shuffled` input), kill them with SIGKILL mid-epoch or in the middle
of a backup write, restart the same command, and compare the final weights and optimizer
state with an uninterrupted run of the job, bit for bit: the resumed process restores
every variable exactly (stored as raw arrays) and replays the same ops on the same batches
in the same order, so nothing may differ, not even the last bit.
"""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from mmrep.training import backup_store
from mmrep.training.backup import BackupAndRestore, BackupMismatchError, _set_initial_epoch
from tests.harness import two_device_strategy

ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT = 120
X = np.random.default_rng(0).standard_normal((12, 3)).astype("float32")
Y = X.sum(axis=1, keepdims=True)


# --- end to end: kill, restart, same weights -------------------------------------------


def _job(tmp, *faults):
    return [
        sys.executable,
        "-m",
        "tests.training.backup_job",
        "--backup-dir",
        str(tmp / "backup"),
        "--out",
        str(tmp / "final.npz"),
        "--log",
        str(tmp / "log.jsonl"),
        *faults,
    ]


def _env():
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    return env


def _run(command, tmp):
    with open(tmp / "stderr.txt", "ab") as stderr:
        return subprocess.run(
            command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr,
            timeout=JOB_TIMEOUT,
        ).returncode  # fmt: skip


def _tail(tmp):
    return (tmp / "stderr.txt").read_text()[-3000:]


def _epochs_per_process(tmp):
    return [json.loads(line)["epochs"] for line in (tmp / "log.jsonl").read_text().splitlines()]


def _assert_same_state(tmp, reference):
    with np.load(tmp / "final.npz") as got, np.load(reference) as want:
        assert sorted(got.files) == sorted(want.files)
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"state variable {key}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A function giving the final state of an uninterrupted run of the job.

    The run starts at once and goes on beside the first test's own runs.
    """
    tmp = tmp_path_factory.mktemp("uninterrupted")
    with open(tmp / "stderr.txt", "ab") as stderr:
        process = subprocess.Popen(
            _job(tmp), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr
        )

    def final_state():
        assert process.wait(timeout=JOB_TIMEOUT) == 0, _tail(tmp)
        assert _epochs_per_process(tmp) == [[0, 1, 2, 3]]
        return tmp / "final.npz"

    yield final_state
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.slow  # kill and resume
def test_sigkill_mid_epoch_then_restart_matches_uninterrupted_run(tmp_path, reference):
    command = _job(tmp_path, "--pause-at", "1:1", "--pause-marker", str(tmp_path / "paused"))
    with open(tmp_path / "stderr.txt", "ab") as stderr:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while not (tmp_path / "paused").exists():
            assert process.poll() is None, f"the job ended before pausing: {_tail(tmp_path)}"
            assert time.monotonic() < deadline, "the job did not reach epoch 1, batch 1"
            time.sleep(0.05)
        # Killed in the middle of epoch 1 (batch 1 of 4), after epoch 0's backup.
        index = backup_store.read_index(str(tmp_path / "backup"))
        assert [(e["epoch"], e["step"]) for e in index] == [(1, 0)]
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert _run(command, tmp_path) == 0, _tail(tmp_path)
    assert _epochs_per_process(tmp_path) == [[0, 1], [1, 2, 3]]
    _assert_same_state(tmp_path, reference())
    assert not (tmp_path / "backup").exists()  # deleted once training finished


@pytest.mark.slow  # kill and resume
def test_sigkill_during_backup_writes_resumes_from_previous_backup(tmp_path, reference):
    backup = tmp_path / "backup"
    command = _job(
        tmp_path,
        "--die-in-write",
        f"2:rename:{tmp_path / 'killed-1'}",  # temp folder complete, not renamed
        "--die-in-write",
        f"3:publish:{tmp_path / 'killed-2'}",  # renamed, index not replaced
    )
    assert _run(command, tmp_path) == -signal.SIGKILL, _tail(tmp_path)
    assert [e["epoch"] for e in backup_store.read_index(str(backup))] == [1]
    assert [p.name for p in backup.iterdir() if p.name.startswith(".tmp-")]

    assert _run(command, tmp_path) == -signal.SIGKILL, _tail(tmp_path)
    index = backup_store.read_index(str(backup))
    assert [e["epoch"] for e in index] == [1, 2]
    unlisted = {p.name for p in backup.iterdir()} - {e["name"] for e in index} - {"backups.json"}
    assert len(unlisted) == 1 and unlisted.pop().startswith("epoch-000003-")

    assert _run(command, tmp_path) == 0, _tail(tmp_path)
    assert _epochs_per_process(tmp_path) == [[0, 1], [1, 2], [2, 3]]
    _assert_same_state(tmp_path, reference())


# --- in-process unit tests -------------------------------------------------------------


def _model(units=8, optimizer=None):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer or keras.optimizers.Adam(0.01), loss="mse")
    return model


class _Epochs(keras.callbacks.Callback):
    def __init__(self, fail_at=None):
        super().__init__()
        self.seen, self.fail_at = [], fail_at

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if (self.seen[-1], batch) == self.fail_at:
            raise RuntimeError("interrupted")


def _fit(model, backup_dir, epochs, record=None, batch_size=4, **kwargs):
    callbacks = [BackupAndRestore(str(backup_dir), **kwargs), record or _Epochs()]
    model.fit(X, Y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0,
              callbacks=callbacks)  # fmt: skip
    return callbacks[1].seen


def _state(model):
    return [np.array(v.numpy()) for v in model.variables + model.optimizer.variables]


def _index(backup_dir):
    return [(e["epoch"], e["step"]) for e in backup_store.read_index(str(backup_dir))]


@pytest.mark.parametrize("loss_scale", [False, True], ids=["adam", "loss_scale_adam"])
def test_restores_weights_optimizer_and_rng_state_exactly(tmp_path, loss_scale):
    def optimizer():
        adam = keras.optimizers.Adam(0.01)
        return keras.optimizers.LossScaleOptimizer(adam, 2.0**10, 2) if loss_scale else adam

    trained = _model(optimizer=optimizer())
    _fit(trained, tmp_path, epochs=2, delete_checkpoint=False)
    expected = _state(trained)
    assert int(trained.optimizer.iterations.numpy()) == 6
    if loss_scale:  # the dynamic scale doubled after every 2 steps
        assert float(trained.optimizer.dynamic_scale.numpy()) == 2.0**13

    fresh = _model(optimizer=optimizer())
    assert not np.array_equal(fresh.layers[0].kernel.numpy(), trained.layers[0].kernel.numpy())
    assert _fit(fresh, tmp_path, epochs=2, delete_checkpoint=False) == []  # nothing left to run
    got = _state(fresh)
    assert len(got) == len(expected)
    paths = [v.path for v in fresh.variables + fresh.optimizer.variables]
    assert any("seed_generator_state" in p for p in paths)  # dropout's RNG is state too
    for path, a, b in zip(paths, got, expected, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=path)


def test_resume_starts_at_the_backed_up_epoch(tmp_path):
    first = _model()
    assert _fit(first, tmp_path / "b", epochs=2, delete_checkpoint=False) == [0, 1]
    second = _model()
    assert _fit(second, tmp_path / "b", epochs=4) == [2, 3]
    assert not (tmp_path / "b").exists()  # delete_checkpoint=True: the finished run's are gone
    # Keras never clears the start epoch it was given; the callback does, for the next fit.
    assert _fit(second, tmp_path / "other", epochs=1) == [0]


def test_keras_reads_private_initial_epoch():
    # The one private Keras attribute BackupAndRestore relies on: fit starts at
    # `model._initial_epoch` when a callback sets it in on_train_begin.
    class StartAt(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            _set_initial_epoch(self.model, 3)

    record = _Epochs()
    model = _model()
    model.fit(X, Y, epochs=5, verbose=0, callbacks=[StartAt(), record])
    assert record.seen == [3, 4]


def test_torn_temp_folder_and_unpublished_backup_are_ignored_and_cleaned(tmp_path):
    _fit(_model(), tmp_path, epochs=1, delete_checkpoint=False)
    (published,) = backup_store.read_index(str(tmp_path))
    # What a kill can leave behind: a half-written temp folder, a renamed but unpublished
    # (newer, complete) backup, and a temp copy of the index.
    (tmp_path / ".tmp-0123").mkdir()
    (tmp_path / ".tmp-0123" / "state.npz").write_bytes(b"PK\x03\x04 torn")
    unpublished = tmp_path / "epoch-000007-0123abcd"
    unpublished.mkdir()
    for name in ("state.npz", "metadata.json"):
        (unpublished / name).write_bytes((tmp_path / published["name"] / name).read_bytes())
    (tmp_path / "backups.json.tmp-99").write_text("{")
    (tmp_path / "notes.txt").write_text("not ours")

    assert _fit(_model(), tmp_path, epochs=3, delete_checkpoint=False) == [1, 2]
    listed = {e["name"] for e in backup_store.read_index(str(tmp_path))}
    assert {p.name for p in tmp_path.iterdir()} == listed | {"backups.json", "notes.txt"}


def test_keep_prunes_old_backups_after_publication(tmp_path):
    _fit(_model(), tmp_path / "two", epochs=4, delete_checkpoint=False)
    assert _index(tmp_path / "two") == [(3, 0), (4, 0)]
    _fit(_model(), tmp_path / "one", epochs=3, delete_checkpoint=False, keep=1)
    assert _index(tmp_path / "one") == [(3, 0)]
    for folder in ("two", "one"):
        listed = {e["name"] for e in backup_store.read_index(str(tmp_path / folder))}
        assert {p.name for p in (tmp_path / folder).iterdir()} == listed | {"backups.json"}


def test_mid_epoch_backups_never_move_the_resume_point(tmp_path):
    # 6 batches an epoch, a backup every 4 batches and at every epoch end: (epoch, step) =
    # (0, 4), (1, 0), (1, 4) before the failure at epoch 1, batch 3.
    model = _model()
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(model, tmp_path, 3, _Epochs(fail_at=(1, 3)), batch_size=2, save_freq=4, keep=1,
             delete_checkpoint=False)  # fmt: skip
    # keep=1 keeps the newest backup and the newest end-of-epoch one.
    assert _index(tmp_path) == [(1, 0), (1, 4)]
    # The restart resumes at the start of epoch 1, and unpublishes the mid-epoch backup.
    record = _Epochs(fail_at=(1, 0))
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(_model(), tmp_path, 3, record, batch_size=2, save_freq=4, delete_checkpoint=False)
    assert record.seen == [1]
    assert _index(tmp_path) == [(1, 0)]


def test_non_chief_worker_restores_from_the_chief_and_writes_nothing(tmp_path, monkeypatch):
    _fit(_model(), tmp_path, epochs=1, delete_checkpoint=False)  # as the chief
    (tmp_path / ".tmp-left").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))  # fmt: skip
    assert _fit(_model(), tmp_path, epochs=3) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert _index(tmp_path) == [(1, 0)]
    _fit(_model(), tmp_path / "fresh", epochs=1)
    assert not (tmp_path / "fresh").exists()


def test_mirrored_strategy_backup_restores_every_replica(tmp_path):
    strategy = two_device_strategy()
    with strategy.scope():
        trained = _model()
    _fit(trained, tmp_path, epochs=1, delete_checkpoint=False)
    with strategy.scope():
        fresh = _model()
    assert _fit(fresh, tmp_path, epochs=1) == []
    for got, want in zip(fresh.variables, trained.variables, strict=True):
        for replica in strategy.experimental_local_results(got.value):
            np.testing.assert_array_equal(replica.numpy(), want.numpy(), err_msg=got.path)


def test_bad_arguments_raise_clear_errors(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"directory.*file'.*which is a file"):
        BackupAndRestore(str(a_file))
    with pytest.raises(ValueError, match="atomic renames"):
        BackupAndRestore("gs://bucket/backup")
    for kwargs in ({"save_freq": 0}, {"save_freq": "batch"}, {"save_freq": True}):
        with pytest.raises(ValueError, match="save_freq"):
            BackupAndRestore(str(tmp_path / "b"), **kwargs)
    with pytest.raises(ValueError, match="keep"):
        BackupAndRestore(str(tmp_path / "b"), keep=0)


def test_backup_of_another_model_is_refused_not_partly_loaded(tmp_path):
    _fit(_model(units=8), tmp_path, epochs=1, delete_checkpoint=False)
    wider = _model(units=16)
    before = [np.array(v.numpy()) for v in wider.variables]
    with pytest.raises(BackupMismatchError, match=r"\(3, 8\) float32 in the backup.*\(3, 16\)"):
        _fit(wider, tmp_path, epochs=2)
    for a, b in zip(wider.variables, before, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)  # nothing was loaded
    assert int(wider.optimizer.iterations.numpy()) == 0
    with pytest.raises(BackupMismatchError, match=r"'Adam'\} in the backup.*'SGD'\} in the model"):
        _fit(_model(optimizer=keras.optimizers.SGD()), tmp_path, epochs=2)


def test_damaged_backup_falls_back_to_the_previous_one(tmp_path):
    _fit(_model(), tmp_path, epochs=2, delete_checkpoint=False)
    _, newest = backup_store.read_index(str(tmp_path))
    state = tmp_path / newest["name"] / "state.npz"
    damaged = bytearray(state.read_bytes())
    damaged[len(damaged) // 2] ^= 1  # one bit flipped after publication: the CRC catches it
    state.write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match=newest["name"]):
        assert _fit(_model(), tmp_path, epochs=2, delete_checkpoint=False) == [1]
    for entry in backup_store.read_index(str(tmp_path)):
        (tmp_path / entry["name"] / "metadata.json").write_text("{")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(OSError, match=r"No backup in .* can be read.*metadata|JSON"):
            _fit(_model(), tmp_path, epochs=2)
