"""select_strategy and is_chief: TF_CONFIG validation, the decision order, TPU errors.

A real MultiWorkerMirroredStrategy cannot be made in the pytest process (it must come
before any TensorFlow op, and would start a server): its training is tested with real
worker processes in test_multi_worker.py, and here the decision is tested with the
strategy class replaced by a recorder. TPUs and several GPUs do not exist here either:
the TPU steps and MirroredStrategy are replaced by recorders, and an unreachable TPU
address is tried for real. A subprocess checks the clear error when
MultiWorkerMirroredStrategy comes after another TensorFlow op.
"""

import json
import os
import socket
import subprocess
import sys
import types

import pytest
import tensorflow as tf

from mmrep.training import is_chief, select_strategy
from mmrep.training import strategy as strategy_module
from mmrep.training.strategy import KerasMultiWorkerMirroredStrategy, read_tf_config
from tests.harness import two_device_strategy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(cluster=None, task=None, **extra):
    env = dict(extra)
    if cluster is not None or task is not None:
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
    return env


TWO_WORKERS = {"worker": ["host-a:2222", "host-b:2222"]}


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("{not json", r"not valid JSON .*Received: TF_CONFIG='\{not json'"),
        ("[1, 2]", "expected a JSON object with 'cluster' and 'task'"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), r"missing 'cluster'.*\['task'\]"),
        (json.dumps({"cluster": TWO_WORKERS}), r"missing 'task'.*\['cluster'\]"),
        (json.dumps({"cluster": {}, "task": {"type": "worker", "index": 0}}), "non-empty object"),
        (
            json.dumps(
                {"cluster": {"worker": "host-a:2222"}, "task": {"type": "worker", "index": 0}}
            ),
            r"cluster\['worker'\] to be a non-empty list",
        ),
        (
            json.dumps({"cluster": {"trainer": ["a:1"]}, "task": {"type": "trainer", "index": 0}}),
            "unknown job 'trainer'",
        ),
        (
            json.dumps({"cluster": TWO_WORKERS, "task": {"type": "chief", "index": 0}}),
            r"task type 'chief' is not a job of the cluster \{'worker': 2\}",
        ),
        (
            json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 2}}),
            "index 2 is out of range: the cluster has 2 'worker' task",
        ),
        (
            json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": True}}),
            "'index' to be an int >= 0, got True",
        ),
        (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker"}}), "expected 'task'"),
        (
            json.dumps(
                {"cluster": {**TWO_WORKERS, "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}}
            ),
            "parameter servers",
        ),
    ],
)
def test_invalid_tf_config_is_named(raw, match):
    for call in (read_tf_config, is_chief, select_strategy):
        with pytest.raises(ValueError, match=f"Invalid TF_CONFIG: .*{match}"):
            call(environ={"TF_CONFIG": raw})


@pytest.mark.parametrize(
    ("cluster", "task", "chief"),
    [
        (None, None, True),  # no TF_CONFIG: one process is its own chief
        (TWO_WORKERS, {"type": "worker", "index": 0}, True),
        (TWO_WORKERS, {"type": "worker", "index": 1}, False),
        ({"chief": ["c:1"], "worker": ["w:1"]}, {"type": "chief", "index": 0}, True),
        ({"chief": ["c:1"], "worker": ["w:1"]}, {"type": "worker", "index": 0}, False),
        (TWO_WORKERS, {"type": "evaluator", "index": 0}, False),
        ({"worker": ["w:1"]}, {"type": "worker", "index": 0}, True),
    ],
)
def test_is_chief(cluster, task, chief):
    assert is_chief(environ=_env(cluster, task)) is chief


def test_empty_tf_config_is_no_tf_config():
    assert read_tf_config({"TF_CONFIG": "  "}) is None
    assert read_tf_config({}) is None


class _Recorder:
    """Stands in for a strategy class: records its arguments, has a replica count."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.num_replicas_in_sync = 2


@pytest.fixture
def recorders(monkeypatch):
    """Replaces every strategy constructor and TPU step by recorders; logs the calls."""
    calls = []

    def record(name, result=None):
        def fn(*args, **kwargs):
            calls.append((name, args, kwargs))
            return result if result is not None else _Recorder(*args, **kwargs)

        return fn

    resolver = types.SimpleNamespace(master=lambda: "", name="resolver")
    monkeypatch.setattr(strategy_module, "KerasMultiWorkerMirroredStrategy", record("mwms"))
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", record("mirrored"))
    monkeypatch.setattr(tf.distribute, "TPUStrategy", record("tpu_strategy"))
    monkeypatch.setattr(
        tf.distribute.cluster_resolver, "TPUClusterResolver", record("tpu_resolver", resolver)
    )
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", record("connect", 1))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", record("initialize", 1))
    return calls


def _names(calls):
    return [c[0] for c in calls]


def test_multi_task_tf_config_makes_the_multi_worker_strategy(recorders, capsys):
    env = _env({"chief": ["c:1"], "worker": ["w:1", "w:2"]}, {"type": "worker", "index": 1})
    strategy = select_strategy(environ=env)
    assert _names(recorders) == ["mwms"]
    resolver = strategy.kwargs["cluster_resolver"]
    assert resolver.cluster_spec().as_dict() == {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
    assert (resolver.task_type, resolver.task_id, resolver.rpc_layer) == ("worker", 1, "grpc")
    assert capsys.readouterr().out.strip() == (
        "mmrep: _Recorder, 2 replica(s) (TF_CONFIG: task worker 1 of a 3-task cluster)"
    )


@pytest.mark.parametrize(
    "env",
    [
        _env({"worker": ["w:1"]}, {"type": "worker", "index": 0}),  # one task: no cluster
        _env(TWO_WORKERS, {"type": "evaluator", "index": 0}),  # outside the training cluster
        {},
    ],
)
def test_without_a_cluster_the_default_strategy(recorders, capsys, env):
    strategy = select_strategy(environ=env)
    assert recorders == []
    assert strategy is tf.distribute.get_strategy()
    assert not tf.distribute.has_strategy()  # the default: no scope is open
    assert strategy.num_replicas_in_sync == 1
    assert capsys.readouterr().out.startswith("mmrep: the default strategy, 1 replica(s) (")


def test_inside_a_scope_that_strategy():
    strategy = two_device_strategy()
    with strategy.scope():
        assert select_strategy(verbose=False, environ={}) is strategy


def test_several_gpus_make_mirrored_strategy_over_them(recorders, monkeypatch, capsys):
    gpus = [types.SimpleNamespace(name=f"/device:GPU:{i}") for i in range(3)]
    real = tf.config.list_logical_devices
    monkeypatch.setattr(
        tf.config, "list_logical_devices", lambda kind=None: gpus if kind == "GPU" else real(kind)
    )
    strategy = select_strategy(environ={})
    assert _names(recorders) == ["mirrored"]
    assert strategy.args == (["/device:GPU:0", "/device:GPU:1", "/device:GPU:2"],)
    assert "(3 GPUs visible)" in capsys.readouterr().out


def test_tpu_steps_in_order(recorders):
    strategy = select_strategy(tpu="grpc-less-name", environ={}, verbose=False)
    assert _names(recorders) == ["tpu_resolver", "connect", "initialize", "tpu_strategy"]
    resolver = recorders[0]
    assert resolver[2] == {"tpu": "grpc-less-name"}
    for name, args, _ in recorders[1:]:
        assert args[0].name == "resolver", name  # every step gets the resolver
    assert strategy.args[0].name == "resolver"


def test_tpu_argument_comes_before_tf_config_which_comes_before_tpu_name(recorders):
    cluster = _env(TWO_WORKERS, {"type": "worker", "index": 0}, TPU_NAME="env-tpu")
    select_strategy(tpu="arg-tpu", environ=cluster, verbose=False)
    assert recorders[0][2] == {"tpu": "arg-tpu"}
    recorders.clear()
    select_strategy(environ=cluster, verbose=False)
    assert _names(recorders) == ["mwms"]
    recorders.clear()
    select_strategy(environ={"TPU_NAME": "env-tpu"}, verbose=False)
    assert recorders[0][2] == {"tpu": "env-tpu"}


def test_unresolvable_tpu_is_named(recorders, monkeypatch):
    def fail(tpu):
        raise ValueError("Could not lookup TPU metadata from name 'my-tpu'")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", fail)
    with pytest.raises(RuntimeError, match="Cannot resolve the TPU 'my-tpu': ValueError: Could"):
        select_strategy(tpu="my-tpu", verbose=False)


def test_tpu_that_fails_to_initialise_is_named(recorders, monkeypatch):
    def fail(resolver):
        raise tf.errors.NotFoundError(None, None, "No registered 'ConfigureDistributedTPU'")

    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", fail)
    with pytest.raises(
        RuntimeError, match=r"initialise the TPU 'local' .*NotFoundError: No registered"
    ):
        select_strategy(tpu="local", verbose=False)


def test_unreachable_tpu_address_fails_fast_with_the_address():
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"grpc://127.0.0.1:{port}"
    with pytest.raises(RuntimeError, match=f"Cannot reach the TPU '{address}' at {address}"):
        select_strategy(tpu=address, environ={}, verbose=False)


@pytest.mark.parametrize(("kwargs", "name"), [({"tpu": ""}, "tpu"), ({"tpu": 3}, "tpu")])
def test_bad_tpu_argument_is_named(kwargs, name):
    with pytest.raises(ValueError, match=f"non-empty str .*Received: {name}="):
        select_strategy(environ={}, **kwargs)


@pytest.mark.slow  # multi-worker
def test_multi_worker_strategy_after_other_ops_gets_a_clear_error():
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CONFIG": json.dumps(
            {
                "cluster": {"worker": ["localhost:1", "localhost:2"]},
                "task": {"type": "worker", "index": 0},
            }
        ),
    }
    script = (
        "import tensorflow as tf\n"
        "tf.constant(1.0) + 1.0\n"
        "from mmrep.training import select_strategy\n"
        "try:\n"
        "    select_strategy()\n"
        "except RuntimeError as err:\n"
        "    print('ERROR', err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ERROR MultiWorkerMirroredStrategy must be created before")
    assert "select_strategy() first" in done.stdout


def test_multi_worker_strategy_is_tensorflows():
    assert issubclass(KerasMultiWorkerMirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
