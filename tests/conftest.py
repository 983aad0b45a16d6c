"""Test-session setup: two logical CPU devices for tf.distribute, quiet logs, fixed seeds,
and the two tiers.

Plain `python -m pytest` runs the fast tier: every unit and reference test, and the
conformance harness with its expensive checks once per layer class. Tests marked `slow`
(every registry case through every check, recipes, CLI end-to-end runs, multi-worker
training, kill/resume, fresh-process serving, benchmark smoke runs, convergence) run only
with `--run-slow`, as keras-hub's large tests run only with `--run_large`. CI runs both.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import pytest
import tensorflow as tf

# MirroredStrategy tests need two devices; one CPU is split into two logical devices, which
# must happen before TensorFlow initialises its runtime (the first op).
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the slow tier (tests marked `slow`); CI runs both tiers",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow tier: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One small main-job run, trained once per session for the tests that read a run
    (tests/job/test_train_run.py and the CLI's evaluate/export/embed tests): tiny
    encoders, the first 64 examples of each split, two epochs of two steps, exported.

    Under pytest-xdist the workers share it: the first to need it trains it in the
    session's common temporary folder, under a file lock, and the others read it there.
    """
    import json

    from filelock import FileLock

    # The parent of a worker's base temporary folder is common to all workers.
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    with FileLock(str(shared / "tiny_run.lock")):
        made = shared / "tiny_run.json"
        if made.exists():
            return json.loads(made.read_text())
        run = _train_tiny_run(shared / "tiny_run")
        made.write_text(json.dumps(run))
        return run


def _train_tiny_run(root):
    import contextlib
    import io

    from mmrep.job import train_run, with_overrides
    from tests.job.tiny import TINY_RUN_LIMIT, tiny_config

    runs, exports = str(root / "runs"), str(root / "saved_models")
    config = with_overrides(
        tiny_config(),
        epochs=2,
        seed=3,
        export_dir=exports,
        batch_size=16,
        steps_per_epoch=2,
        limit=TINY_RUN_LIMIT,
    )
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        folder = train_run(config, runs_dir=runs, verbose=0)
    return {"folder": folder, "runs": runs, "exports": exports, "printed": buffer.getvalue()}


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)
