"""Synthesise the spoken-digit audio of the embedded `mmdigits` data set with espeak-ng.

Speaks the English words "zero" .. "nine" in 48 variants each (12 voices, each at 4 speeds
and 4 pitches in a balanced pattern), converts every clip to 16 kHz mono, trims the
leading and trailing silence, peak-normalises it to 0.9 and writes it as 16-bit FLAC to
`mmrep/data/mmdigits_audio/{digit}_{variant:02d}.flac`, together with `index.json`, which
lists every clip (file, digit, word, voice, speed, pitch, length) and the generation
parameters. The output is deterministic: the same espeak-ng, librosa and soundfile give
byte-identical files.

Re-run it from the repository root, with espeak-ng installed (Debian:
`apt-get install -y espeak-ng`) and mmrep's dependencies in the environment:

    python scripts/make_mmdigits_audio.py            # rewrites mmrep/data/mmdigits_audio/
    python scripts/make_mmdigits_audio.py --out DIR  # writes elsewhere

Clips in the output folder named like ours (`D_VV.flac`) that this run did not write, left
over from an older grid, are removed, so that the folder always matches `index.json`.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Six English accents, each with a male and a female timbre variant.
VOICES = (
    "en-us",
    "en-us+f3",
    "en-gb",
    "en-gb+f2",
    "en-gb-scotland+m3",
    "en-gb-scotland+f4",
    "en-gb-x-rp+m7",
    "en-gb-x-rp+f1",
    "en-029+m2",
    "en-029+f5",
    "en-gb-x-gbclan+m4",
    "en-gb-x-gbclan+f3",
)
SPEEDS_WPM = (125, 150, 175, 200)
PITCHES = (30, 43, 57, 70)
SAMPLE_RATE = 16000
TOP_DB = 40.0
TRIM_FRAME_LENGTH = 512
TRIM_HOP_LENGTH = 128
PEAK = 0.9
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "mmrep" / "data" / "mmdigits_audio"


def variant_grid():
    """Returns the `(voice, speed_wpm, pitch)` of every variant, in variant-id order.

    Each voice is spoken at every speed and at every pitch exactly once (4 variants per
    voice), and the pitch is rotated by the voice index, so across the 12 voices every
    (speed, pitch) pair occurs 3 times: speed, pitch and voice are not confounded.
    """
    return [
        (voice, speed, PITCHES[(slot + v) % len(PITCHES)])
        for v, voice in enumerate(VOICES)
        for slot, speed in enumerate(SPEEDS_WPM)
    ]


def espeak_version():
    out = subprocess.run(
        ["espeak-ng", "--version"], check=True, capture_output=True, text=True
    ).stdout
    # The line ends with "Data at: <install path>", which is machine-specific.
    return out.split("Data at:")[0].strip()


def synthesise(word, voice, speed, pitch, workdir):
    """Speaks `word` with espeak-ng and returns the waveform (float64 mono) and its rate."""
    wav = Path(workdir) / "clip.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), word],
        check=True,
        capture_output=True,
    )
    data, rate = sf.read(wav, dtype="float64", always_2d=True)
    return data.mean(axis=1), rate


def process(waveform, rate):
    """Resamples to 16 kHz, trims silence at both ends and peak-normalises to `PEAK`."""
    y = librosa.resample(waveform, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    # Short frames (32 ms) so the trim follows the word's onset and offset closely.
    y, _ = librosa.effects.trim(
        y, top_db=TOP_DB, frame_length=TRIM_FRAME_LENGTH, hop_length=TRIM_HOP_LENGTH
    )
    peak = np.max(np.abs(y))
    if peak == 0:
        raise RuntimeError("espeak-ng produced a silent clip")
    return y * (PEAK / peak)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed (Debian: apt-get install -y espeak-ng)")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    grid = variant_grid()
    total = len(WORDS) * len(grid)
    records = []
    with tempfile.TemporaryDirectory() as workdir:
        for digit, word in enumerate(WORDS):
            for variant, (voice, speed, pitch) in enumerate(grid):
                name = f"{digit}_{variant:02d}.flac"
                waveform, rate = synthesise(word, voice, speed, pitch, workdir)
                y = process(waveform, rate)
                sf.write(out / name, y, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
                records.append(
                    {
                        "file": name,
                        "digit": digit,
                        "word": word,
                        "voice": voice,
                        "speed_wpm": speed,
                        "pitch": pitch,
                        "num_samples": len(y),
                        "sample_rate": SAMPLE_RATE,
                    }
                )
                print(f"[{len(records)}/{total}] {name}", flush=True)
    written = {r["file"] for r in records}
    for stale in sorted(out.glob("[0-9]_[0-9][0-9].flac")):
        if stale.name not in written:
            stale.unlink()
    index = {
        "name": "mmdigits_audio",
        "description": "English spoken digits synthesised with espeak-ng; 16 kHz mono FLAC.",
        "generator": "scripts/make_mmdigits_audio.py",
        "espeak_ng_version": espeak_version(),
        "parameters": {
            "voices": list(VOICES),
            "speeds_wpm": list(SPEEDS_WPM),
            "pitches": list(PITCHES),
            "variants_per_digit": len(grid),
            "sample_rate": SAMPLE_RATE,
            "resampler": "librosa.resample(res_type='soxr_hq')",
            "trim": {
                "top_db": TOP_DB,
                "frame_length": TRIM_FRAME_LENGTH,
                "hop_length": TRIM_HOP_LENGTH,
            },
            "peak": PEAK,
            "format": "FLAC PCM_16",
            "librosa_version": librosa.__version__,
            "soundfile_version": sf.__version__,
            "libsndfile_version": sf.__libsndfile_version__,
        },
        "clips": sorted(records, key=lambda r: r["file"]),
    }
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {len(records)} clips and index.json to {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
