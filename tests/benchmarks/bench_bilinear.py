"""Bilinear fusion benchmarks: compact (Tensor Sketch) and MFB against full bilinear pooling.

Both compare with `BilinearFusion(mode="full")` on the same inputs in the same run (MCB's
setting: two 2048-d vectors, batch 32, signed sqrt and L2 on). Besides time, the goal of
compact pooling is memory, so each mode's peak memory is measured too, at full size only
(the smoke size only checks that the benchmarks run): in a child process of its own, the
layer's `tf.function` is called once to trace and warm up; then, 5 times, the kernel's
resident-set high-water mark is reset (`/proc/self/clear_refs`), the call is repeated, and
the growth of the high-water mark (`VmHWM`) over the resident set before the call is
taken; the median is reported. The kernel keeps RSS counts per CPU and reads them with
some slack, so small values are good to about half a MiB. The child runs with
`MALLOC_MMAP_THRESHOLD_=65536`, so that glibc returns every buffer of 64 KiB or more to
the kernel when TensorFlow frees it: otherwise a call would reuse heap pages kept from the
previous one and its growth would understate what it needs. Parameters (MFB's
projections) are allocated before the measurement and reported apart.

Run: `python -m tests.benchmarks bilinear_compact_vs_full bilinear_mfb_vs_full`.
One mode's peak memory: `python -m tests.benchmarks.bench_bilinear --peak-memory compact`.
"""

import json
import os
import subprocess
import sys

import numpy as np

from tests.benchmarks.runner import Comparison, benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZES = {
    "full": {"batch": 32, "dim": 2048, "compact_dim": 16000, "mfb_dim": 1000, "mfb_k": 5},
    "smoke": {"batch": 2, "dim": 8, "compact_dim": 16, "mfb_dim": 4, "mfb_k": 2},
}
MODES = ("full", "compact", "mfb")
MIB = 2.0**20


def fusion_call(mode, size):
    """A traced `tf.function` running one `BilinearFusion` mode on the benchmark batch.

    Returns:
        `(fn, layer)`: the zero-argument callable and its layer.
    """
    import tensorflow as tf

    from mmrep.fusion.bilinear import BilinearFusion

    s = SIZES[size]
    rng = np.random.default_rng(0)
    # Non-negative, like the ReLU / pooled CNN features bilinear pooling is used on.
    inputs = {
        m: tf.constant(np.abs(rng.standard_normal((s["batch"], s["dim"]))), "float32")
        for m in ("image", "text")
    }
    if mode == "full":
        layer = BilinearFusion("full")
    elif mode == "compact":
        layer = BilinearFusion("compact", s["compact_dim"])
    else:
        layer = BilinearFusion("low_rank", s["mfb_dim"], factor_k=s["mfb_k"])
    fn = tf.function(lambda: layer(inputs))
    fn()  # trace
    return fn, layer


def _proc_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_here(mode, size, repeats=5):
    """Peak memory of warmed-up calls, in this process; see the module docstring.

    Returns:
        dict with `peak_growth_mib` and `peak_growth_max_mib` (median and largest, over
        `repeats` calls, of the high-water mark over the resident set before the call),
        `output_mib` and `params_mib`.
    """
    fn, layer = fusion_call(mode, size)
    output = fn().numpy()
    growths = []
    for _ in range(repeats):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        before = _proc_status_kib("VmRSS")
        fn().numpy()
        growths.append((_proc_status_kib("VmHWM") - before) / 1024.0)
    return {
        "mode": mode,
        "peak_growth_mib": float(np.median(growths)),
        "peak_growth_max_mib": max(growths),
        "output_mib": output.nbytes / MIB,
        "params_mib": sum(int(np.prod(w.shape)) * 4 for w in layer.weights) / MIB,
    }


def peak_memory(mode, size="full"):
    """`measure_here(mode, size)` in a child process; returns its dict."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        MALLOC_MMAP_THRESHOLD_="65536",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    result = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench_bilinear", "--peak-memory", mode, size],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"peak-memory child for {mode!r} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _memory_note(mode, size):
    if size != "full":
        return "peak memory measured at full size only"
    ours, full = peak_memory(mode), peak_memory("full")
    # Parameters count with the activations: MFB trades activations for weights.
    total = ours["peak_growth_mib"] + ours["params_mib"]
    return (
        f"peak memory per call (median of 5) {ours['peak_growth_mib']:.1f} MiB "
        f"(max {ours['peak_growth_max_mib']:.1f}) + parameters "
        f"{ours['params_mib']:.0f} MiB vs full {full['peak_growth_mib']:.0f} MiB "
        f"(1/{full['peak_growth_mib'] / max(total, 1e-3):.0f} of full); outputs "
        f"{ours['output_mib']:.2f} vs {full['output_mib']:.0f} MiB"
    )


@benchmark("bilinear_compact_vs_full")
def compact_vs_full(size="full"):
    """Compact bilinear pooling (Tensor Sketch, d=16000) vs full bilinear, 2048 x 2048."""
    s = SIZES[size]
    compact, _ = fusion_call("compact", size)
    full, _ = fusion_call("full", size)
    return Comparison(
        mmrep=compact,
        reference=full,
        reference_name="BilinearFusion(mode='full'), tf.function, same process",
        work=(
            f"batch {s['batch']}, d1 = d2 = {s['dim']} -> {s['compact_dim']} "
            f"(full: {s['dim'] ** 2}), signed sqrt + L2; {_memory_note('compact', size)}"
        ),
        items=s["batch"],
    )


@benchmark("bilinear_mfb_vs_full")
def mfb_vs_full(size="full"):
    """MFB (k=5, o=1000, as Yu et al.) vs full bilinear, 2048 x 2048."""
    s = SIZES[size]
    mfb, _ = fusion_call("mfb", size)
    full, _ = fusion_call("full", size)
    return Comparison(
        mmrep=mfb,
        reference=full,
        reference_name="BilinearFusion(mode='full'), tf.function, same process",
        work=(
            f"batch {s['batch']}, d1 = d2 = {s['dim']} -> MFB k={s['mfb_k']}, "
            f"o={s['mfb_dim']} (full: {s['dim'] ** 2}); {_memory_note('mfb', size)}"
        ),
        items=s["batch"],
    )


def main(argv):
    if len(argv) >= 2 and argv[0] == "--peak-memory" and argv[1] in MODES:
        size = argv[2] if len(argv) > 2 else "full"
        print(json.dumps(measure_here(argv[1], size)), flush=True)
        return 0
    print(
        f"usage: python -m tests.benchmarks.bench_bilinear --peak-memory {{{'|'.join(MODES)}}} [full|smoke]"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
