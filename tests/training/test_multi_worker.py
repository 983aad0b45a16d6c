"""Two worker processes (MultiWorkerMirroredStrategy on loopback) train like one process.

Two workers, each a process with `TF_CONFIG` naming both on free loopback ports, run
tests/training/multi_worker_job.py: `select_strategy()` gives MultiWorkerMirroredStrategy
and `distribute_dataset` feeds `fit` (3 steps, global batch 8, so each worker's replica
gets 4 examples per step). A third process runs the same job without `TF_CONFIG` (one
device, the same global batches). The reference is that single process: for every model
of tests/training/worker_models.py, the workers' final weights must equal its final
weights to float round-off (a summed per-replica gradient against a whole-batch one:
`rtol=1e-5, atol=2e-6`, measured differences are <= 3e-7 with weights moving by up to
2.7), and the two workers' weights must be bitwise identical (they apply the same
all-reduced gradients). The control model (contrastive negatives from one worker only)
must differ, so the comparison can fail. The job also records which example ids each
worker receives from two TFRecord files under each shard policy, checked against the
documented sharding.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.training.multi_worker_job import free_ports, tf_config
from tests.training.worker_models import CONTROLS, MODELS

# The slow tier (--run-slow): multi-worker training.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 300
RTOL, ATOL = 1e-5, 2e-6
FILE_IDS = [list(range(6)), list(range(100, 106))]  # ids in each TFRecord file
SHARD_BATCH = 4  # the job's global batch for the sharding probe
TAGS = ("single", "worker0", "worker1")


def _write_id_files(folder):
    paths = []
    for i, ids in enumerate(FILE_IDS):
        path = os.path.join(folder, f"ids-{i}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for value in ids:
                feature = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
                example = tf.train.Example(features=tf.train.Features(feature={"id": feature}))
                writer.write(example.SerializeToString())
        paths.append(path)
    return paths


def _tail(path, chars=4000):
    with open(path, errors="replace") as f:
        return f.read()[-chars:]


def _run_jobs(jobs, timeout):
    """Runs `{tag: (argv, env, log path)}` together; kills all on a failure.

    Returns:
        `None` when every job succeeded, else a report with every job's output.
    """
    procs = {}
    deadline = time.monotonic() + timeout
    try:
        for tag, (argv, env, log) in jobs.items():
            with open(log, "w") as f:
                procs[tag] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=f)
        while any(p.poll() is None for p in procs.values()):
            failed = [t for t, p in procs.items() if p.returncode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
    codes = {tag: p.returncode for tag, p in procs.items()}
    if not any(codes.values()):
        return None
    logs = "\n".join(f"--- {tag} (exit {codes[tag]}) ---\n{_tail(jobs[tag][2])}" for tag in jobs)
    reason = "timed out" if time.monotonic() > deadline else "failed"
    return f"the multi-worker job {reason} (exit codes {codes}); output:\n{logs}"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("multi_worker"))
    files = _write_id_files(out)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    for name in ("TF_CONFIG", "TPU_NAME"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "tests.training.multi_worker_job", "--out", out]
    for _ in range(2):  # a second try only when a port was taken between choice and use
        ports = free_ports(2)
        jobs = {"single": (argv, env, os.path.join(out, "single.log"))}
        for i in range(2):
            jobs[f"worker{i}"] = (
                [*argv, "--shard-files", *files],
                {**env, "TF_CONFIG": tf_config(ports, i)},
                os.path.join(out, f"worker{i}.log"),
            )
        failure = _run_jobs(jobs, TIMEOUT_S)
        if failure is None:
            return out
        if "Could not start gRPC server" not in failure:
            break
    pytest.fail(failure)


def _load(out, name):
    loaded = {}
    for tag in TAGS:
        with np.load(os.path.join(out, f"{name}.{tag}.npz")) as arrays:
            loaded[tag] = dict(arrays)
    return loaded


def _keys(arrays, prefix):
    return sorted(k for k in arrays if k.startswith(prefix))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_two_workers_match_one_process(results, name):
    runs = _load(results, name)
    single = runs["single"]
    for key in _keys(single, "initial_"):  # the same start everywhere
        for tag in ("worker0", "worker1"):
            np.testing.assert_array_equal(runs[tag][key], single[key], err_msg=f"{tag} {key}")
    finals = _keys(single, "final_")
    assert finals, f"no weights recorded for {name}"
    moved = max(np.abs(single[k] - single[k.replace("final", "initial")]).max() for k in finals)
    assert moved > 1e-3, f"{name}: training changed no weight (max change {moved})"
    for key in finals:
        np.testing.assert_array_equal(
            runs["worker0"][key], runs["worker1"][key], err_msg=f"{name} {key}: workers differ"
        )
        np.testing.assert_allclose(
            runs["worker0"][key],
            single[key],
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"{name} {key}: two workers vs one process",
        )
    for key in _keys(single, "history_"):  # the reported loss is the global-batch loss
        np.testing.assert_allclose(runs["worker0"][key], single[key], rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_control_differs_from_one_process(results, name):
    runs = _load(results, name)
    gaps = [
        np.abs(runs["worker0"][k] - runs["single"][k]).max()
        for k in _keys(runs["single"], "final_")
    ]
    assert max(gaps) > 100 * ATOL, f"{name} matched the single process (max gap {max(gaps)})"


def test_shard_policies_split_the_files_as_documented(results):
    seen = {}
    for i in range(2):
        with open(os.path.join(results, f"shards.worker{i}.json")) as f:
            seen[i] = json.load(f)
    everything = [i for ids in FILE_IDS for i in ids]
    batches = [everything[s : s + SHARD_BATCH] for s in range(0, len(everything), SHARD_BATCH)]
    half = SHARD_BATCH // 2
    for worker in range(2):
        # "auto" on files is FILE sharding: worker i reads file i only.
        assert seen[worker]["auto"] == FILE_IDS[worker]
        assert seen[worker]["file"] == FILE_IDS[worker]
        # "data": the single-process global batches, each worker keeping its half.
        expected = [i for b in batches for i in b[worker * half : (worker + 1) * half]]
        assert seen[worker]["data"] == expected
        # "off": every worker sees every example.
        assert seen[worker]["off"] == everything
