"""Choosing a `tf.distribute.Strategy` from the environment, and which process is the chief.

`select_strategy()` lets one training script run unchanged on one CPU, several GPUs, a
multi-worker cluster or a TPU: build the model, optimizer and metrics under
`strategy.scope()` and call `fit` as usual.

Order of the decision (the first that applies):

1. `tpu=` argument: `TPUStrategy` on that TPU.
2. `TF_CONFIG` describing more than one `chief`/`worker` task:
   `MultiWorkerMirroredStrategy` (synchronous data parallelism over the cluster).
3. `TPU_NAME` in the environment: `TPUStrategy` on that TPU.
4. More than one visible GPU: `MirroredStrategy` over all of them.
5. Otherwise the default strategy (`tf.distribute.get_strategy()`: one device, or the
   strategy whose scope is already open).

MultiWorkerMirroredStrategy must be created before any other TensorFlow operation in the
process: it configures the runtime's collective ops and starts this task's gRPC server,
which TensorFlow refuses once the runtime is running ("Collective ops must be configured
at program startup"). Call `select_strategy()` first thing, before building models,
datasets or tensors (importing TensorFlow, Keras and mmrep is fine).

Keras 3 `fit` under MultiWorkerMirroredStrategy. Keras' TensorFlow trainer (3.15)
reduces a nested data batch with `strategy.reduce(..., axis=None)` to build the model,
and reduces the scalar logs with `axis=0`; TensorFlow's multi-worker strategy accepts
neither (it has no nested reduce, and a scalar has no axis 0), so `fit` fails on any
model (keras-team/keras#20329). The strategy returned here is
`KerasMultiWorkerMirroredStrategy`, a `tf.distribute.MultiWorkerMirroredStrategy` whose
`reduce` accepts both; every other behaviour is TensorFlow's.
"""

import json
import os
import socket

import tensorflow as tf

from mmrep.utils.arguments import is_int

_TRAINING_JOBS = ("chief", "worker")
_KNOWN_JOBS = ("chief", "worker", "ps", "evaluator")
# The dtypes TensorFlow's collective reduce accepts (CollectiveReduceV2).
_COLLECTIVE_DTYPES = (tf.bfloat16, tf.float16, tf.float32, tf.float64, tf.int32, tf.int64)
_TPU_CONNECT_TIMEOUT_S = 10.0


class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` whose `reduce` works with Keras `fit`.

    Keras 3's TensorFlow trainer calls `strategy.reduce` in two ways that TensorFlow's
    multi-worker strategy rejects: on a whole (nested) data batch, to learn the input
    shapes before building, and with `axis=0` on scalar logs (the loss and metrics of a
    step). This subclass reduces each leaf of a nested value separately, and reduces a
    scalar across replicas only (there is no axis to reduce within a replica). A leaf of
    a dtype that collective ops cannot reduce (uint8 images, bool, string; TensorFlow
    raises for those) is returned as this worker's first local value: no reduction of
    it is defined, and Keras only reads its shape and dtype. Values that TensorFlow
    already reduces are reduced exactly as TensorFlow does.

    Args:
        cluster_resolver: `tf.distribute.cluster_resolver.ClusterResolver` or `None`
            (read `TF_CONFIG`), as for `tf.distribute.MultiWorkerMirroredStrategy`.
        communication_options: `tf.distribute.experimental.CommunicationOptions` or
            `None`.

    Reference:
        keras-team/keras#20329, "Tensorflow MultiWorkerMirroredStrategy and input
        dictionaries".
    """

    def reduce(self, reduce_op, value, axis=None):
        """Reduces a per-replica value (or each leaf of a nested one) across replicas.

        Args:
            reduce_op: `tf.distribute.ReduceOp` or its name (`"SUM"`, `"MEAN"`).
            value: a per-replica value, tensor, or a nested structure of them.
            axis: int or `None`. Also reduce along this axis within each replica;
                ignored for scalars.

        Returns:
            The reduced tensor, or the structure of reduced tensors.
        """
        reduce_leaf = super().reduce

        def one(leaf):
            local = self.experimental_local_results(leaf)[0]
            if not hasattr(local, "dtype"):  # a Python number: TensorFlow's own handling
                return reduce_leaf(reduce_op, leaf, axis)
            if local.dtype not in _COLLECTIVE_DTYPES:
                return local
            leaf_axis = None if local.shape.rank == 0 else axis
            return reduce_leaf(reduce_op, leaf, leaf_axis)

        return tf.nest.map_structure(one, value)


def _tf_config_error(message, raw):
    shown = raw if len(raw) <= 300 else raw[:300] + "..."
    return ValueError(f"Invalid TF_CONFIG: {message}. Received: TF_CONFIG={shown!r}")


def _check_cluster(cluster, raw):
    if not isinstance(cluster, dict) or not cluster:
        raise _tf_config_error(
            "expected 'cluster' to be a non-empty object {job name: [\"host:port\", ...]}", raw
        )
    for job, addresses in cluster.items():
        if job not in _KNOWN_JOBS:
            raise _tf_config_error(
                f"unknown job {job!r} in 'cluster'; expected jobs among {_KNOWN_JOBS}", raw
            )
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) and a for a in addresses)
        ):
            raise _tf_config_error(
                f'expected cluster[{job!r}] to be a non-empty list of "host:port" strings',
                raw,
            )
    if "ps" in cluster:
        raise _tf_config_error(
            "the cluster has parameter servers ('ps'); select_strategy makes "
            "MultiWorkerMirroredStrategy (chief and worker tasks only). Create "
            "tf.distribute.ParameterServerStrategy yourself for parameter-server training",
            raw,
        )


def _check_task(task, cluster, raw):
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise _tf_config_error(
            'expected \'task\' to be an object {"type": job name, "index": int}', raw
        )
    task_type, index = task["type"], task["index"]
    if not is_int(index, 0):
        raise _tf_config_error(f"expected task 'index' to be an int >= 0, got {index!r}", raw)
    # An evaluator watches the training cluster from outside it, so it need not be listed.
    if task_type == "evaluator" and "evaluator" not in cluster:
        return
    sizes = {job: len(addresses) for job, addresses in cluster.items()}
    if task_type not in cluster:
        raise _tf_config_error(
            f"the task type {task_type!r} is not a job of the cluster {sizes}", raw
        )
    if index >= sizes[task_type]:
        raise _tf_config_error(
            f"task {task_type!r} index {index} is out of range: the cluster has "
            f"{sizes[task_type]} {task_type!r} task(s)",
            raw,
        )


def read_tf_config(environ=None):
    """Parses and validates `TF_CONFIG`.

    Args:
        environ: mapping. The environment to read. Defaults to `os.environ`.

    Returns:
        The parsed dict (with `"cluster"` and `"task"`), or `None` when `TF_CONFIG` is
        unset or empty.

    Raises:
        ValueError: naming what is wrong and showing what was received: invalid JSON,
            not an object, a missing or malformed `"cluster"` or `"task"`, a task
            that is not in the cluster, or a parameter-server cluster.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "")
    if not raw or not raw.strip():
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise _tf_config_error(f"not valid JSON ({err.msg} at position {err.pos})", raw) from err
    if not isinstance(config, dict):
        raise _tf_config_error("expected a JSON object with 'cluster' and 'task'", raw)
    for key in ("cluster", "task"):
        if key not in config:
            raise _tf_config_error(
                f"missing {key!r} (expected keys 'cluster' and 'task'; got {sorted(config)})",
                raw,
            )
    _check_cluster(config["cluster"], raw)
    _check_task(config["task"], config["cluster"], raw)
    return config


def _training_tasks(config):
    return sum(len(config["cluster"].get(job, ())) for job in _TRAINING_JOBS)


def is_chief(environ=None):
    """Whether this process is the chief of its training cluster.

    The chief is the task that writes checkpoints, exports and logs: the `"chief"` task
    when the cluster has one, else `"worker"` 0; a process without `TF_CONFIG` (single
    process training) is its own chief. An evaluator is never the chief.

    Args:
        environ: mapping. The environment to read. Defaults to `os.environ`.

    Returns:
        bool.

    Raises:
        ValueError: when `TF_CONFIG` is invalid (see `read_tf_config`).
    """
    config = read_tf_config(environ)
    if config is None:
        return True
    task_type, index = config["task"]["type"], config["task"]["index"]
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in config["cluster"]


def _multi_worker_strategy(config):
    task = config["task"]
    gpus = len(tf.config.list_physical_devices("GPU"))  # lists without starting the runtime
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(config["cluster"]),
        task_type=task["type"],
        task_id=task["index"],
        rpc_layer=config.get("rpc_layer") or "grpc",
        num_accelerators={"GPU": gpus} if gpus else None,
    )
    try:
        return KerasMultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except RuntimeError as err:
        if "program startup" not in str(err):
            raise
        raise RuntimeError(
            "MultiWorkerMirroredStrategy must be created before any other TensorFlow "
            "operation in the process (it configures collective ops and starts this "
            "task's server, which TensorFlow refuses once its runtime is running). Call "
            "mmrep.training.select_strategy() first thing in the script, before building "
            f"models, datasets or tensors. TensorFlow said: {err}"
        ) from err


def _check_reachable(master, tpu):
    """Fails fast when a `grpc://host:port` TPU address refuses connections.

    `tf.config.experimental_connect_to_cluster` waits for an unreachable address without
    a time limit, so the address is tried with a plain TCP connection first.
    """
    if not master.startswith("grpc://"):
        return
    host, _, port = master[len("grpc://") :].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=_TPU_CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f"Cannot reach the TPU {tpu!r} at {master}: {err}. Check the address (a Cloud "
            "TPU name, 'local' on a TPU VM, or grpc://host:port) and that the TPU is up."
        ) from err


def _tpu_strategy(tpu):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    except Exception as err:  # a name lookup, a missing Cloud TPU client: say which TPU
        raise RuntimeError(
            f"Cannot resolve the TPU {tpu!r}: {type(err).__name__}: {err}. Expected a Cloud "
            "TPU name, 'local' on a TPU VM, or grpc://host:port."
        ) from err
    master = resolver.master()
    _check_reachable(master, tpu)
    try:
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as err:  # the runtime's error names neither the TPU nor the address
        raise RuntimeError(
            f"Cannot connect to or initialise the TPU {tpu!r} (master {master or 'local'!r})"
            f": {type(err).__name__}: {err}"
        ) from err
    return tf.distribute.TPUStrategy(resolver)


def _check_tpu_argument(tpu, source):
    if not isinstance(tpu, str) or not tpu.strip():
        raise ValueError(
            "Expected the TPU address to be a non-empty str (a Cloud TPU name, 'local', or "
            f"grpc://host:port). Received: {source}={tpu!r}"
        )


def select_strategy(tpu=None, environ=None, verbose=True):
    """Chooses and creates the `tf.distribute.Strategy` the environment asks for.

    See the module docstring for the order of the decision. Create the model, the
    optimizer and the metrics under `strategy.scope()`; batch the input to the global
    batch with `mmrep.training.distribute_dataset`. In a multi-worker job every worker
    runs the same script with its own `TF_CONFIG`, and only the chief (`is_chief()`)
    should write exports and logs.

    Args:
        tpu: str or `None`. A TPU to train on: a Cloud TPU name, `"local"` on a TPU VM,
            or `"grpc://host:port"`. `None` reads `TPU_NAME` from the environment (after
            `TF_CONFIG`, see above). Defaults to `None`.
        environ: mapping. The environment to read `TF_CONFIG` and `TPU_NAME` from.
            Defaults to `os.environ`.
        verbose: bool. Print one line saying which strategy was chosen and why.
            Defaults to `True`.

    Returns:
        A `tf.distribute.Strategy`: `TPUStrategy`, `KerasMultiWorkerMirroredStrategy`
        (a `tf.distribute.MultiWorkerMirroredStrategy`), `MirroredStrategy` or the
        default strategy.

    Raises:
        ValueError: for an invalid `TF_CONFIG` (see `read_tf_config`) or an empty TPU
            address.
        RuntimeError: when the TPU cannot be resolved, reached or initialised, or when
            MultiWorkerMirroredStrategy is created after other TensorFlow operations.

    Example:

    ```python
    strategy = select_strategy()  # first thing in the script
    with strategy.scope():
        model = build_model()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(distribute_dataset(examples, global_batch_size=64, strategy=strategy))
    ```
    """
    environ = os.environ if environ is None else environ
    config = read_tf_config(environ)
    tasks = 0 if config is None else _training_tasks(config)
    evaluator = config is not None and config["task"]["type"] == "evaluator"
    if tpu is not None:
        _check_tpu_argument(tpu, "tpu")
        strategy, reason = _tpu_strategy(tpu), f"tpu={tpu!r}"
    elif tasks > 1 and not evaluator:
        strategy = _multi_worker_strategy(config)
        task = config["task"]
        reason = f"TF_CONFIG: task {task['type']} {task['index']} of a {tasks}-task cluster"
    elif environ.get("TPU_NAME"):
        name = environ["TPU_NAME"]
        _check_tpu_argument(name, "TPU_NAME")
        strategy, reason = _tpu_strategy(name), f"TPU_NAME={name!r}"
    else:
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy([d.name for d in gpus])
            reason = f"{len(gpus)} GPUs visible"
        else:
            strategy = tf.distribute.get_strategy()
            reason = f"{len(gpus)} GPU visible" if gpus else "no GPU, TF_CONFIG or TPU"
            if evaluator:
                reason = "TF_CONFIG: evaluator task, outside the training cluster"
    if verbose:
        name = type(strategy).__name__
        if name == "_DefaultDistributionStrategy":
            name = "the default strategy"
        print(f"mmrep: {name}, {strategy.num_replicas_in_sync} replica(s) ({reason})", flush=True)
    return strategy
