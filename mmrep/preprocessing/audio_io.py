"""Audio file decoding to mono float32 waveforms at a fixed sample rate, and resampling."""

import math
import os
import struct
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from mmrep.preprocessing.regular_file import open_regular
from mmrep.utils.arguments import check_int

SAMPLE_RATE = 16000

# Containers libsndfile owns: when it cannot read one of these the file is broken, and
# handing it to FFmpeg (which guesses formats from content) could decode noise from it.
_SOUNDFILE_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64".split()
)
# A WAV written to a pipe cannot seek back to fill in its sizes: writers leave a
# placeholder (0xFFFFFFFF, or 0x7FFFF000 from espeak-ng --stdout) and readers take the
# data to run to the end of the file. Such a size says nothing about truncation.
_STREAMED_SIZE = 0x7FFFF000


class AudioDecodeError(ValueError):
    """An audio file could not be decoded; the message names the file and the problem."""


def load_audio(path, sample_rate=SAMPLE_RATE, *, max_seconds=None):
    """Decodes an audio file to a mono float32 waveform at `sample_rate`.

    WAV, FLAC, OGG/Vorbis/Opus, MP3 and the other formats of libsndfile are decoded with
    soundfile; other containers (M4A/AAC/ALAC, the audio track of a video file) with PyAV's
    bundled FFmpeg, so that nothing needs a system decoder or the network. Integer PCM is
    scaled to [-1, 1); float files are returned as stored. Channels are averaged to mono,
    and the result is resampled with soxr (`librosa.resample(res_type="soxr_hq")`) only
    when the file's rate differs from `sample_rate`.

    A WAV file cut short, whose data chunk holds fewer bytes than its header declares, is
    refused: libsndfile would silently return only the frames present. Only regular files
    are opened: a FIFO, device, socket or folder is refused before anything opens it.
    With `max_seconds=None` the whole clip is decoded (memory grows with its length:
    an hour of 16 kHz mono is 230 MB of float32, plus the decode at the file's own rate
    and channel count).

    Args:
        path: str or `os.PathLike`. The audio file.
        sample_rate: int. Sample rate of the returned waveform. Defaults to 16000.
        max_seconds: float or `None`. Keep only the first `round(max_seconds * sample_rate)`
            samples (only about that much is decoded). `None` keeps all. Defaults to `None`.

    Returns:
        float32 array `[S]`.

    Raises:
        FileNotFoundError: `path` does not exist.
        AudioDecodeError: the path is not a regular file, or the file is not decodable
            audio, is truncated, holds no samples, or holds NaN or infinite samples.
        ValueError: `sample_rate` or `max_seconds` is not positive.
    """
    path = Path(os.fspath(path))
    sample_rate = check_int("sample_rate", sample_rate, minimum=1)
    if max_seconds is not None and (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, (int, float, np.number))
        or not max_seconds > 0
    ):
        raise ValueError(
            "Expected `max_seconds` to be a positive number or None. "
            f"Received: max_seconds={max_seconds!r}"
        )
    with open_regular(path, AudioDecodeError, "Audio file") as handle:
        _check_wav_data_size(path, handle)
        try:
            sound = sf.SoundFile(handle)
        except sf.SoundFileError as error:
            if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
                raise _undecodable(path, error) from None
            data, rate = _decode_with_av(path, max_seconds)
        else:
            with sound:
                rate = sound.samplerate
                frames = -1
                if max_seconds is not None:
                    # A little more than asked, so that the resampler's end effects fall
                    # beyond the crop and the kept samples equal those of a full decode.
                    margin = 0 if rate == sample_rate else rate // 10
                    frames = math.ceil(max_seconds * rate) + margin
                try:
                    data = sound.read(frames, dtype="float32", always_2d=True)
                except sf.SoundFileError as error:
                    raise _undecodable(path, error) from None

    if data.shape[0] == 0:
        raise AudioDecodeError(f"Audio file '{path}' contains no samples.")
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise AudioDecodeError(
            f"Expected finite samples in audio file '{path}'. Received: {bad} NaN or "
            f"infinite value(s) out of {data.size}."
        )
    waveform = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    waveform = resample(waveform, rate, sample_rate)
    if max_seconds is not None:
        waveform = waveform[: round(max_seconds * sample_rate)]
    return waveform


def resample(waveform, orig_sample_rate, sample_rate=SAMPLE_RATE):
    """Resamples a waveform with soxr's high-quality filter.

    Args:
        waveform: float array `[..., S]`; time is the last axis.
        orig_sample_rate: int. Sample rate of `waveform`.
        sample_rate: int. Target sample rate. Defaults to 16000.

    Returns:
        float32 array `[..., S']` with `S' = ceil(S * sample_rate / orig_sample_rate)`;
        `waveform` itself, as float32, when the rates are equal.

    Raises:
        ValueError: a rate is not a positive integer, or `waveform` is not a floating
            array with at least one axis.
    """
    orig_sample_rate = check_int("orig_sample_rate", orig_sample_rate, minimum=1)
    sample_rate = check_int("sample_rate", sample_rate, minimum=1)
    waveform = np.asarray(waveform)
    if waveform.ndim == 0 or not np.issubdtype(waveform.dtype, np.floating):
        raise ValueError(
            "Expected `waveform` to be a floating array [..., samples]. "
            f"Received: shape={waveform.shape}, dtype={waveform.dtype}"
        )
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    if orig_sample_rate == sample_rate:
        return waveform
    out = librosa.resample(
        waveform, orig_sr=orig_sample_rate, target_sr=sample_rate, res_type="soxr_hq"
    )
    return out.astype(np.float32, copy=False)


def _undecodable(path, error):
    # libsndfile's own text, without soundfile's "Error opening <file object>:" prefix.
    reason = getattr(error, "error_string", None) or str(error)
    return AudioDecodeError(f"Cannot decode audio file '{path}': {reason}")


def _check_wav_data_size(path, handle):
    """Raises if a WAV file's `data` chunk declares more bytes than the file holds.

    Reads the RIFF (or RIFX, RF64, BW64) chunk headers from `handle` and rewinds it; any
    other file is left to the decoder.
    """
    file_size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    header = handle.read(12)
    try:
        if header[:4] not in (b"RIFF", b"RIFX", b"RF64", b"BW64") or header[8:] != b"WAVE":
            return
        endian = ">" if header[:4] == b"RIFX" else "<"
        offset, size_64 = 12, None
        while offset + 8 <= file_size:
            handle.seek(offset)
            chunk_id, size = struct.unpack(endian + "4sI", handle.read(8))
            body = handle.read(16)
            if chunk_id == b"ds64" and len(body) == 16:
                # RF64 keeps the real data size here and writes 0xFFFFFFFF in the data chunk.
                size_64 = struct.unpack("<QQ", body)[1]
            elif chunk_id == b"data":
                if size >= _STREAMED_SIZE:
                    size = size_64  # None for a streamed WAV: its length is unknown
                present = file_size - (offset + 8)
                if size is not None and present < size:
                    raise AudioDecodeError(
                        f"Expected the data chunk of WAV file '{path}' to hold {size} bytes, "
                        f"as its header declares. Received: {present} bytes; the file is "
                        "truncated."
                    )
                return
            offset += 8 + size + (size & 1)  # chunks are padded to an even size
    finally:
        handle.seek(0)


def _decode_with_av(path, max_seconds):
    """Decodes the first audio stream with PyAV; returns `([frames, channels], rate)`."""
    import av  # imported here: only containers libsndfile cannot read need FFmpeg

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"Audio file '{path}' has no audio stream.")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            limit = math.inf if max_seconds is None else math.ceil(max_seconds * rate) + rate
            # Planar float32 keeps each channel a row, whatever the codec's native format.
            converter = av.AudioResampler(format="fltp")
            chunks, decoded = [], 0
            for frame in container.decode(stream):
                for converted in converter.resample(frame):
                    chunks.append(converted.to_ndarray())
                    decoded += chunks[-1].shape[1]
                if decoded >= limit:
                    break
            else:
                chunks.extend(f.to_ndarray() for f in converter.resample(None))
    except av.FFmpegError as error:
        raise _undecodable(path, error) from None
    # No frames at all is reported by the caller, as for any other empty file.
    data = np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, 1), np.float32)
    return data, rate
