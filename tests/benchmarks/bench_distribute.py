"""Data-parallel scaling and XLA: training steps of a recipe's model under tf.distribute.

The model is recipes/missing_modalities_mmdigits.py's (a CNN for images, a bag of caption
tokens, a log-mel CNN for audio, a per-frame CNN averaged over time for video,
`ConcatFusion` with a presence mask, a softmax classifier; Adam) on mmdigits (the
validation split, repeated). Its captions are tokenised in the input pipeline by the
recipe model's own `TextVectorization`, and the model trained is the recipe's from the token
ids on: Keras 3.15 `fit` under MirroredStrategy cannot take string inputs (it averages a
data batch over replicas to build the model), and XLA cannot compile string ops. At
smoke size a small two-modality stand-in replaces it (see `_model`).

The configurations train in server processes driven call by call through a pipe: one
process with two logical CPU devices holds the one-device, XLA and MirroredStrategy
models; two more are the workers. A timed call runs `K` (or `2K`) training steps:
Keras' own `train_step` under `strategy.run` in a `tf.function`, as `fit` runs it, but
without `fit`'s fixed cost per call (see `_training_loop`).

- `distribute_mirrored_vs_one_device`: MirroredStrategy over two logical CPU devices,
  `K` steps of global batch `2b` (`b` per replica), against one device doing `2K`
  steps of batch `b`: the same examples at the same per-replica batch, so the ratio is
  1 / scaling efficiency (efficiency = steps/s x replicas / one-device steps/s).
- `distribute_two_workers_vs_one_device`: the same with two worker processes
  (`TF_CONFIG` on loopback ports, `select_strategy()` -> MultiWorkerMirroredStrategy).
- `distribute_xla_vs_no_xla`: one device, `K` steps of batch `b`, `jit_compile=True`
  against `False`.

The two logical devices, and the two workers, share the machine's cores (2 here), so
this measures the cost of distribution (splitting, all-reduce, synchronisation) rather
than a speed-up: an efficiency near or below 1 is expected. Two worker processes can
exceed 1 where a single TensorFlow process leaves a core idle between this model's many
small ops.

Run: `python -m tests.benchmarks distribute_mirrored_vs_one_device
distribute_two_workers_vs_one_device distribute_xla_vs_no_xla`.
"""

import os
import select
import subprocess
import sys
import tempfile
import time
import weakref

from tests.benchmarks.runner import Comparison, benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# b: examples per replica per step; K: steps of the multi-replica side per timed call.
SIZES = {"full": {"batch": 32, "steps": 8}, "smoke": {"batch": 2, "steps": 1}}
START_TIMEOUT_S = 600
CALL_TIMEOUT_S = 600
_MARK = b"@@"
_servers = weakref.WeakValueDictionary()  # shared by the benchmarks of one run


# === The driving side ===


class _Servers:
    """Server processes that all receive every command (one, or a pair of workers)."""

    def __init__(self, mode, size, count=1):
        from tests.training.multi_worker_job import free_ports, tf_config

        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        env.pop("TF_CONFIG", None)
        ports = free_ports(count) if mode == "worker" else []
        self._procs, self._logs, self._buffers = [], [], []
        for i in range(count):
            log = tempfile.TemporaryFile()
            proc_env = {**env, "TF_CONFIG": tf_config(ports, i)} if ports else env
            self._procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.benchmarks.bench_distribute", mode, size],
                    cwd=ROOT,
                    env=proc_env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    bufsize=0,
                )
            )
            self._logs.append(log)
            self._buffers.append(b"")
        weakref.finalize(self, _shutdown, self._procs, self._logs)
        self._answers("ready", START_TIMEOUT_S)

    def run(self, config, steps):
        for proc in self._procs:
            proc.stdin.write(f"{config} {steps}\n".encode())
        self._answers("done", CALL_TIMEOUT_S)

    def _answers(self, expected, timeout):
        deadline = time.monotonic() + timeout
        for i in range(len(self._procs)):
            answer = self._read_mark(i, deadline)
            if answer != expected:
                self._fail(f"answered {answer!r}, expected {expected!r}")

    def _read_mark(self, i, deadline):
        """The next `@@...` line of server `i` (other output is skipped)."""
        proc = self._procs[i]
        while True:
            while b"\n" in self._buffers[i]:
                line, self._buffers[i] = self._buffers[i].split(b"\n", 1)
                if line.startswith(_MARK):
                    return line[len(_MARK) :].decode().strip()
            left = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
            if not ready:
                self._fail("timed out")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                self._fail(f"exited with code {proc.wait()}")
            self._buffers[i] += chunk

    def _fail(self, what):
        tails = []
        for proc, log in zip(self._procs, self._logs, strict=True):
            log.seek(0)
            tails.append(f"--- pid {proc.pid} ---\n{log.read()[-3000:].decode(errors='replace')}")
        _shutdown(self._procs, self._logs)
        raise RuntimeError(f"benchmark server {what}; stderr:\n" + "\n".join(tails))


def _shutdown(procs, logs):
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.stdin.close()  # the server exits at end of input
            except OSError:
                pass
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for log in logs:
        log.close()


def _server(mode, size):
    key = (mode, size)
    server = _servers.get(key)
    if server is None:
        server = _Servers(mode, size, count=2 if mode == "worker" else 1)
        _servers[key] = server
    return server


def _describe(size, what):
    s = SIZES[size]
    model = "recipe model on mmdigits" if size == "full" else "smoke stand-in model"
    return f"{model}, {what}, {s['batch']} examples per replica per step"


@benchmark("distribute_mirrored_vs_one_device")
def mirrored_vs_one_device(size="full"):
    """Demo-model training: MirroredStrategy on 2 logical CPUs vs one device."""
    local, s = _server("local", size), SIZES[size]
    return Comparison(
        mmrep=lambda: local.run("mirrored", s["steps"]),
        reference=lambda: local.run("one_device", 2 * s["steps"]),
        reference_name=f"one device, {2 * s['steps']} steps of {s['batch']} (efficiency = 1/ratio)",
        work=_describe(size, f"MirroredStrategy x2 logical CPUs, {s['steps']} steps"),
        items=2 * s["batch"] * s["steps"],
    )


@benchmark("distribute_two_workers_vs_one_device")
def two_workers_vs_one_device(size="full"):
    """Demo-model training: two worker processes (MultiWorkerMirroredStrategy) vs one device."""
    local, s = _server("local", size), SIZES[size]
    workers = _server("worker", size)
    return Comparison(
        mmrep=lambda: workers.run("two_workers", s["steps"]),
        reference=lambda: local.run("one_device", 2 * s["steps"]),
        reference_name=f"one device, {2 * s['steps']} steps of {s['batch']} (efficiency = 1/ratio)",
        work=_describe(size, f"2 workers on loopback, {s['steps']} steps"),
        items=2 * s["batch"] * s["steps"],
    )


@benchmark("distribute_xla_vs_no_xla")
def xla_vs_no_xla(size="full"):
    """Recipe-model training on one device: jit_compile=True vs False."""
    local, s = _server("local", size), SIZES[size]
    return Comparison(
        mmrep=lambda: local.run("one_device_xla", s["steps"]),
        reference=lambda: local.run("one_device", s["steps"]),
        reference_name="the same model and steps with jit_compile=False",
        work=_describe(size, f"one device, jit_compile=True, {s['steps']} steps"),
        items=s["batch"] * s["steps"],
    )


# === The server side: `python -m tests.benchmarks.bench_distribute {local|worker} SIZE` ===


def _data(size):
    """mmdigits' validation split; at smoke size, 8 synthetic image + caption examples."""
    import numpy as np

    if size == "smoke":
        rng = np.random.default_rng(0)
        data = {
            "image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
            "text": np.array([f"the digit {i} written by hand" for i in range(8)], object),
            "label": np.arange(8, dtype="int32"),
        }
    else:
        from mmrep.data.mmdigits import load_mmdigits

        data = load_mmdigits("validation", as_numpy=True)
    modalities = len(data) - 1
    data["presence"] = np.ones((len(data["label"]), modalities), "float32")
    return data


def _model(size, captions):
    """`(model from token ids, its TextVectorization)`: the recipe's, or a smoke stand-in.

    The recipe model's TextVectorization moves to the input pipeline; the model trained
    is the recipe's from its token ids on. At smoke size a two-modality stand-in (image,
    caption tokens, ConcatFusion, classifier) keeps the tracing short: the smoke run
    tests the machinery, and the recipe model takes ~15 s per configuration to trace.
    """
    import warnings

    import keras

    if size == "smoke":
        from mmrep.fusion import ConcatFusion

        vectorize = keras.layers.TextVectorization(max_tokens=64, output_sequence_length=12)
        vectorize.adapt(captions)
        image = keras.Input((32, 32, 3), dtype="uint8", name="image")
        text = keras.Input((12,), dtype="int64", name="text")
        presence = keras.Input((2,), name="presence")
        vectors = {
            "image": keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(image)),
            "text": keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(64, 8)(text)),
        }
        fused = ConcatFusion(modalities=["image", "text"], projection_dim=8)(
            vectors, presence=presence
        )
        outputs = keras.layers.Dense(10, activation="softmax")(fused)
        return keras.Model({"image": image, "text": text, "presence": presence}, outputs), vectorize

    from tests.recipes import load_recipe

    model = load_recipe("missing_modalities_mmdigits.py").build_model(captions)
    vectorize = next(x for x in model.layers if isinstance(x, keras.layers.TextVectorization))
    inputs = {**model.input, "text": vectorize.output}
    with warnings.catch_warnings():  # the token input keeps its tensor's own name
        warnings.simplefilter("ignore", UserWarning)
        trunk = keras.Model(inputs, model.output, name="recipe_from_tokens")
    return trunk, vectorize


def _serve(mode, size):
    if mode == "worker":  # first: MultiWorkerMirroredStrategy precedes every TF op
        from mmrep.training import select_strategy

        strategies = {"two_workers": select_strategy(verbose=False)}
    import tensorflow as tf

    if mode == "local":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategies = {
            "one_device": tf.distribute.get_strategy(),
            "one_device_xla": tf.distribute.get_strategy(),
            "mirrored": tf.distribute.MirroredStrategy(devices),
        }
    import keras

    from mmrep.training import distribute_dataset

    # Seeded once: re-seeding retraces every tf.function made before (measured: 8 s).
    keras.utils.set_random_seed(0)
    data = _data(size)
    captions = data["text"]
    _, vectorize = _model(size, captions)
    labels = data.pop("label")
    data["text"] = vectorize(tf.constant(captions.astype(bytes))).numpy()
    examples = tf.data.Dataset.from_tensor_slices((data, labels)).repeat()
    batch = SIZES[size]["batch"]
    loops = {}

    def loop(config):
        """Builds a configuration at its first call (the runner's warm-up compiles it)."""
        if config not in loops:
            strategy = strategies[config]
            with strategy.scope():
                model, _ = _model(size, captions)
                model.compile(
                    optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy"
                )
            global_batch = batch * strategy.num_replicas_in_sync
            batches = distribute_dataset(examples, global_batch, strategy)
            # One step of `fit` builds the optimizer and metrics under the strategy.
            model.fit(batches, steps_per_epoch=1, epochs=1, shuffle=False, verbose=0)
            loops[config] = _training_loop(model, strategy, batches, config.endswith("_xla"))
        return loops[config]

    print("@@ready", flush=True)
    for line in sys.stdin:
        config, steps = line.split()
        loop(config)(tf.constant(int(steps)))
        print("@@done", flush=True)


def _training_loop(model, strategy, batches, jit_compile):
    """`steps` -> runs that many training steps, as `fit` runs them, minus its per-call cost.

    The step is Keras' own: `strategy.run(model.train_step, ...)` in a `tf.function`
    (XLA-compiled with `jit_compile`), fed by one distributed iterator that lives across
    calls. `fit` itself pays a fixed cost per call (iterator, callbacks, a symbolic build
    that averages a data batch over replicas: 0.6 s under MirroredStrategy here), which
    an epoch amortises and a few timed steps would not.
    """
    import tensorflow as tf

    iterator = iter(strategy.experimental_distribute_dataset(batches))
    step = tf.function(
        lambda data: strategy.run(model.train_step, args=(data,)), jit_compile=jit_compile
    )

    @tf.function(autograph=False)
    def run(steps):
        def body(i):
            step(next(iterator))
            return i + 1

        tf.while_loop(lambda i: i < steps, body, [tf.constant(0)])

    return run


if __name__ == "__main__":
    _serve(*sys.argv[1:3])
