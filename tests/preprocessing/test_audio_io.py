"""load_audio and resample against soundfile, librosa and numpy on files written here."""

import re
import struct
import zlib

import av
import librosa
import numpy as np
import pytest
import soundfile as sf

from mmrep.preprocessing.audio_io import SAMPLE_RATE, AudioDecodeError, load_audio, resample


def tone(freq, rate, seconds, amplitude):
    t = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def int16_stereo(rate, seconds=0.5):
    """Two different sines as int16 `[frames, 2]`, exactly what a PCM_16 file stores."""
    channels = [tone(440, rate, seconds, 0.5), tone(1000, rate, seconds, 0.25)]
    return np.round(np.stack(channels, axis=1) * 32767).astype(np.int16)


def write_wav(path, data, rate, subtype):
    sf.write(path, data, rate, format="WAV", subtype=subtype)
    return path


def message_names(path):
    return re.escape(str(path))


def test_stereo_int16_44k_is_averaged_then_resampled_like_librosa(tmp_path):
    path = write_wav(tmp_path / "stereo.wav", int16_stereo(44100), 44100, "PCM_16")
    stored, rate = sf.read(path, dtype="float64")
    assert rate == 44100 and stored.shape[1] == 2
    expected = librosa.resample(
        stored.mean(axis=1), orig_sr=44100, target_sr=16000, res_type="soxr_hq"
    )
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == len(expected) == int(np.ceil(len(stored) * 16000 / 44100))
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)


def test_downmix_is_the_channel_mean_of_the_scaled_integers(tmp_path):
    ints = int16_stereo(16000)
    path = write_wav(tmp_path / "stereo16k.wav", ints, 16000, "PCM_16")
    out = load_audio(path)
    # int16 PCM maps to [-1, 1) by dividing by 2**15.
    np.testing.assert_allclose(out, ints.astype("float64").mean(axis=1) / 32768, atol=1e-7)
    assert np.abs(out).max() <= 1.0


def test_int24_is_scaled_to_unit_range(tmp_path):
    ints = np.round(tone(300, 16000, 0.2, 0.8) * (2**23 - 1)).astype(np.int32)
    # soundfile writes int32 input as the top 24 bits of a PCM_24 file.
    path = write_wav(tmp_path / "pcm24.wav", ints * 256, 16000, "PCM_24")
    np.testing.assert_allclose(load_audio(path), ints / 2.0**23, rtol=0, atol=1e-7)


def test_mono_float_22k_is_resampled_like_librosa(tmp_path):
    signal = tone(523.25, 22050, 0.4, 0.7).astype(np.float32)
    path = write_wav(tmp_path / "mono.wav", signal, 22050, "FLOAT")
    expected = librosa.resample(signal, orig_sr=22050, target_sr=16000, res_type="soxr_hq")
    out = load_audio(path)
    assert len(out) == len(expected) == int(np.ceil(len(signal) * 16000 / 22050))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "fmt"), [("clip.wav", "WAV"), ("clip.flac", "FLAC")])
def test_16k_input_is_returned_unchanged(tmp_path, name, fmt):
    ints = int16_stereo(16000)[:, 0]
    sf.write(tmp_path / name, ints, 16000, format=fmt, subtype="PCM_16")
    out = load_audio(tmp_path / name)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ints.astype(np.float32) / 32768)


def test_other_target_rate(tmp_path):
    signal = tone(200, 16000, 0.3, 0.5).astype(np.float32)
    path = write_wav(tmp_path / "a.wav", signal, 16000, "FLOAT")
    expected = librosa.resample(signal, orig_sr=16000, target_sr=8000, res_type="soxr_hq")
    np.testing.assert_allclose(load_audio(path, 8000), expected, rtol=0, atol=1e-6)


def test_max_seconds_crops_without_resampling(tmp_path):
    ints = int16_stereo(16000, seconds=1.0)[:, 1]
    path = write_wav(tmp_path / "long.wav", ints, 16000, "PCM_16")
    out = load_audio(path, max_seconds=0.25)
    np.testing.assert_array_equal(out, ints[:4000].astype(np.float32) / 32768)
    assert len(load_audio(path, max_seconds=5)) == 16000


def test_max_seconds_crop_equals_a_full_decode_cropped(tmp_path):
    path = write_wav(tmp_path / "long.wav", int16_stereo(44100, seconds=2.0), 44100, "PCM_16")
    stored, _ = sf.read(path, dtype="float64")
    full = librosa.resample(stored.mean(axis=1), orig_sr=44100, target_sr=16000, res_type="soxr_hq")
    out = load_audio(path, max_seconds=0.3)
    assert len(out) == 4800
    np.testing.assert_allclose(out, full[:4800], rtol=0, atol=2e-6)


def test_unicode_file_name(tmp_path):
    signal = tone(440, 16000, 0.1, 0.5).astype(np.float32)
    path = write_wav(tmp_path / "звук ü.wav", signal, 16000, "FLOAT")
    np.testing.assert_array_equal(load_audio(path), signal)
    np.testing.assert_array_equal(load_audio(str(path)), signal)


def test_container_soundfile_cannot_read_is_decoded_with_ffmpeg(tmp_path):
    ints = int16_stereo(22050, seconds=0.3)
    path = tmp_path / "lossless.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("alac", rate=22050, layout="stereo")
        stream.format = "s16p"
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(ints.T), format="s16p", layout="stereo"
        )
        frame.sample_rate, frame.pts = 22050, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(sf.LibsndfileError):
        sf.info(path)
    # ALAC is lossless, so the decoded samples are the integers written.
    mean = ints.astype("float64").mean(axis=1) / 32768
    np.testing.assert_allclose(load_audio(path, 22050), mean, rtol=0, atol=1e-7)
    expected = librosa.resample(mean, orig_sr=22050, target_sr=16000, res_type="soxr_hq")
    np.testing.assert_allclose(load_audio(path), expected, rtol=0, atol=2e-6)
    np.testing.assert_allclose(load_audio(path, max_seconds=0.1), expected[:1600], atol=2e-6)


def png_bytes():
    """A valid 1x1 grey PNG."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def valid_wav_bytes(tmp_path, subtype="PCM_16"):
    path = write_wav(tmp_path / "valid.wav", tone(440, 16000, 0.25, 0.5), 16000, subtype)
    return path.read_bytes()


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "missing.wav"
    with pytest.raises(FileNotFoundError, match=message_names(path)):
        load_audio(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(AudioDecodeError, match=message_names(tmp_path)):
        load_audio(tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("noise.wav", np.random.default_rng(0).bytes(4096), "Cannot decode"),
        ("image.wav", png_bytes(), "Cannot decode"),
        ("noise.flac", b"fLaC" + np.random.default_rng(1).bytes(500), "Cannot decode"),
        ("image.m4a", png_bytes(), "no audio stream"),
        ("noise.m4a", bytes(300), "Cannot decode"),
    ],
)
def test_undecodable_bytes(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(
        AudioDecodeError, match=f"{match}.*{message_names(path)}|{message_names(path)}.*{match}"
    ):
        load_audio(path)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
@pytest.mark.parametrize("cut", [1, 1001, "all data"])
def test_truncated_wav(tmp_path, subtype, cut):
    content = valid_wav_bytes(tmp_path, subtype)
    declared_at = content.index(b"data") + 4
    declared = struct.unpack("<I", content[declared_at : declared_at + 4])[0]
    keep = declared_at + 4 if cut == "all data" else len(content) - cut
    path = tmp_path / "truncated.wav"
    path.write_bytes(content[:keep])
    # libsndfile itself returns the frames that are left, without complaint.
    width = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}[subtype]
    assert len(sf.read(path)[0]) < declared // width == 4000
    with pytest.raises(
        AudioDecodeError, match=rf"{message_names(path)}.*{declared} bytes.*truncated"
    ):
        load_audio(path)


def test_wav_with_a_chunk_after_the_data_is_not_truncated(tmp_path):
    content = valid_wav_bytes(tmp_path)
    # A trailing LIST chunk (as tag editors append); the RIFF size grows with it.
    extra = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\x00"
    body = content[8:] + extra
    path = tmp_path / "tagged.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    np.testing.assert_array_equal(
        load_audio(path), sf.read(tmp_path / "valid.wav", dtype="float32")[0]
    )


@pytest.mark.parametrize("placeholder", [0xFFFFFFFF, 0x7FFFF000])
def test_streamed_wav_with_a_placeholder_size_is_read_to_the_end(tmp_path, placeholder):
    content = valid_wav_bytes(tmp_path)
    at = content.index(b"data") + 4
    # As a writer on a pipe leaves it: neither size can be filled in afterwards.
    streamed = (
        content[:4]
        + struct.pack("<I", placeholder)
        + content[8:at]
        + struct.pack("<I", placeholder)
        + content[at + 4 :]
    )
    path = tmp_path / "streamed.wav"
    path.write_bytes(streamed)
    expected, _ = sf.read(tmp_path / "valid.wav", dtype="float32")
    np.testing.assert_array_equal(load_audio(path), expected)


def test_truncated_rf64(tmp_path):
    signal = tone(440, 16000, 0.25, 0.5)
    path = tmp_path / "big.rf64"
    sf.write(path, signal, 16000, format="RF64", subtype="PCM_16")
    content = path.read_bytes()
    assert content[:4] == b"RF64" and content[12:16] == b"ds64"
    np.testing.assert_allclose(load_audio(path), signal, rtol=0, atol=1 / 32768)
    path.write_bytes(content[:-100])
    with pytest.raises(AudioDecodeError, match=rf"{message_names(path)}.*8000 bytes.*truncated"):
        load_audio(path)


def test_empty_wav(tmp_path):
    path = write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000, "PCM_16")
    assert sf.info(path).frames == 0
    with pytest.raises(AudioDecodeError, match=f"{message_names(path)}.*contains no samples"):
        load_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav(tmp_path, bad):
    signal = tone(440, 16000, 0.1, 0.5).astype(np.float32)
    signal[[10, 500]] = bad
    path = write_wav(tmp_path / "nan.wav", signal, 16000, "FLOAT")
    assert not np.isfinite(sf.read(path)[0]).all()
    with pytest.raises(AudioDecodeError, match=f"{message_names(path)}.*Received: 2 NaN or inf"):
        load_audio(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": 16000.0}, "sample_rate"),
        ({"max_seconds": 0}, "max_seconds"),
        ({"max_seconds": "1"}, "max_seconds"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    path = write_wav(tmp_path / "a.wav", tone(440, 16000, 0.1, 0.5), 16000, "FLOAT")
    with pytest.raises(ValueError, match=match):
        load_audio(path, **kwargs)


def test_resample_matches_librosa_and_keeps_leading_axes():
    rng = np.random.default_rng(3)
    batch = rng.uniform(-1, 1, (3, 4410)).astype(np.float64)
    out = resample(batch, 44100)
    assert out.dtype == np.float32 and out.shape == (3, 1600)
    expected = librosa.resample(batch, orig_sr=44100, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_resample_at_equal_rates_is_the_identity():
    signal = np.random.default_rng(4).uniform(-1, 1, 1000).astype(np.float32)
    np.testing.assert_array_equal(resample(signal, 16000), signal)
    np.testing.assert_array_equal(resample(signal.astype(np.float64), 8000, 8000), signal)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros(10, np.int16), 16000), "floating array"),
        ((np.float32(1.0), 16000), "floating array"),
        ((np.zeros(10, np.float32), -1), "orig_sample_rate"),
        ((np.zeros(10, np.float32), 16000, None), "sample_rate"),
    ],
)
def test_resample_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        resample(*args)
