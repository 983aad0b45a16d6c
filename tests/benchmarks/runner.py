"""The benchmark runner: named benchmarks, each mmrep against a reference in the same run.

A benchmark is a function decorated with `@benchmark(name)` that takes `size` ("full" or
"smoke") and returns a `Comparison`: two zero-argument callables doing the same work, one
with mmrep and one with the reference, each already warmed up (traced) or cheap to warm
up. The runner times them interleaved (so drift in the machine's speed hits both alike),
and reports the medians and the ratio mmrep / reference, with a description of the
machine. Timings are reported, never asserted.

Run: `python -m tests.benchmarks [NAME ...] [--repeats N] [--json PATH]`.
"""

import dataclasses
import importlib
import json
import os
import pkgutil
import platform
import statistics
import time
from collections.abc import Callable

BENCHMARKS = {}


@dataclasses.dataclass
class Comparison:
    """Two callables doing the same work.

    Attributes:
        mmrep: zero-argument callable running mmrep's implementation.
        reference: zero-argument callable running the reference.
        reference_name: str. What the reference is, for the table.
        work: str. What one call does (shapes, batch size), for the table.
        items: int or `None`. Items (examples, images) one call processes; when given,
            the table also reports items per second.
    """

    mmrep: Callable[[], object]
    reference: Callable[[], object]
    reference_name: str
    work: str
    items: int | None = None


def benchmark(name):
    """Registers a benchmark function under `name`."""

    def register(fn):
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is registered twice")
        BENCHMARKS[name] = fn
        return fn

    return register


def load_all():
    """Imports every `bench_*.py` module beside this one, registering its benchmarks."""
    package = __name__.rsplit(".", 1)[0]
    folder = os.path.dirname(__file__)
    for info in pkgutil.iter_modules([folder]):
        if info.name.startswith("bench_"):
            importlib.import_module(f"{package}.{info.name}")
    return BENCHMARKS


def _call_and_wait(fn):
    result = fn()
    # Wait for asynchronous TensorFlow work to finish before the clock stops.
    if hasattr(result, "numpy"):
        result.numpy()
    elif isinstance(result, (list, tuple, dict)):
        for leaf in result.values() if isinstance(result, dict) else result:
            if hasattr(leaf, "numpy"):
                leaf.numpy()
    return result


def time_pair(first, second, repeats, warmup):
    """Median seconds of two callables, run interleaved after `warmup` calls each."""
    for _ in range(warmup):
        _call_and_wait(first)
        _call_and_wait(second)
    times = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            _call_and_wait(fn)
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    import keras
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return (
        f"{cpu}, {os.cpu_count()} cores, {'GPUs ' + ', '.join(gpus) if gpus else 'no GPU'}; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


def run(names=None, size="full", repeats=20, warmup=3, progress=print):
    """Runs the named benchmarks (all by default); returns one result dict per benchmark."""
    available = load_all()
    unknown = sorted(set(names or []) - set(available))
    if unknown:
        raise ValueError(f"unknown benchmarks {unknown}; available: {sorted(available)}")
    rows = []
    for name in names or sorted(available):
        progress(f"[{len(rows) + 1}/{len(names or available)}] {name} ...")
        comparison = available[name](size=size)
        ours, theirs = time_pair(comparison.mmrep, comparison.reference, repeats, warmup)
        rows.append(
            {
                "benchmark": name,
                "work": comparison.work,
                "reference": comparison.reference_name,
                "mmrep_ms": ours * 1e3,
                "reference_ms": theirs * 1e3,
                "ratio": ours / theirs,
                "mmrep_items_per_s": comparison.items / ours if comparison.items else None,
                "reference_items_per_s": comparison.items / theirs if comparison.items else None,
            }
        )
    return rows


def format_table(rows, machine):
    lines = [
        f"Machine: {machine}",
        "",
        "| benchmark | work | reference | mmrep (ms, median) | reference (ms, median) | ratio "
        "| mmrep items/s | reference items/s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]

    def rate(value):
        return "" if value is None else f"{value:,.0f}"

    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['work']} | {r['reference']} | {r['mmrep_ms']:.3f} | "
            f"{r['reference_ms']:.3f} | {r['ratio']:.2f} | {rate(r['mmrep_items_per_s'])} | "
            f"{rate(r['reference_items_per_s'])} |"
        )
    return "\n".join(lines)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", choices=("full", "smoke"), default="full")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.list:
        for name, fn in sorted(load_all().items()):
            print(f"{name}: {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0
    rows = run(args.names, size=args.size, repeats=args.repeats, warmup=args.warmup)
    machine = machine_description()
    print(format_table(rows, machine))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": rows}, f, indent=2)
    return 0
