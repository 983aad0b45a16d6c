"""BilinearFusion against float64 numpy formulas: full, compact (Tensor Sketch), MLB and MFB.

The compact mode is checked against the count sketch of the full outer product computed
without any FFT, against the Tensor Sketch property E⟨ψ(x,y), ψ(x',y')⟩ = ⟨x,x'⟩⟨y,y'⟩,
and its hashes against the published SplitMix64 reference outputs.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.fusion.bilinear import BilinearFusion
from mmrep.fusion.count_sketch import _splitmix64, count_sketch_hashes

RNG = np.random.default_rng(11)
ORDER = ["image", "text"]
PRESENCE = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1]], "float32")


def features(set_size=None, d1=7, d2=5, batch=5):
    shape = (batch,) if set_size is None else (batch, set_size)
    return {
        "image": RNG.standard_normal((*shape, d1)).astype("float32"),
        "text": RNG.standard_normal((*shape, d2)).astype("float32"),
    }


def normalise(z, signed_sqrt, l2):
    """The documented post-processing, in float64."""
    if signed_sqrt:
        z = np.sign(z) * np.sqrt(np.abs(z) + 1e-12)
    if l2:
        z = z / np.sqrt(np.maximum((z**2).sum(-1, keepdims=True), 1e-12))
    return z


def outer(x, y):
    """Σ_n x_n ⊗ y_n (or x ⊗ y for vectors) in float64, `[B, D1, D2]`."""
    x, y = x.astype("float64"), y.astype("float64")
    return np.einsum("bni,bnj->bij", x, y) if x.ndim == 3 else np.einsum("bi,bj->bij", x, y)


def sketch_of_outer(z, hashes, d):
    """The count sketch of `z [B, D1, D2]` with hash (h1(i) + h2(j)) mod d, sign s1(i) s2(j)."""
    (h1, s1), (h2, s2) = hashes
    buckets = (h1[:, None].astype("int64") + h2[None, :]) % d
    signs = s1[:, None].astype("float64") * s2[None, :]
    out = np.zeros((len(z), d))
    for b in range(len(z)):
        np.add.at(out[b], buckets.ravel(), (z[b] * signs).ravel())
    return out


@pytest.mark.parametrize("set_size", [None, 4])
@pytest.mark.parametrize(("signed_sqrt", "l2"), [(False, False), (True, False), (True, True)])
def test_full_matches_float64_einsum(set_size, signed_sqrt, l2):
    inputs = features(set_size)
    layer = BilinearFusion(modalities=ORDER, signed_sqrt=signed_sqrt, l2_normalize=l2)
    out = layer(inputs).numpy()
    z = outer(inputs["image"], inputs["text"]).reshape(5, -1)
    np.testing.assert_allclose(out, normalise(z, signed_sqrt, l2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("set_size", [None, 3])
@pytest.mark.parametrize("d", [13, 64])
def test_compact_is_the_count_sketch_of_the_outer_product(set_size, d):
    inputs = features(set_size)
    z = outer(inputs["image"], inputs["text"])
    raw = BilinearFusion("compact", d, ORDER, signed_sqrt=False, l2_normalize=False, seed=5)
    out = raw(inputs).numpy()
    expected = sketch_of_outer(z, [raw.sketch_hashes[m] for m in ORDER], d)
    # float32 FFTs: error relative to the largest entry.
    atol = 2e-6 * np.abs(expected).max()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=atol)

    # Signed sqrt amplifies float32 round-off near zero (sqrt(1e-7) ~ 3e-4), hence the atol.
    normed = BilinearFusion("compact", d, ORDER, seed=5)(inputs).numpy()
    np.testing.assert_allclose(normed, normalise(expected, True, True), atol=2e-3)


def test_tensor_sketch_is_unbiased_and_its_error_shrinks_with_output_dim():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(12)
    y = rng.standard_normal(9)
    x2 = 0.6 * x + 0.8 * rng.standard_normal(12)
    y2 = 0.6 * y + 0.8 * rng.standard_normal(9)
    inputs = {"image": np.stack([x, x2]), "text": np.stack([y, y2])}
    inputs = {m: v.astype("float32") for m, v in inputs.items()}
    (x, x2), (y, y2) = (inputs[m].astype("float64") for m in ORDER)
    target = float(np.dot(x, x2) * np.dot(y, y2))
    seeds = range(150)
    mse = []
    for d in (8, 32, 128, 512):
        estimates = []
        for seed in seeds:
            layer = BilinearFusion(
                "compact", d, ORDER, signed_sqrt=False, l2_normalize=False, seed=seed
            )
            psi = layer(inputs).numpy().astype("float64")
            estimates.append(np.dot(psi[0], psi[1]))
        estimates = np.array(estimates)
        # Unbiased: the mean over seeds is within 4 standard errors of ⟨x,x'⟩⟨y,y'⟩.
        standard_error = estimates.std() / np.sqrt(len(estimates))
        assert abs(estimates.mean() - target) < 4 * standard_error + 1e-6, (
            d,
            estimates.mean(),
            target,
        )
        mse.append(np.mean((estimates - target) ** 2))
    # The variance falls like 1/d: each 4x longer sketch should cut it by about 4.
    ratios = np.array(mse[1:]) / np.array(mse[:-1])
    assert np.all(ratios < 0.5), (mse, ratios)
    assert mse[-1] < 0.05 * mse[0], mse


def test_splitmix64_matches_its_published_reference_outputs():
    # Rosetta Code "Pseudo-random numbers/Splitmix64": the first outputs for seed 1234567.
    published = [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]
    assert [int(v) for v in _splitmix64(1234567, 5)] == published


def test_hashes_are_in_range_balanced_and_independent_between_streams():
    d, big = 16, 32000
    h0, s0 = count_sketch_hashes(7, 0, big, d)
    h1, s1 = count_sketch_hashes(7, 1, big, d)
    assert h0.dtype == np.int32 and s0.dtype == np.float32
    assert h0.min() >= 0 and h0.max() < d and set(np.unique(s0)) == {-1.0, 1.0}
    counts = np.bincount(h0, minlength=d)
    # Uniform buckets: each count is 2000 ± 45 (binomial std), so ±300 cannot flake.
    assert np.all(np.abs(counts - big / d) < 300), counts
    assert abs(s0.mean()) < 0.03 and abs((s0 * s1).mean()) < 0.03
    assert np.mean(h0 == h1) < 1 / d + 0.02  # the two streams do not agree more than chance
    # Prefix-stable: a longer input keeps the hashes of the shorter one.
    short = count_sketch_hashes(7, 0, 100, d)
    np.testing.assert_array_equal(short[0], h0[:100])


def test_same_seed_same_hashes_after_config_and_keras_reload(tmp_path):
    inputs = features()
    image, text = keras.Input((7,), name="image"), keras.Input((5,), name="text")
    layer = BilinearFusion("compact", 32, ORDER, seed=123, name="mcb")
    model = keras.Model([image, text], layer({"image": image, "text": text}))
    feed = [inputs["image"], inputs["text"]]
    expected = model.predict(feed, verbose=0)

    revived = BilinearFusion.from_config(layer.get_config())
    revived_out = revived(inputs).numpy()
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    for other in (revived, reloaded.get_layer("mcb")):
        for m in ORDER:
            for a, b in zip(other.sketch_hashes[m], layer.sketch_hashes[m], strict=True):
                np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(revived_out, expected, atol=1e-6)
    np.testing.assert_allclose(reloaded.predict(feed, verbose=0), expected, atol=1e-6)

    other = BilinearFusion("compact", 32, ORDER, seed=124)
    other_out = other(inputs).numpy()
    assert np.mean(other.sketch_hashes["image"][0] != layer.sketch_hashes["image"][0]) > 0.5
    assert np.abs(other_out - expected).max() > 0.1


def low_rank_reference(layer, inputs, presence=None):
    """MFB / MLB in float64 from the layer's weights (absent inputs replaced as documented)."""
    weights = {w.path.split("/")[-1]: w.numpy().astype("float64") for w in layer.weights}
    parts = []
    for i, m in enumerate(ORDER):
        v = inputs[m].astype("float64")
        if presence is not None:
            fill = weights.get(f"{m}_placeholder", 0.0)
            present = presence[:, i].reshape((-1,) + (1,) * (v.ndim - 1)) > 0
            v = np.where(present, v, fill)
        u = v @ weights[f"{m}_kernel"] + weights[f"{m}_bias"]
        parts.append(np.tanh(u) if layer.variant == "mlb" else u)
    h = parts[0] * parts[1]
    if h.ndim == 3:
        h = h.sum(1)
    if layer.variant == "mlb":
        return h @ weights["output_kernel"] + weights["output_bias"]
    return h.reshape(len(h), layer.output_dim, -1).sum(-1)


@pytest.mark.parametrize("set_size", [None, 3])
@pytest.mark.parametrize(
    ("kwargs", "post"),
    [
        ({"variant": "mfb", "factor_k": 3}, (True, True)),
        ({"variant": "mfb"}, (True, True)),
        ({"variant": "mfb", "signed_sqrt": False, "l2_normalize": False}, (False, False)),
        ({"variant": "mlb", "hidden_dim": 8}, (False, False)),
        ({"variant": "mlb", "hidden_dim": 8, "l2_normalize": True}, (False, True)),
    ],
)
def test_low_rank_matches_float64_formula(set_size, kwargs, post):
    inputs = features(set_size)
    layer = BilinearFusion(
        "low_rank", 4, ORDER, bias_initializer="random_normal", missing="learned", **kwargs
    )
    layer(inputs)
    for w in layer.weights:  # placeholders away from their ones-initialisation
        if "placeholder" in w.path:
            w.assign(RNG.standard_normal(w.shape))
    for presence in (None, PRESENCE):
        out = layer(inputs, presence=presence).numpy()
        expected = normalise(low_rank_reference(layer, inputs, presence), *post)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert next(w.shape for w in layer.trainable_weights if "kernel" in w.path)[1] == (
        8 if kwargs["variant"] == "mlb" else 4 * kwargs.get("factor_k", 5)
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "full"},
        {"mode": "compact", "output_dim": 16},
        {"mode": "low_rank", "output_dim": 3},
        {"mode": "low_rank", "output_dim": 3, "variant": "mlb", "hidden_dim": 4},
    ],
)
@pytest.mark.parametrize("missing", ["zeros", "learned"])
def test_absent_modality_is_filled_and_nan_never_leaks(kwargs, missing):
    inputs = features(set_size=2)
    layer = BilinearFusion(modalities=ORDER, missing=missing, **kwargs)
    layer(inputs)
    filled = {m: v.copy() for m, v in inputs.items()}
    poisoned = {m: v.copy() for m, v in inputs.items()}
    for i, m in enumerate(ORDER):
        absent = PRESENCE[:, i] == 0
        fill = layer._placeholders[i].numpy() if missing == "learned" else 0.0
        filled[m][absent] = fill
        poisoned[m][absent] = np.nan
    # The documented behaviour: an absent modality is its fill value, whatever it held.
    expected = layer(filled).numpy()
    as_tensors = {m: tf.constant(v) for m, v in poisoned.items()}
    with tf.GradientTape() as tape:
        tape.watch(list(as_tensors.values()))
        out = layer(as_tensors, presence=PRESENCE)
        loss = tf.reduce_sum(out * RNG.standard_normal(out.shape).astype("float32"))
    grads = tape.gradient(loss, list(as_tensors.values()) + layer.trainable_variables)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)
    if missing == "zeros" and kwargs["mode"] != "low_rank":
        # Zero-fill: no joint evidence, so full and compact features are zero.
        np.testing.assert_array_equal(out.numpy()[PRESENCE.min(1) == 0], 0.0)


def test_full_mode_sums_in_float32_under_mixed_precision():
    # Products of 300 * 300 summed over 4 locations overflow float16 (max 65504).
    inputs = {m: 300.0 * np.abs(v) for m, v in features(set_size=4).items()}
    reference = BilinearFusion(modalities=ORDER)(inputs).numpy()
    out = BilinearFusion(modalities=ORDER, dtype="mixed_float16")(inputs)
    assert out.dtype == "float16"
    np.testing.assert_allclose(out.numpy().astype("float32"), reference, atol=2e-3)


def test_defaults_follow_the_papers():
    x = features()
    mlb = BilinearFusion("low_rank", 4, ORDER, variant="mlb", hidden_dim=6)(x).numpy()
    assert not np.allclose(np.linalg.norm(mlb, axis=-1), 1.0)  # MLB: no L2 by default
    mfb = BilinearFusion("low_rank", 4, ORDER)
    np.testing.assert_allclose(np.linalg.norm(mfb(x).numpy(), axis=-1), 1.0, rtol=1e-5)
    assert mfb.get_weights()[0].shape == (7, 20)  # k = 5 (Yu et al.)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "dense"}, r"`mode` to be one of \('full', 'compact', 'low_rank'\)"),
        ({"output_dim": 8}, r"output_dim=None` in mode 'full'.*output_dim=8"),
        ({"mode": "compact"}, r"positive int in mode 'compact'.*output_dim=None"),
        ({"mode": "compact", "output_dim": 8, "factor_k": 2}, r"factor_k=2 \(mode='compact'"),
        ({"mode": "low_rank", "output_dim": 8, "variant": "mlb"}, r"hidden_dim=None"),
        ({"mode": "low_rank", "output_dim": 8, "hidden_dim": 3}, r"variant='mfb'"),
        ({"modalities": ["a", "b", "c"]}, r"2 distinct.*\['a', 'b', 'c'\]"),
        ({"mode": "compact", "output_dim": 8, "seed": -1}, r"seed=-1"),
        ({"missing": "mean"}, r"`missing` to be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BilinearFusion(**kwargs)


@pytest.mark.parametrize(
    ("inputs", "presence", "match"),
    [
        ({"image": np.ones((2, 3), "float32")}, None, r"Received keys: \['image'\]"),
        (
            {"image": np.ones((2, 3, 4), "float32"), "text": np.ones((2, 5, 4), "float32")},
            None,
            r"same set size.*\(2, 3, 4\).*\(2, 5, 4\)",
        ),
        (
            {"image": np.ones((2, 3, 4), "float32"), "text": np.ones((2, 4), "float32")},
            None,
            "both as",
        ),
        (
            {"image": np.ones((2, 3), "float32"), "text": np.ones((2, 4), "float32")},
            np.ones((2, 3), "float32"),
            r"`presence` of shape \[batch, 2\].*\(2, 3\)",
        ),
    ],
)
def test_bad_inputs_are_named(inputs, presence, match):
    with pytest.raises(ValueError, match=match):
        BilinearFusion("compact", 8, ORDER)(inputs, presence=presence)


def test_integer_input_is_refused():
    with pytest.raises(TypeError, match=r"floating tensor for modality 'text'.*int32"):
        BilinearFusion(modalities=ORDER)(
            {"image": np.ones((2, 3), "float32"), "text": np.ones((2, 4), "int32")}
        )


def test_sketch_hashes_need_a_built_compact_layer():
    with pytest.raises(ValueError, match=r"mode 'compact' is built.*built=False"):
        _ = BilinearFusion("compact", 8).sketch_hashes
    layer = BilinearFusion(modalities=ORDER)
    layer(features())
    with pytest.raises(ValueError, match="mode='full'"):
        _ = layer.sketch_hashes


@pytest.mark.slow  # benchmark child process
def test_benchmark_peak_memory_child_reports_the_output_size():
    from tests.benchmarks.bench_bilinear import SIZES, peak_memory

    s = SIZES["smoke"]
    result = peak_memory("compact", "smoke")
    assert result["mode"] == "compact" and result["params_mib"] == 0.0
    assert result["output_mib"] == s["batch"] * s["compact_dim"] * 4 / 2**20
    assert result["peak_growth_mib"] >= 0.0
