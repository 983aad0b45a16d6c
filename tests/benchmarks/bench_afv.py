"""AFV benchmark: vectorised per-example gradients against a loop of `tape.gradient`.

The Fisher scores of Adversarial Fisher Vectors are per-example gradients of the
discriminator. mmrep: `per_example_gradients(..., batch_size=64)` (`tf.vectorized_map` in
chunks of 64, in one `tf.function`) on a batch of 128 images 32x32x3. Reference: a Python
loop over the examples, each example's gradient a call of a `tf.function` holding one
`tape.gradient` (`per_example_gradients(..., method="loop")` on one example): the loop
without eager overhead, to be fair. Both give the same `[128, P]` matrix (checked). The
discriminator is DCGAN-like: three 5x5 stride-2 convolutions of 32, 64 and 128 filters
with LeakyReLU, then Dense(1): 260,673 parameters.

Also measured and reported in the work column (full size only): the same loop run
eagerly (once); one batched backward pass of the summed scores (median of 9), which gives
no per-example rows but bounds what any per-example method can reach; and the peak memory of each method, from TensorFlow's CPU allocator statistics
(`tf.config.experimental.get_memory_info("CPU:0")["peak"]` after `reset_memory_stats`,
MiB, the `[128, P]` float32 output itself being 127 MiB), with the vectorised method also
unchunked (`batch_size=None`) to show what the chunks bound.

Run: `python -m tests.benchmarks afv_vectorized_vs_loop`.
"""

import time

import numpy as np

from tests.benchmarks.runner import Comparison, benchmark

SIZES = {
    "full": {"batch": 128, "side": 32, "filters": (32, 64, 128), "chunk": 64},
    "smoke": {"batch": 4, "side": 8, "filters": (4, 4, 4), "chunk": 3},
}
MIB = 2.0**20


def discriminator(side, filters):
    import keras

    inputs = keras.Input((side, side, 3))
    x = inputs
    for i, width in enumerate(filters):
        init = keras.initializers.GlorotUniform(seed=i)
        x = keras.layers.Conv2D(width, 5, strides=2, padding="same", kernel_initializer=init)(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=9))(x)
    return keras.Model(inputs, outputs)


def peak_mib(fn):
    """Peak MiB allocated by TensorFlow on the CPU during one call of `fn`."""
    import tensorflow as tf

    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    np.asarray(fn())
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / MIB


def _batch_gradient(scores, weights, x):
    """One backward pass of the summed scores: what any per-example method costs at least."""
    import tensorflow as tf

    @tf.function
    def gradient():
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(scores(x))
        return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(total, weights)], 0)

    return gradient


def _median_seconds(fn, repeats=9):
    np.asarray(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@benchmark("afv_vectorized_vs_loop")
def afv_vectorized_vs_loop(size="full"):
    """Examples/s of vectorised per-example gradients vs a loop of tape.gradient."""
    import tensorflow as tf

    from mmrep.utils.example_gradients import per_example_gradients

    s = SIZES[size]
    d = discriminator(s["side"], s["filters"])
    weights = d.trainable_weights
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (s["batch"], s["side"], s["side"], 3)), tf.float32)

    def scores(batch):
        return tf.reshape(d(batch, training=False), [-1])

    def vectorized_fn(chunk):
        return tf.function(lambda b: per_example_gradients(scores, weights, b, batch_size=chunk))

    vectorized, unchunked = vectorized_fn(s["chunk"]), vectorized_fn(None)
    one = tf.function(lambda b: per_example_gradients(scores, weights, b, method="loop"))

    def loop():
        return tf.concat([one(x[i : i + 1]) for i in range(s["batch"])], axis=0)

    expected = loop().numpy()
    np.testing.assert_allclose(vectorized(x).numpy(), expected, rtol=1e-4, atol=1e-5)
    work = (
        f"per-example gradients, batch {s['batch']} x {s['side']}x{s['side']}x3, "
        f"P={expected.shape[1]:,}, chunks of {s['chunk']}"
    )
    if size == "full":
        memory = {
            "vectorised": peak_mib(lambda: vectorized(x)),
            "unchunked": peak_mib(lambda: unchunked(x)),
            "loop": peak_mib(loop),
        }
        start = time.perf_counter()
        eager = per_example_gradients(scores, weights, x, method="loop")
        eager_rate = s["batch"] / (time.perf_counter() - start)
        np.testing.assert_allclose(eager.numpy(), expected, rtol=1e-4, atol=1e-5)
        floor_rate = s["batch"] / _median_seconds(_batch_gradient(scores, weights, x))
        work += (
            f"; eager loop {eager_rate:,.0f} ex/s; one batched gradient of the sum (no "
            f"per-example rows, a bound) {floor_rate:,.0f} ex/s; peak MiB: vectorised "
            f"{memory['vectorised']:,.0f}, unchunked {memory['unchunked']:,.0f}, "
            f"loop {memory['loop']:,.0f}"
        )
    return Comparison(
        mmrep=lambda: vectorized(x),
        reference=loop,
        reference_name="Python loop, one tf.function tape.gradient per example",
        work=work,
        items=s["batch"],
    )
