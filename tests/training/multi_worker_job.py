"""The script each process of the multi-worker test runs (tests/training/test_multi_worker.py).

With `TF_CONFIG` naming a cluster of workers, `select_strategy()` gives a
MultiWorkerMirroredStrategy and this process is one worker; without it, the default
strategy trains the same models on the same global batches in one process. For each
model of `tests.training.worker_models` (`MODELS` and `CONTROLS`) the job seeds Keras, builds the model
under `strategy.scope()`, trains `--steps` steps of `--global-batch` examples with
`fit` on `distribute_dataset(...)` (auto sharding: every worker reads all examples and
keeps its slice of each global batch), and writes `<out>/<model>.<tag>.npz` with the
initial and final weights and the `fit` history. With `--shard-files`, it also records
which example ids this worker receives from TFRecord files under each shard policy
(`<out>/shards.<tag>.json`).

Run: `python -m tests.training.multi_worker_job --out DIR [--models a,b] [--shard-files F ...]`
from the repository root. `free_ports` and `tf_config` help launch a cluster.
"""

import argparse
import json
import os
import socket


def free_ports(count):
    """`count` distinct loopback TCP ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index):
    """The `TF_CONFIG` of worker `index` in a cluster of workers on loopback `ports`."""
    return json.dumps(
        {
            "cluster": {"worker": [f"localhost:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


def _tag():
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task")
    return f"{task['type']}{task['index']}" if task else "single"


def _shard_probe(strategy, files, out):
    """The example ids this worker's replicas receive, per shard policy."""
    import tensorflow as tf

    from mmrep.training import distribute_dataset

    def parse(record):
        return tf.io.parse_single_example(record, {"id": tf.io.FixedLenFeature([], tf.int64)})

    seen = {}
    for policy in ("auto", "file", "data", "off"):
        examples = tf.data.TFRecordDataset(files).map(lambda r: parse(r)["id"])
        batches = distribute_dataset(examples, 4, strategy, shard_policy=policy)
        ids = []
        for batch in strategy.experimental_distribute_dataset(batches):
            for local in strategy.experimental_local_results(batch):
                ids.extend(int(i) for i in local.numpy())
        seen[policy] = ids
    with open(out, "w") as f:
        json.dump(seen, f)


def _train(name, strategy, global_batch, steps, out):
    import keras
    import numpy as np
    import tensorflow as tf

    from mmrep.training import distribute_dataset
    from tests.training.worker_models import CONTROLS, MODELS

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model, x, y = {**MODELS, **CONTROLS}[name](global_batch * steps)
    initial = model.get_weights()
    examples = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    batches = distribute_dataset(examples, global_batch, strategy)
    history = model.fit(batches, epochs=1, shuffle=False, verbose=0).history
    arrays = {f"initial_{i}": w for i, w in enumerate(initial)}
    arrays.update({f"final_{i}": w for i, w in enumerate(model.get_weights())})
    arrays.update({f"history_{k}": np.asarray(v, "float64") for k, v in history.items()})
    np.savez(out, **arrays)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the results")
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shard-files", nargs="*", default=[], help="TFRecord files of ids")
    args = parser.parse_args(argv)

    # The strategy first: MultiWorkerMirroredStrategy must precede every other TF op.
    from mmrep.training import select_strategy

    strategy = select_strategy()
    import tensorflow as tf

    from tests.training.worker_models import CONTROLS, MODELS

    tf.config.experimental.enable_op_determinism()
    tag = _tag()
    if args.shard_files:
        _shard_probe(strategy, args.shard_files, os.path.join(args.out, f"shards.{tag}.json"))
    known = {**MODELS, **CONTROLS}
    names = args.models.split(",") if args.models else list(known)
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown models {unknown}; known: {sorted(known)}")
    for name in names:
        _train(name, strategy, args.global_batch, args.steps, f"{args.out}/{name}.{tag}.npz")
        print(f"{tag}: trained {name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
