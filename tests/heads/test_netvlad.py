"""NetVLAD, NetRVLAD, SoftBagOfWords and NetFV against float64 numpy formulas of the papers.

The references loop over the examples and use only each set's real rows (no masking logic
shared with the layers), with the layers' own weights read back by name. Padded rows hold
NaN, so any leak of padding into an output shows up as a mismatch.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.heads import NetFV, NetRVLAD, NetVLAD, SoftBagOfWords

B, N, D = 4, 7, 3
LENGTHS = (7, 4, 0, 1)  # a full set, a padded one, an empty one, a single descriptor


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, N, D)).astype("float32")
    mask = (np.arange(N)[None, :] < np.array(LENGTHS)[:, None]).astype("float32")
    x[mask == 0] = np.nan
    return x, mask


def _randomize(layer, seed=1):
    """Random weights (larger than the initialisers') so assignments are far from uniform."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0.0, 0.7, w.shape).astype("float32") for w in layer.weights])


def _weights(layer):
    return {v.path.split("/")[-1]: v.numpy().astype("float64") for v in layer.weights}


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _l2(v, axis=-1):
    norm = np.linalg.norm(v, axis=axis, keepdims=True)
    return np.where(norm > 0, v / np.where(norm > 0, norm, 1.0), 0.0)


def _sets(x, mask):
    return [x[b][mask[b] > 0].astype("float64") for b in range(len(x))]


def _assign(s, w, k):
    """NetVLAD eq. 3: a_k(x) = softmax over all (real + ghost) clusters, ghosts dropped."""
    return _softmax(s @ w["assignment_kernel"] + w["assignment_bias"])[:, :k]


def ref_vlad(x, mask, w, k, normalization, residual=True):
    out = []
    for s in _sets(x, mask):
        a = _assign(s, w, k)
        v = a.T @ s  # [K, D]: Σ_n a_k(x_n) x_n
        if residual:
            v = v - a.sum(axis=0)[:, None] * w["centers"]
        if normalization == "intra_l2":
            v = _l2(v)
        v = v.reshape(-1)
        out.append(_l2(v) if normalization else v)
    return np.stack(out)


def ref_bow(x, mask, w, k, normalization):
    out = []
    for s in _sets(x, mask):
        h = _assign(s, w, k).sum(axis=0)
        if normalization == "l2":
            h = _l2(h)
        elif normalization == "l1":
            h = h / max(len(s), 1)
        out.append(h)
    return np.stack(out)


def ref_netfv(x, mask, w, k, normalization):
    """Miech et al. 2017 eq. 5-6 with sigma = exp(log_scales); LOUPE's normalisation."""
    sigma = np.exp(w["log_scales"])
    out = []
    for s in _sets(x, mask):
        a = _assign(s, w, k)  # [n, K]
        diff = (s[:, None, :] - w["centers"][None]) / sigma[None]  # [n, K, D]
        fv1 = np.einsum("nk,nkd->kd", a, diff)
        fv2 = np.einsum("nk,nkd->kd", a, diff**2 - 1.0)
        if normalization == "intra_l2":
            fv1 = _l2(fv1)
        fv1, fv2 = fv1.reshape(-1), fv2.reshape(-1)
        if normalization:
            fv1, fv2 = _l2(fv1), _l2(fv2)
        out.append(np.concatenate([fv1, fv2]))
    return np.stack(out)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _call(layer, x, mask):
    return np.asarray(layer(x, mask=mask)).astype("float64")


@pytest.mark.parametrize("normalization", ["intra_l2", "l2", None])
@pytest.mark.parametrize("ghosts", [0, 2])
@pytest.mark.parametrize("cls,residual", [(NetVLAD, True), (NetRVLAD, False)])
def test_vlad_matches_numpy(cls, residual, normalization, ghosts):
    x, mask = _inputs()
    layer = cls(num_clusters=4, ghost_clusters=ghosts, normalization=normalization)
    layer.build(x.shape)
    _randomize(layer)
    expected = ref_vlad(x, mask, _weights(layer), 4, normalization, residual)
    np.testing.assert_allclose(_call(layer, x, mask), expected, rtol=1e-5, atol=1e-5)
    assert not np.any(expected[2]), "the empty set's reference must be zeros"


@pytest.mark.parametrize("normalization", ["l2", "l1", None])
@pytest.mark.parametrize("ghosts", [0, 1])
def test_soft_bag_of_words_matches_numpy(normalization, ghosts):
    x, mask = _inputs(seed=2)
    layer = SoftBagOfWords(num_clusters=5, ghost_clusters=ghosts, normalization=normalization)
    layer.build(x.shape)
    _randomize(layer)
    expected = ref_bow(x, mask, _weights(layer), 5, normalization)
    np.testing.assert_allclose(_call(layer, x, mask), expected, rtol=1e-5, atol=1e-6)
    if normalization == "l1" and ghosts == 0:
        np.testing.assert_allclose(_call(layer, x, mask).sum(-1), [1, 1, 0, 1], atol=1e-6)


@pytest.mark.parametrize("normalization", ["intra_l2", "l2", None])
@pytest.mark.parametrize("ghosts", [0, 1])
def test_netfv_matches_numpy(normalization, ghosts):
    x, mask = _inputs(seed=3)
    layer = NetFV(num_clusters=3, ghost_clusters=ghosts, normalization=normalization)
    layer.build(x.shape)
    _randomize(layer)
    expected = ref_netfv(x, mask, _weights(layer), 3, normalization)
    actual = _call(layer, x, mask)
    assert actual.shape == (B, 2 * 3 * D)
    # The layer's second-order block uses the GEMM expansion of Σ a (x - c)^2 in float32.
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "cls,width", [(NetVLAD, 4 * D), (NetRVLAD, 4 * D), (SoftBagOfWords, 4), (NetFV, 8 * D)]
)
def test_projection_and_gating_match_numpy(cls, width):
    x, mask = _inputs(seed=4)
    plain = cls(num_clusters=4)
    layer = cls(num_clusters=4, output_dim=5, gating=True)
    layer.build(x.shape)
    _randomize(layer)
    plain.build(x.shape)
    w = _weights(layer)
    plain.set_weights(layer.get_weights()[: len(plain.weights)])
    pooled = _call(plain, x, mask)
    assert pooled.shape == (B, width)
    projected = pooled @ w["projection_kernel"] + w["projection_bias"]
    expected = _sigmoid(projected @ w["kernel"] + w["bias"]) * projected
    np.testing.assert_allclose(_call(layer, x, mask), expected, rtol=1e-5, atol=1e-5)


LAYERS = [
    lambda: NetVLAD(num_clusters=3, ghost_clusters=1),
    lambda: NetRVLAD(num_clusters=3),
    lambda: SoftBagOfWords(num_clusters=3, normalization="l1"),
    lambda: NetFV(num_clusters=2, output_dim=4, gating=True),
]


@pytest.mark.parametrize("make", LAYERS)
def test_permutation_and_padding_invariance(make):
    x, mask = _inputs(seed=5)
    layer = make()
    layer.build(x.shape)
    _randomize(layer)
    out = _call(layer, x, mask)
    perm = np.random.default_rng(0).permutation(N)
    np.testing.assert_allclose(_call(layer, x[:, perm], mask[:, perm]), out, atol=1e-5)
    # More padding (NaN rows, masked out) changes nothing.
    pad = np.full((B, 3, D), np.nan, "float32")
    padded = np.concatenate([x, pad], axis=1), np.concatenate([mask, np.zeros((B, 3))], axis=1)
    np.testing.assert_allclose(_call(layer, *padded), out, atol=1e-5)
    # Rows that are real everywhere need no mask at all.
    np.testing.assert_allclose(_call(layer, x[:1], None)[0], out[0], atol=1e-5)


@pytest.mark.parametrize("make", LAYERS)
def test_empty_set_gives_zeros_and_finite_gradients(make):
    x = np.full((2, 4, D), np.nan, "float32")
    x[1] = np.random.default_rng(0).standard_normal((4, D))
    mask = np.array([[0, 0, 0, 0], [1, 1, 1, 1]], "float32")
    layer = make()
    layer.build(x.shape)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, mask=mask)
        loss = tf.reduce_sum(y * tf.random.stateless_normal(y.shape, seed=(1, 2)))
    grads = tape.gradient(loss, [x, *layer.trainable_variables])
    if layer.output_dim is None:
        np.testing.assert_array_equal(y.numpy()[0], 0.0)
    assert np.all(np.isfinite(y.numpy()))
    for g in grads:
        assert np.all(np.isfinite(tf.convert_to_tensor(g).numpy()))
    np.testing.assert_array_equal(grads[0].numpy()[0], 0.0)


def test_keras_mask_from_masking_layer_is_used():
    x, mask = _inputs(seed=6)
    x = np.where(mask[..., None] > 0, x, 0.0).astype("float32")
    layer = NetVLAD(num_clusters=3)
    inputs = keras.Input((N, D))
    model = keras.Model(inputs, layer(keras.layers.Masking(0.0)(inputs)))
    np.testing.assert_allclose(model(x), _call(layer, x, mask), atol=1e-6)


def test_mixed_precision_stays_close_to_float32():
    x, mask = _inputs(seed=7)
    exact = NetFV(num_clusters=3)
    exact.build(x.shape)
    _randomize(exact)
    half = NetFV(num_clusters=3, dtype="mixed_float16")
    half.build(x.shape)
    half.set_weights(exact.get_weights())
    y = half(x, mask=mask)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    np.testing.assert_allclose(np.asarray(y, "float64"), _call(exact, x, mask), atol=2e-3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_clusters": 0}, "num_clusters"),
        ({"num_clusters": 2, "ghost_clusters": -1}, "ghost_clusters"),
        ({"num_clusters": 2, "output_dim": 0}, "output_dim"),
        ({"num_clusters": 2, "gating": 1}, "gating"),
        ({"num_clusters": 2, "normalization": "l1"}, "normalization"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NetVLAD(**kwargs)


def test_bad_inputs():
    layer = NetVLAD(num_clusters=2)
    with pytest.raises(ValueError, match=r"\[batch, set, features\].*Received shape: \(2, 3\)"):
        layer(np.zeros((2, 3), "float32"))
    layer(np.zeros((2, 4, 3), "float32"))
    with pytest.raises(ValueError, match=r"size 3.*Received shape: \(2, 4, 5\)"):
        layer(np.zeros((2, 4, 5), "float32"))
    with pytest.raises(ValueError, match=r"`mask`.*\(2, 4\).*Received shape: \(2, 3\)"):
        layer(np.zeros((2, 4, 3), "float32"), mask=np.ones((2, 3), "float32"))
    with pytest.raises(TypeError, match="floating"):
        layer(np.zeros((2, 4, 3), "int32"))
    with pytest.raises(ValueError, match="normalization"):
        SoftBagOfWords(num_clusters=2, normalization="intra_l2")


def _two_structures(n, seed, set_size=16):
    """Sets from N(0, I) (label 0) or from 4 tight clusters with the same mean and covariance.

    The cluster centres are `±a e_1, ±a e_2` with `a^2 / 2 + sigma^2 = 1`, so both classes
    have mean 0 and covariance I: the set mean (and any statistic of it) carries no label
    information, while the cluster structure does. Sets have 8 to 16 real descriptors.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    sigma = 0.2
    centres = np.sqrt(2 * (1 - sigma**2)) * np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])
    gaussian = rng.standard_normal((n, set_size, 2))
    clustered = centres[rng.integers(0, 4, (n, set_size))]
    clustered = clustered + sigma * rng.standard_normal((n, set_size, 2))
    x = np.where(labels[:, None, None] == 1, clustered, gaussian).astype("float32")
    lengths = rng.integers(8, set_size + 1, n)
    mask = (np.arange(set_size)[None] < lengths[:, None]).astype("float32")
    x[mask == 0] = np.nan
    return [x, mask], labels.astype("float32")


def _classifier(pool):
    x_in, mask_in = keras.Input((16, 2)), keras.Input((16,))
    if pool == "netvlad":
        h = NetVLAD(num_clusters=8)(x_in, mask=mask_in)
    else:  # the control: masked mean pooling
        valid = keras.ops.expand_dims(mask_in, -1) > 0
        total = keras.ops.sum(keras.ops.where(valid, x_in, 0.0), axis=1)
        h = total / keras.ops.maximum(keras.ops.sum(mask_in, axis=1, keepdims=True), 1.0)
    h = keras.layers.Dense(16, activation="relu")(h)
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model([x_in, mask_in], out)
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.slow  # convergence
def test_netvlad_learns_cluster_structure_that_mean_pooling_cannot():
    train, test = _two_structures(512, seed=0), _two_structures(256, seed=1)
    accuracy = {}
    for pool in ("netvlad", "mean"):
        model = _classifier(pool)
        model.fit(*train, epochs=20, batch_size=32, verbose=0)
        accuracy[pool] = model.evaluate(*test, verbose=0)[1]
    assert accuracy["mean"] < 0.65, f"the mean-pooling control should fail: {accuracy}"
    assert accuracy["netvlad"] > 0.9, f"NetVLAD should separate the classes: {accuracy}"
    assert accuracy["netvlad"] - accuracy["mean"] > 0.3, accuracy
