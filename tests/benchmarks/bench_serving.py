"""Serving benchmarks: the exported main-job model in a TensorFlow-only process, and `mmrep embed`.

`serving_latency_b1` / `serving_latency_b32`: the main job's serving model
(`mmrep.job.build_run_model` of the built-in config, default fusion, random weights:
latency does not depend on training) exported with `export_saved_model` and called through `serving_default` in a
child Python process that imports only TensorFlow (mmrep imports are refused there), one
call per timed call, driven through a pipe (the round trip, well under a millisecond, is
part of the time). The reference is the Keras model's `predict_on_batch` in this process
on the same inputs. The runner reports medians; p50 / p99 over many calls come from
`python -m tests.benchmarks.bench_serving`, which also separates the child's own
in-process latency from the round trip.

`embed_throughput`: rows/s of `embed_manifest` (load the SavedModel, read and decode the
PNG / FLAC / MP4 files of an mmdigits manifest, run, write .npy) against calling the same
signature on the already-decoded arrays, so the ratio is the price of loading and decoding.
"""

import atexit
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import weakref

import numpy as np

from tests.benchmarks.runner import Comparison, benchmark
from tests.export.fresh_process import REFUSE_MMREP, serving_environment

MODALITIES = ("image", "text", "audio", "video")
PADDING = ("audio_length", "video_frame_mask")  # the serving model's padding inputs
SIZES = {"full": {"rows": 128}, "smoke": {"rows": 8}}

SERVER = (
    REFUSE_MMREP
    + r"""
import json, time
import numpy as np
import tensorflow as tf

setup = json.loads(sys.stdin.readline())
serve = tf.saved_model.load(setup["model"]).signatures["serving_default"]
with np.load(setup["inputs"]) as saved:
    arrays = {k: saved[k] for k in saved.files}
print("ready", flush=True)
feeds, latencies = {}, {}
for line in sys.stdin:
    command, batch = line.split()
    batch = int(batch)
    if batch not in feeds:
        feeds[batch] = {k: tf.constant(v[:batch]) for k, v in arrays.items()}
        latencies[batch] = []
        serve(**feeds[batch])  # warm up
    if command == "run":
        start = time.perf_counter()
        outputs = serve(**feeds[batch])
        outputs["embedding"].numpy()
        latencies[batch].append(time.perf_counter() - start)
        print("done", flush=True)
    elif command == "latencies":
        print(json.dumps(latencies[batch]), flush=True)
        latencies[batch] = []
"""
)


@functools.cache
def exported_job_model():
    """`(keras serving model, version folder, folder)`: the main job's model, exported once."""
    from mmrep.data import load_mmdigits
    from mmrep.export import export_saved_model
    from mmrep.job import build_run_model, builtin_config

    captions = load_mmdigits("train", modalities=("text",), as_numpy=True)["text"]
    job = build_run_model(
        builtin_config(), classes=[str(d) for d in range(10)], captions={"text": captions}
    )
    folder = tempfile.mkdtemp(prefix="mmrep-bench-serving-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    version = export_saved_model(
        job.serving,
        os.path.join(folder, "job"),
        modalities=list(job.config["modalities"]),
        verbose=False,
    )
    return job.serving, version, folder


def serving_inputs(batch, seed=0):
    """`batch` mmdigits test examples (cycled), all modalities present, nothing padded."""
    from mmrep.data import load_mmdigits

    test = load_mmdigits("test", seed=seed, as_numpy=True)
    rows = np.arange(batch) % len(test["label"])
    inputs = {m: test[m][rows] for m in MODALITIES}
    inputs["audio_length"] = np.full((batch,), inputs["audio"].shape[1], "int32")
    inputs["video_frame_mask"] = np.ones(inputs["video"].shape[:2], bool)
    inputs["presence"] = np.ones((batch, len(MODALITIES)), "float32")
    return inputs


class ServingProcess:
    """A child TensorFlow-only process serving `serving_default`; calling it runs one batch."""

    def __init__(self, model_folder, inputs, workdir):
        arrays = {k: v.astype(bytes) if v.dtype == object else v for k, v in inputs.items()}
        path = os.path.join(workdir, "serving_inputs.npz")
        np.savez(path, **arrays)
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=workdir,
            env=serving_environment(),
            text=True,
        )
        weakref.finalize(self, _close, self._process)
        setup = {"model": model_folder, "inputs": path}
        self._request(json.dumps(setup), expect="ready")

    def run(self, batch):
        self._request(f"run {batch}", expect="done")

    def latencies(self, batch):
        """The child's own timings (seconds) of the calls since the last query."""
        return json.loads(self._request(f"latencies {batch}", expect=None))

    def _request(self, line, expect):
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline().strip()
        if not answer or (expect is not None and answer != expect):
            raise RuntimeError(f"serving process answered {answer!r}, expected {expect}")
        return answer


def _close(process):
    if process.poll() is None:
        process.stdin.close()
        process.wait(timeout=60)


@functools.cache
def serving_process():
    model, version, folder = exported_job_model()
    inputs = serving_inputs(32)
    return ServingProcess(version, inputs, folder), model, inputs


def _latency(batch, size):
    import tensorflow as tf

    from mmrep.job.names import DEFAULT_FUSION

    process, model, inputs = serving_process()
    batch = batch if size == "full" else min(batch, 4)
    feed = {k: tf.constant(v[:batch]) for k, v in inputs.items()}
    model.predict_on_batch(feed)  # trace
    return Comparison(
        mmrep=lambda: process.run(batch),
        reference=lambda: model.predict_on_batch(feed),
        reference_name="Keras predict_on_batch of the same model, in this process",
        work=(
            f"main-job model ({DEFAULT_FUSION}), serving_default in a TensorFlow-only child "
            f"process, "
            f"batch {batch} (image, caption, 1 s audio, 16x32x32 video)"
        ),
        items=batch,
    )


@benchmark("serving_latency_b1")
def serving_latency_b1(size="full"):
    """Exported main-job model at batch 1 in a fresh TF-only process vs Keras in-process."""
    return _latency(1, size)


@benchmark("serving_latency_b32")
def serving_latency_b32(size="full"):
    """Exported main-job model at batch 32 in a fresh TF-only process vs Keras in-process."""
    return _latency(32, size)


@benchmark("embed_throughput")
def embed_throughput(size="full"):
    """embed_manifest over an mmdigits manifest vs the signature on decoded arrays."""
    import tensorflow as tf

    from mmrep.data import export_mmdigits, from_manifest
    from mmrep.export import embed_manifest

    rows = SIZES[size]["rows"]
    _, version, folder = exported_job_model()
    manifest = export_mmdigits(os.path.join(folder, "mmdigits"), limit=rows, progress=False)
    decoded = from_manifest(
        manifest, image_size=32, audio_seconds=1.0, video_size=32, video_frames=16
    ).batch(64)
    batches = [
        {k: v for k, v in batch.items() if k in (*MODALITIES, *PADDING, "presence")}
        for batch in decoded
    ]
    serve = tf.saved_model.load(version).signatures["serving_default"]
    output = os.path.join(folder, "embeddings.npy")

    def embed():
        if os.path.exists(output):
            os.remove(output)
        return embed_manifest(version, manifest, output, verbose=False)

    def reference():
        return [serve(**batch)["embedding"].numpy() for batch in batches]

    return Comparison(
        mmrep=embed,
        reference=reference,
        reference_name="serving_default on the already-decoded arrays, batches of 64",
        work=(
            f"{rows} mmdigits rows (PNG, caption, FLAC, MP4) -> main-job embedding .npy, "
            "SavedModel load included"
        ),
        items=rows,
    )


def percentiles(calls=200, batches=(1, 32)):
    """p50 / p99 latency (ms) of the served model and of Keras, for each batch size."""
    import tensorflow as tf

    process, model, inputs = serving_process()
    rows = []
    for batch in batches:
        feed = {k: tf.constant(v[:batch]) for k, v in inputs.items()}
        model.predict_on_batch(feed)
        for _ in range(5):
            process.run(batch)
        process.latencies(batch)
        round_trips, keras_times = [], []
        for _ in range(calls):  # interleaved, as the runner does
            start = time.perf_counter()
            process.run(batch)
            round_trips.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.predict_on_batch(feed)
            keras_times.append(time.perf_counter() - start)
        in_process = process.latencies(batch)
        for what, times in (
            ("SavedModel, TF-only child (in-process time)", in_process),
            ("SavedModel, TF-only child (with pipe round trip)", round_trips),
            ("Keras predict_on_batch, parent", keras_times),
        ):
            q = statistics.quantiles(np.array(times) * 1e3, n=100, method="inclusive")
            rows.append({"batch": batch, "what": what, "p50_ms": q[49], "p99_ms": q[98]})
    return rows


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench_serving",
        description="p50/p99 serving latency of the exported main-job model.",
    )
    parser.add_argument("--calls", type=int, default=200, help="calls per batch size")
    args = parser.parse_args(argv)
    from tests.benchmarks.runner import machine_description

    rows = percentiles(calls=args.calls)
    print(f"Machine: {machine_description()}; {args.calls} interleaved calls per row\n")
    print("| batch | served by | p50 (ms) | p99 (ms) |\n|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['batch']} | {r['what']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
