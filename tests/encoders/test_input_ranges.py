"""Values outside an encoder's declared range are errors, eagerly and in a graph.

Float pixels outside `value_range` (widened by 10% of its width), float token ids that are
not whole numbers, segment ids past the type-vocabulary and waveform samples beyond
`MAX_ABS_SAMPLE` (int16 units given as floats): eagerly a `ValueError` naming the layer,
what was expected and what came; inside a `tf.function` an in-graph assertion
(`InvalidArgumentError`). Values at the boundaries pass and give the usual outputs.
"""

import numpy as np
import pytest
import tensorflow as tf

from mmrep.encoders import AudioExamples, BertEncoder, ImageEncoder, LogMelSpectrogram, VGGish
from mmrep.encoders.audio.waveform_checks import MAX_ABS_SAMPLE
from mmrep.utils.value_checks import checked_flags, checked_range, checked_whole

BERT = {
    "vocabulary_size": 30,
    "num_layers": 1,
    "num_heads": 2,
    "hidden_size": 8,
    "intermediate_size": 12,
    "max_position_embeddings": 8,
    "type_vocabulary_size": 2,
    "pooling": "mean",
}


def traced(layer):
    """The layer in a `tf.function` of unknown batch: its checks run in the graph."""
    return tf.function(lambda *args, **kwargs: layer(*args, **kwargs))


@pytest.fixture(scope="module")
def unit_image_encoder():
    return ImageEncoder(
        "small_cnn", value_range=(0.0, 1.0), image_size=8, backbone_kwargs={"filters": [4]}
    )


@pytest.fixture(scope="module")
def bert():
    return BertEncoder(**BERT)


def test_float_pixels_outside_value_range_are_an_error(unit_image_encoder):
    pixels = np.full((2, 8, 8, 3), 255.0, "float32")  # 0..255 given to a 0..1 encoder
    pixels[0] = 0.0
    with pytest.raises(
        ValueError,
        match=r"image_encoder.*expected floating pixels in \[-0\.1, "
        r"1\.1\] \(value_range=\(0\.0, 1\.0\).*max 255",
    ):
        unit_image_encoder(pixels)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected floating pixels.*255"):
        traced(unit_image_encoder)(pixels)
    below = np.full((1, 8, 8, 3), -1.0, "float32")  # -1..1 given to a 0..1 encoder
    with pytest.raises(ValueError, match=r"min -1"):
        unit_image_encoder(below)
    with pytest.raises(ValueError, match=r"NaN"):
        unit_image_encoder(np.full((1, 8, 8, 3), np.nan, "float32"))


def test_float_pixels_at_the_boundaries_pass(unit_image_encoder):
    edges = np.zeros((4, 8, 8, 3), "float32")
    edges[1], edges[2], edges[3] = 1.0, -0.1, 1.1
    out = unit_image_encoder(edges)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(traced(unit_image_encoder)(edges), out, atol=1e-6)
    # uint8 images are 0..255 whatever value_range says: never checked.
    assert unit_image_encoder(np.full((1, 8, 8, 3), 255, "uint8")).shape == (1, 4)


def test_default_value_range_refuses_floats_far_outside_0_255():
    encoder = ImageEncoder("small_cnn", image_size=8, backbone_kwargs={"filters": [4]})
    assert encoder(np.full((1, 8, 8, 3), 255.0, "float32")).shape == (1, 4)
    with pytest.raises(ValueError, match=r"in \[-25\.5, 280\.5\].*max 1000"):
        encoder(np.full((1, 8, 8, 3), 1000.0, "float32"))


def _tokens(dtype="int32"):
    ids = np.array([[2, 5, 7, 3], [4, 9, 0, 0]])
    return {"token_ids": ids.astype(dtype), "padding_mask": (ids > 0).astype("int32")}


def test_float_token_ids_must_be_whole(bert):
    whole = bert(_tokens("float32"))
    np.testing.assert_allclose(whole, bert(_tokens()), atol=1e-6)
    fractional = _tokens("float32")
    fractional["token_ids"][0, 1] = 3.7
    with pytest.raises(ValueError, match=r"expected token ids to be whole numbers.*3\.7"):
        bert(fractional)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"whole numbers.*3\.7"):
        traced(bert)(fractional)


def test_segment_ids_must_be_within_the_type_vocabulary(bert):
    tokens = _tokens()
    tokens["segment_ids"] = np.array([[0, 0, 1, 1], [0, 1, 0, 0]], "int32")  # the boundary
    reference = bert(tokens)
    np.testing.assert_allclose(traced(bert)(tokens), reference, atol=1e-6)
    for bad in (2, -1):
        tokens["segment_ids"][1, 2] = bad
        with pytest.raises(
            ValueError, match=rf"expected segment ids in \[0, 1\] \(type_vocabulary_size=2\).*{bad}"
        ):
            bert(tokens)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected segment ids"):
            traced(bert)(tokens)
    tokens["segment_ids"] = tokens["segment_ids"].astype("float32")
    tokens["segment_ids"][1, 2] = 0.5
    with pytest.raises(ValueError, match=r"segment ids to be whole numbers.*0\.5"):
        bert(tokens)


@pytest.mark.parametrize(
    "layer",
    [
        LogMelSpectrogram(),
        AudioExamples(pad_short=True),
        VGGish(pooling="mean", pad_short=True, conv_filters=(2, 2, 2, 2), fc_units=(4,)),
    ],
    ids=["log_mel", "audio_examples", "vggish"],
)
def test_int16_scale_floats_are_not_a_waveform(layer):
    rng = np.random.default_rng(0)
    pcm = np.round(3000.0 * rng.standard_normal((2, 1600))).astype("float32")  # int16 units
    with pytest.raises(
        ValueError,
        match=r"\w+: expected waveform samples in \[-2, 2\].*Received max \|sample\| \d{4,}",
    ):
        layer(pcm)
    with pytest.raises(ValueError, match=r"expected waveform samples"):
        layer(pcm, **({} if isinstance(layer, LogMelSpectrogram) else {"lengths": [1600, 800]}))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected waveform samples in"):
        traced(layer)(pcm)
    # At the bound, and int16 PCM itself (scaled by 1/32768), pass.
    edges = np.zeros((2, 1600), "float32")
    edges[0, ::2], edges[1, ::3] = MAX_ABS_SAMPLE, -MAX_ABS_SAMPLE
    assert np.all(np.isfinite(keras_flat(layer(edges))))
    assert np.all(np.isfinite(keras_flat(traced(layer)(edges))))
    assert np.all(np.isfinite(keras_flat(layer(pcm.astype("int16")))))


def keras_flat(out):
    return np.concatenate([np.ravel(v) for v in tf.nest.flatten(out) if v.dtype != tf.bool])


def test_non_finite_samples_are_still_named_as_such():
    waveform = np.zeros((1, 800), "float32")
    waveform[0, 3] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected finite.*count: 1"):
        LogMelSpectrogram()(waveform)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected finite"):
        traced(LogMelSpectrogram())(waveform)


def test_value_checks_cost_nothing_under_xla_and_pass_good_values():
    x = np.array([[0.0, 1.0], [0.5, 0.25]], "float32")
    compiled = tf.function(lambda t: checked_range(t, "layer", 0.0, 1.0) * 2.0, jit_compile=True)
    np.testing.assert_allclose(compiled(x), 2.0 * x)
    assert np.array_equal(checked_whole(np.array([3, 4]), "layer"), [3, 4])
    np.testing.assert_array_equal(checked_flags(np.array([[0.0, 1.0]]), "layer"), [[0.0, 1.0]])
    with pytest.raises(
        ValueError,
        match=r"layer: expected presence flags to be 0 \(missing\) or "
        r"1 \(present\)\. .*0\.5",
    ):
        checked_flags(np.array([[0.5, 1.0]], "float32"), "layer")
