"""The committed spoken-digit clips of mmdigits against their index, read with soundfile."""

import collections
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import mmrep

AUDIO_DIR = Path(mmrep.__file__).parent / "data" / "mmdigits_audio"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
INDEX = json.loads((AUDIO_DIR / "index.json").read_text(encoding="utf-8"))
CLIPS = INDEX["clips"]


def test_index_lists_exactly_the_files_present_sorted_by_name():
    listed = [clip["file"] for clip in CLIPS]
    present = sorted(p.name for p in AUDIO_DIR.iterdir() if p.name != "index.json")
    assert listed == sorted(listed)
    assert len(set(listed)) == len(listed)
    assert listed == present


def test_index_metadata():
    assert INDEX["espeak_ng_version"].startswith("eSpeak NG")
    assert INDEX["parameters"]["sample_rate"] == 16000
    assert INDEX["parameters"]["variants_per_digit"] * 10 == len(CLIPS)


def test_records_are_consistent_with_their_names():
    for clip in CLIPS:
        name = re.fullmatch(r"(\d)_\d\d\.flac", clip["file"])
        assert name and int(name.group(1)) == clip["digit"]
        assert WORDS[clip["digit"]] == clip["word"]
        assert clip["sample_rate"] == 16000
        assert isinstance(clip["voice"], str) and clip["voice"].startswith("en")
        assert 100 <= clip["speed_wpm"] <= 220 and 0 <= clip["pitch"] <= 99


def test_every_digit_has_at_least_30_distinct_variants():
    variants = collections.defaultdict(set)
    for clip in CLIPS:
        variants[clip["digit"]].add((clip["voice"], clip["speed_wpm"], clip["pitch"]))
    counts = collections.Counter(clip["digit"] for clip in CLIPS)
    assert sorted(counts) == list(range(10))
    for digit in range(10):
        assert 30 <= len(variants[digit]) == counts[digit] <= 60


def test_total_size_is_under_8_mb():
    assert sum(p.stat().st_size for p in AUDIO_DIR.iterdir()) < 8 * 1024 * 1024


@pytest.mark.parametrize("digit", range(10))
def test_clips_are_16k_mono_pcm16_flac_of_the_indexed_length(digit):
    for clip in (c for c in CLIPS if c["digit"] == digit):
        info = sf.info(AUDIO_DIR / clip["file"])
        assert (info.format, info.subtype) == ("FLAC", "PCM_16")
        assert info.samplerate == 16000 and info.channels == 1
        assert info.frames == clip["num_samples"]
        assert 0.2 <= info.frames / 16000 <= 1.5


@pytest.mark.parametrize("digit", range(10))
def test_clips_are_audible_and_peak_normalised(digit):
    for clip in (c for c in CLIPS if c["digit"] == digit):
        data, _ = sf.read(AUDIO_DIR / clip["file"], dtype="float64")
        assert len(data) == clip["num_samples"]
        # 0.9 quantised to 16 bits.
        assert abs(np.abs(data).max() - 0.9) <= 1 / 32768
        assert np.sqrt(np.mean(data**2)) > 0.05
        # Trimmed: espeak-ng pads each word with about 0.5 s of digital silence; what the
        # trim leaves of it at either end is under one 32 ms analysis frame.
        sound = np.flatnonzero(data)
        assert sound[0] < 512 and len(data) - 1 - sound[-1] < 512


def test_no_two_clips_are_identical():
    digests = {
        hashlib.sha256(sf.read(AUDIO_DIR / clip["file"], dtype="int16")[0].tobytes()).digest()
        for clip in CLIPS
    }
    assert len(digests) == len(CLIPS)
