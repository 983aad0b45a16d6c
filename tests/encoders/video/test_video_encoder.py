"""VideoEncoder against numpy: per-frame vectors from the frame encoder alone, pooled in float64.

The references call the frame encoder on one frame at a time and pool with numpy formulas
(masked mean, masked max, softmax attention over real frames), so neither the batching,
the gather/scatter of real frames nor the pooling code of the layer is reused.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmrep.encoders import ImageEncoder
from mmrep.encoders.video import VideoEncoder
from tests.encoders.video.frame_encoders import conv_frame_encoder
from tests.harness import two_device_strategy

LENGTHS = np.array([5, 2, 4, 0])


def _clips(time=5, size=12, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (len(LENGTHS), time, size, size, 3)).astype("uint8")
    return frames, np.arange(time)[None, :] < LENGTHS[:, None]


def _per_frame(frame_encoder, frames):
    """[B, T, D] float64: the frame encoder called on each frame alone."""
    return np.stack(
        [np.stack([np.asarray(frame_encoder(frame[None]))[0] for frame in clip]) for clip in frames]
    ).astype("float64")


def _reference_pool(vectors, mask, pooling, kernel=None):
    pooled = np.zeros((vectors.shape[0], vectors.shape[2]))
    for b, (clip, real) in enumerate(zip(vectors, mask, strict=True)):
        real_vectors = clip[real]
        if not len(real_vectors):
            continue
        if pooling == "mean":
            pooled[b] = real_vectors.mean(axis=0)
        elif pooling == "max":
            pooled[b] = real_vectors.max(axis=0)
        else:
            scores = real_vectors @ kernel[:, 0]
            alpha = np.exp(scores - scores.max())
            pooled[b] = (alpha / alpha.sum()) @ real_vectors
    return pooled


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_pooling_matches_numpy_over_real_frames(pooling, skip):
    frames, mask = _clips()
    frame_encoder = conv_frame_encoder(width=6)
    layer = VideoEncoder(frame_encoder, pooling=pooling, skip_masked_frames=skip)
    actual = np.asarray(layer(frames, frame_mask=mask))
    kernel = None
    if pooling == "attention":
        kernel = np.asarray(layer._attention.kernel, "float64")
    expected = _reference_pool(_per_frame(frame_encoder, frames), mask, pooling, kernel)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    assert np.all(actual[LENGTHS == 0] == 0.0), "a clip without frames pools to zeros"


def test_sequence_output_is_the_per_frame_vectors_with_padding_zeroed():
    frames, mask = _clips()
    frame_encoder = conv_frame_encoder(width=6)
    out = VideoEncoder(frame_encoder, pooling="sequence")(frames, frame_mask=mask)
    expected = _per_frame(frame_encoder, frames) * mask[..., None]
    np.testing.assert_allclose(out["sequence_output"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["mask"], mask)


def test_padded_frames_do_not_matter():
    """Whatever fills the padding (noise, zeros), outputs stay the same."""
    frames, mask = _clips()
    noisy = frames.copy()
    noisy[~mask] = np.random.default_rng(7).integers(0, 256, noisy[~mask].shape)
    zeroed = frames * mask[..., None, None, None].astype("uint8")
    for skip in (True, False):
        layer = VideoEncoder(conv_frame_encoder(), pooling="attention", skip_masked_frames=skip)
        a = layer(noisy, frame_mask=mask)
        np.testing.assert_allclose(a, layer(zeroed, frame_mask=mask), rtol=1e-6, atol=1e-7)


def test_numeric_mask_equals_bool_mask_and_no_mask_means_all_frames():
    frames, mask = _clips()
    layer = VideoEncoder(conv_frame_encoder(), pooling="mean")
    np.testing.assert_array_equal(
        layer(frames, frame_mask=mask.astype("float32")), layer(frames, frame_mask=mask)
    )
    full = np.ones_like(mask)
    np.testing.assert_array_equal(layer(frames), layer(frames, frame_mask=full))


def _bn_statistics(frame_encoder):
    bn = frame_encoder.get_layer("bn")
    return np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)


def test_batchnorm_statistics_come_from_real_frames_only():
    """With skip_masked_frames, a training step's BatchNorm sees exactly the real frames.

    The reference is one training call of an identical frame encoder on the real frames
    alone; encoding every frame (skip_masked_frames=False) lets the padding in and must
    give different statistics, or this test could not fail.
    """
    frames, mask = _clips()
    real = frames[mask]

    reference = conv_frame_encoder(batchnorm=True)
    reference(real[:1])
    start = reference.get_weights()
    reference(real, training=True)
    expected = _bn_statistics(reference)

    skipping = conv_frame_encoder(batchnorm=True)
    VideoEncoder(skipping)(frames, frame_mask=mask)
    skipping.set_weights(start)
    VideoEncoder(skipping)(frames, frame_mask=mask, training=True)
    for got, want in zip(_bn_statistics(skipping), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    encoding_all = conv_frame_encoder(batchnorm=True)
    layer = VideoEncoder(encoding_all, skip_masked_frames=False)
    layer(frames, frame_mask=mask)
    encoding_all.set_weights(start)
    layer(frames, frame_mask=mask, training=True)
    assert not np.allclose(_bn_statistics(encoding_all)[0], expected[0], rtol=1e-3)


def test_batch_without_any_real_frame_trains_without_nan():
    frames, mask = _clips()
    frame_encoder = conv_frame_encoder(batchnorm=True)
    layer = VideoEncoder(frame_encoder, pooling="max")
    layer(frames, frame_mask=mask)
    before = _bn_statistics(frame_encoder)
    out = layer(frames, frame_mask=np.zeros(frames.shape[:2], bool), training=True)
    np.testing.assert_array_equal(out, 0.0)
    for after, start in zip(_bn_statistics(frame_encoder), before, strict=True):
        np.testing.assert_array_equal(after, start)


def test_xla_encodes_all_frames_and_agrees():
    frames, mask = _clips()
    layer = VideoEncoder(conv_frame_encoder(), pooling="attention")
    eager = layer(frames, frame_mask=mask)
    compiled = tf.function(lambda x, m: layer(x, frame_mask=m), jit_compile=True)
    np.testing.assert_allclose(compiled(frames, mask), eager, rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_frame_encoder_through_the_real_frames():
    frames, mask = _clips()
    frame_encoder = conv_frame_encoder()
    layer = VideoEncoder(frame_encoder, pooling="mean")
    layer(frames, frame_mask=mask)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(frames, frame_mask=mask, training=True) ** 2)
    grads = tape.gradient(loss, frame_encoder.trainable_variables)
    assert all(g is not None and np.any(np.asarray(g) != 0) for g in grads)


def test_fit_under_mirrored_strategy_with_batchnorm_and_skipped_frames():
    """The gather/cond path with BatchNorm updates trains under MirroredStrategy."""
    frames, mask = _clips(time=4, size=8)
    frames, mask = np.concatenate([frames, frames]), np.concatenate([mask, mask])
    with two_device_strategy().scope():
        video = keras.Input((4, 8, 8, 3), dtype="uint8")
        frame_mask = keras.Input((4,), dtype="float32")
        frame_encoder = conv_frame_encoder(batchnorm=True)
        pooled = VideoEncoder(frame_encoder)(video, frame_mask=frame_mask)
        model = keras.Model([video, frame_mask], keras.layers.Dense(1)(pooled))
        model.compile(optimizer="sgd", loss="mse")
    history = model.fit(
        [frames, mask.astype("float32")], np.ones((len(frames), 1)), batch_size=8, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    assert all(np.all(np.isfinite(s)) for s in _bn_statistics(frame_encoder))


def test_image_encoder_as_frame_encoder_round_trips_through_keras_file(tmp_path):
    frames, mask = _clips(size=16)
    video = keras.Input((5, 16, 16, 3), dtype="uint8")
    frame_mask = keras.Input((5,), dtype="bool")
    encoder = VideoEncoder(ImageEncoder("small_cnn", image_size=(16, 16)), pooling="max")
    model = keras.Model([video, frame_mask], encoder(video, frame_mask=frame_mask))
    expected = model([frames, mask])
    model.save(tmp_path / "video.keras")
    reloaded = keras.models.load_model(tmp_path / "video.keras")
    np.testing.assert_allclose(reloaded([frames, mask]), expected, rtol=1e-6, atol=1e-6)


def test_bad_input_is_refused_with_what_came():
    frame_encoder = conv_frame_encoder()
    with pytest.raises(TypeError, match="Keras layer or model"):
        VideoEncoder(lambda x: x)
    with pytest.raises(ValueError, match="pooling"):
        VideoEncoder(frame_encoder, pooling="sum")
    layer = VideoEncoder(frame_encoder)
    with pytest.raises(ValueError, match=r"\[batch, time, height, width, channels\]"):
        layer(np.zeros((2, 8, 8, 3), "uint8"))
    with pytest.raises(ValueError, match="frame_mask"):
        layer(np.zeros((2, 3, 8, 8, 3), "uint8"), frame_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="frame_mask"):
        layer(np.zeros((2, 3, 8, 8, 3), "uint8"), frame_mask=np.ones((2, 3, 1), bool))
    feature_map = keras.Sequential([keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match=r"one vector per frame \[N, D\]"):
        VideoEncoder(feature_map)(np.zeros((2, 3, 8, 8, 3), "float32"))
