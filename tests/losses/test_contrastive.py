"""Contrastive losses against float64 numpy formulas, and their cross-replica training.

The references below are written from the papers, on the subset of valid pairs (so
"missing pairs are neither anchors nor negatives" is expressed by leaving them out, not
by masking as the implementation does).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.fusion.coordinated import CoordinatedEmbedding
from mmrep.losses import (
    ClipLoss,
    MaxMarginRankingLoss,
    NTXentLoss,
    clip_loss,
    gather_batch,
    max_margin_ranking_loss,
    nt_xent_loss,
)
from tests.harness import two_device_strategy

RNG = np.random.default_rng(11)
A = RNG.standard_normal((7, 5))
B = RNG.standard_normal((7, 5))
PRESENCE = np.array([[1, 1], [1, 0], [1, 1], [0, 1], [1, 1], [0, 0], [1, 1]], "float64")


def _valid_subset(a, b, presence):
    keep = np.ones(len(a), bool) if presence is None else presence.all(axis=1)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return unit(a[keep]), unit(b[keep])


def _log_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def ref_clip(a, b, scale, presence=None):
    """CLIP pseudo-code: logits = s * I T^T; (CE over rows + CE over columns) / 2."""
    a, b = _valid_subset(a, b, presence)
    logits = scale * a @ b.T
    rows = -np.diag(_log_softmax(logits, axis=1)).mean()
    cols = -np.diag(_log_softmax(logits, axis=0)).mean()
    return (rows + cols) / 2


def ref_nt_xent(a, b, tau, presence=None):
    """SimCLR: z = [a; b], sim / tau, self excluded, positive is the other view."""
    a, b = _valid_subset(a, b, presence)
    n = len(a)
    z = np.concatenate([a, b])
    sim = z @ z.T / tau
    np.fill_diagonal(sim, -np.inf)
    positive = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    return -_log_softmax(sim, axis=1)[np.arange(2 * n), positive].mean()


def ref_vse(a, b, margin, max_violation, presence=None):
    """VSE++ ContrastiveLoss: cost_s / cost_im from the score matrix, divided by N."""
    a, b = _valid_subset(a, b, presence)
    scores = a @ b.T
    diagonal = np.diag(scores)
    cost_s = np.maximum(0, margin + scores - diagonal[:, None])  # image i vs captions j
    cost_im = np.maximum(0, margin + scores - diagonal[None, :])  # caption j vs images i
    np.fill_diagonal(cost_s, 0)
    np.fill_diagonal(cost_im, 0)
    if max_violation:
        total = cost_s.max(axis=1).sum() + cost_im.max(axis=0).sum()
    else:
        total = cost_s.sum() + cost_im.sum()
    return total / len(a)


LOSSES = {
    "clip": (lambda a, b, p: clip_loss(a, b, 8.0, p), lambda a, b, p: ref_clip(a, b, 8.0, p)),
    "nt_xent": (
        lambda a, b, p: nt_xent_loss(a, b, 0.3, p),
        lambda a, b, p: ref_nt_xent(a, b, 0.3, p),
    ),
    "vse_hardest": (
        lambda a, b, p: max_margin_ranking_loss(a, b, 0.2, True, p),
        lambda a, b, p: ref_vse(a, b, 0.2, True, p),
    ),
    "vse_sum": (
        lambda a, b, p: max_margin_ranking_loss(a, b, 0.3, False, p),
        lambda a, b, p: ref_vse(a, b, 0.3, False, p),
    ),
}


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("kind", list(LOSSES))
def test_functions_match_float64_formula(kind, masked):
    fn, ref = LOSSES[kind]
    presence = PRESENCE if masked else None
    expected = ref(A, B, presence)
    a, b = A.copy(), B.copy()
    if masked:  # what a missing row holds must not matter
        a[PRESENCE[:, 0] == 0] = np.nan
        b[PRESENCE[:, 1] == 0] = np.nan
    np.testing.assert_allclose(fn(a, b, presence).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(
        fn(a.astype("float32"), b.astype("float32"), presence).numpy(), expected, rtol=2e-5
    )


@pytest.mark.parametrize(
    ("loss", "kind"),
    [
        (ClipLoss(temperature=0.125), "clip"),
        (NTXentLoss(temperature=0.3), "nt_xent"),
        (MaxMarginRankingLoss(margin=0.3, max_violation=False), "vse_sum"),
    ],
)
def test_loss_classes_read_missing_pairs_from_zero_rows_or_a_mask(loss, kind):
    _, ref = LOSSES[kind]
    expected = ref(A, B, PRESENCE)
    zeroed = {
        "image": np.where(PRESENCE[:, :1] == 1, A, 0).astype("float32"),
        "text": np.where(PRESENCE[:, 1:] == 1, B, 0).astype("float32"),
    }
    np.testing.assert_allclose(loss(None, zeroed).numpy(), expected, rtol=2e-5)
    nan = {"image": np.where(PRESENCE[:, :1] == 1, A, np.nan), "text": B}
    np.testing.assert_allclose(loss(PRESENCE, nan).numpy(), expected, rtol=2e-5)


def test_clip_loss_uses_the_learned_scale_output():
    scale = np.full((7, 1), 8.0, "float32")
    value = ClipLoss()(None, {"image": A, "text": B, "logit_scale": scale})
    np.testing.assert_allclose(value.numpy(), ref_clip(A, B, 8.0), rtol=2e-5)
    with pytest.raises(ValueError, match=r"logit_scale.*missing"):
        ClipLoss()(None, {"image": A, "text": B})


@pytest.mark.parametrize(
    ("fn", "ref", "at"),
    [
        (lambda t: clip_loss(A, B, t, PRESENCE), lambda t: ref_clip(A, B, t, PRESENCE), 6.0),
        (lambda t: nt_xent_loss(A, B, t, PRESENCE), lambda t: ref_nt_xent(A, B, t, PRESENCE), 0.4),
    ],
    ids=["clip_logit_scale", "nt_xent_temperature"],
)
def test_temperature_gradient_matches_finite_differences(fn, ref, at):
    variable = tf.Variable(at, dtype="float64")
    with tf.GradientTape() as tape:
        value = fn(variable)
    gradient = tape.gradient(value, variable).numpy()
    h = 1e-6
    expected = (ref(at + h) - ref(at - h)) / (2 * h)
    assert abs(expected) > 1e-3
    np.testing.assert_allclose(gradient, expected, rtol=1e-6)


@pytest.mark.parametrize("kind", list(LOSSES))
def test_missing_rows_get_no_gradient_and_nan_does_not_leak(kind):
    fn, _ = LOSSES[kind]
    a, b = A.astype("float32"), B.astype("float32")
    a[PRESENCE[:, 0] == 0] = np.nan
    a, b = tf.constant(a), tf.constant(b)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        value = fn(a, b, PRESENCE)
    grad_a, grad_b = (g.numpy() for g in tape.gradient(value, [a, b]))
    assert np.isfinite(value.numpy())
    assert np.all(np.isfinite(grad_a)) and np.all(np.isfinite(grad_b))
    invalid = ~PRESENCE.all(axis=1)
    np.testing.assert_array_equal(grad_a[invalid], 0.0)
    np.testing.assert_array_equal(grad_b[invalid], 0.0)
    assert np.abs(grad_a[~invalid]).max() > 0


def test_no_valid_pair_gives_zero():
    assert float(clip_loss(A, B, 10.0, np.zeros((7, 2)))) == 0.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: clip_loss(A, B[:, :3], 1.0), "share the embedding dimension"),
        (lambda: clip_loss(A, B[:4], 1.0), "same number of pairs"),
        (
            lambda: clip_loss(A[0], B[0], 1.0),
            r"Expected `a` to be a floating tensor \[batch, dim\]",
        ),
        (lambda: clip_loss(A, B, 1.0, np.ones((7, 3))), r"`presence` of shape \[batch, 2\]"),
        (lambda: clip_loss(A, B, np.ones((7, 2, 1))), "logit_scale"),
        (lambda: ClipLoss(temperature=0.0), "temperature"),
        (lambda: ClipLoss(modalities=("a",)), "two distinct"),
        (lambda: ClipLoss(reduction="sum"), "reduction"),
        (lambda: MaxMarginRankingLoss(margin=-1.0), "margin"),
        (lambda: ClipLoss(0.1)(None, {"a": A, "b": B, "c": B}), "Received keys"),
        (lambda: ClipLoss(0.1)(None, [A, B]), "expected `y_pred` to be a dict"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "loss",
    [ClipLoss(modalities=("text", "image")), NTXentLoss(0.2), MaxMarginRankingLoss(0.1, False)],
)
def test_config_round_trip(loss):
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(revived) is type(loss) and revived.get_config() == loss.get_config()
    value = {"image": A, "text": B, "logit_scale": np.full((7, 1), 3.0)}
    np.testing.assert_allclose(revived(None, value).numpy(), loss(None, value).numpy())


def test_gather_batch_is_a_no_op_outside_a_strategy():
    value = tf.constant(A)
    gathered, offset = gather_batch(value)
    assert gathered is value and offset == 0


# === Cross-replica training with model.fit ===

BATCH = 8
FIT_RNG = np.random.default_rng(3)
FIT_DATA = {
    "image": FIT_RNG.standard_normal((BATCH, 6)).astype("float32"),
    "text": FIT_RNG.standard_normal((BATCH, 4)).astype("float32"),
    # Replica 0 gets rows 0-3 (3 valid pairs), replica 1 rows 4-7 (2 valid pairs).
    "presence": np.array(
        [[1, 1], [1, 1], [1, 1], [0, 1], [1, 1], [1, 0], [0, 1], [1, 1]], "float32"
    ),
}


class DualEncoder(keras.Model):
    """The documented way to train with a loss over two outputs: `compute_loss`."""

    def __init__(self, *args, contrastive, **kwargs):
        super().__init__(*args, **kwargs)
        self.contrastive = contrastive

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.contrastive(None, y_pred)


def _dual_encoder(contrastive):
    inputs = {
        "image": keras.Input((6,), name="image"),
        "text": keras.Input((4,), name="text"),
        "presence": keras.Input((2,), name="presence"),
    }
    # VSE++ does not use the temperature, which then has no gradient to learn from.
    learn_scale = not isinstance(contrastive, MaxMarginRankingLoss)
    outputs = CoordinatedEmbedding(3, hidden_dims=(5,), learn_logit_scale=learn_scale)(
        {"image": inputs["image"], "text": inputs["text"]}, presence=inputs["presence"]
    )
    return DualEncoder(inputs, outputs, contrastive=contrastive)


def _one_step(model):
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(FIT_DATA, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][0]


def _single_and_mirrored(contrastive):
    single = _dual_encoder(contrastive)
    start = single.get_weights()
    with two_device_strategy().scope():
        mirrored = _dual_encoder(contrastive)
    mirrored.set_weights(start)
    return single, mirrored, start


@pytest.mark.parametrize(
    "contrastive",
    [ClipLoss(), NTXentLoss(temperature=None), MaxMarginRankingLoss(max_violation=True)],
    ids=lambda loss: loss.name,
)
def test_mirrored_fit_equals_single_device_on_the_global_batch(contrastive):
    single, mirrored, start = _single_and_mirrored(contrastive)
    expected = contrastive(None, single(FIT_DATA)).numpy()
    loss_single, loss_mirrored = _one_step(single), _one_step(mirrored)
    np.testing.assert_allclose(loss_single, expected, rtol=1e-6)
    np.testing.assert_allclose(loss_mirrored, loss_single, rtol=1e-5)
    moved = max(np.abs(w - s).max() for w, s in zip(single.get_weights(), start, strict=True))
    assert moved > 1e-3, "the step did not change the weights"
    for w_m, w_s, v in zip(
        mirrored.get_weights(), single.get_weights(), single.weights, strict=True
    ):
        np.testing.assert_allclose(w_m, w_s, rtol=1e-4, atol=1e-6, err_msg=v.path)


def test_without_gathering_the_replicas_see_fewer_negatives_and_the_step_differs():
    contrastive = ClipLoss(cross_replica=False)
    single, mirrored, _ = _single_and_mirrored(contrastive)
    loss_single, loss_mirrored = _one_step(single), _one_step(mirrored)
    assert abs(loss_mirrored - loss_single) > 0.05, (loss_mirrored, loss_single)
    differences = [
        np.abs(w_m - w_s).max()
        for w_m, w_s in zip(mirrored.get_weights(), single.get_weights(), strict=True)
    ]
    assert max(differences) > 1e-3


def test_shares_of_uneven_replica_shards_add_up_to_the_global_loss():
    strategy = two_device_strategy()
    a, b = A[:6].astype("float32"), B[:6].astype("float32")
    presence = PRESENCE[:6].astype("float32")

    def shard(context):  # 4 rows on replica 0, 2 on replica 1 (an epoch's last batch)
        rows = slice(0, 4) if context.replica_id_in_sync_group == 0 else slice(4, 6)
        return a[rows], b[rows], presence[rows]

    @tf.function
    def shares():
        values = strategy.experimental_distribute_values_from_function(shard)
        return strategy.run(lambda x, y, p: clip_loss(x, y, 5.0, p), args=values)

    parts = [float(v) for v in strategy.experimental_local_results(shares())]
    np.testing.assert_allclose(sum(parts), ref_clip(A[:6], B[:6], 5.0, PRESENCE[:6]), rtol=1e-5)
