"""The references of the audio and text benchmarks, run in a process of their own.

On a machine with few cores, a reference that shares the process with TensorFlow loses
much of its speed to the thread pools spinning beside it (OpenBLAS's and PyTorch's
OpenMP threads against TensorFlow's, and back): PyTorch's VGGish measured 2.4x slower
in-process than alone on 2 cores, librosa's mel matmul up to 50x. So each reference runs
here, in a child process that never imports TensorFlow and whose idle threads sleep
instead of spinning, and `ReferenceProcess` drives it call by call through a pipe (the
round trip costs well under a millisecond).

`python -m tests.benchmarks.references` serves one reference: a JSON line on stdin
names it and its size, then every `run` line runs it once and answers `done`.
"""

import json
import os
import subprocess
import sys
import weakref

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def clips(batch, seconds, seed=0):
    """The benchmark audio: `[batch, seconds * 16000]` float32 noise."""
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((batch, int(seconds * 16000)))).astype("float32")


def librosa_log_mel(batch, seconds):
    """librosa: magnitude STFT per clip, one HTK mel matmul for the batch, log."""
    import librosa

    audio = clips(batch, seconds)
    mel = librosa.filters.mel(
        sr=16000, n_fft=512, n_mels=64, fmin=125.0, fmax=7500.0, htk=True, norm=None
    )

    def run():
        spectra = [
            np.abs(
                librosa.stft(
                    clip, n_fft=512, hop_length=160, win_length=400, window="hann", center=False
                )
            )
            for clip in audio
        ]
        frames = spectra[0].shape[1]
        log_mel = np.log(mel @ np.concatenate(spectra, axis=1) + 0.01)
        return log_mel.T.reshape(len(audio), frames, -1)

    return run


def torch_vggish(batch, seconds, widths, seed=1):
    """PyTorch, 2 threads: float64 STFT, mel, log, framing, the network (same weights)."""
    import torch

    from tests.encoders.audio import reference as ref

    torch.set_num_threads(2)
    network = ref.TorchVGGish(ref.random_weights(ref.tf1_shapes(*widths), seed=seed)).eval()
    window = torch.from_numpy(ref.periodic_hann(ref.WINDOW))
    mel = torch.from_numpy(ref.mel_matrix().astype("float32"))
    waveform = torch.from_numpy(clips(batch, seconds, seed=seed))

    def run():
        with torch.no_grad():
            frames = waveform.double().unfold(-1, ref.WINDOW, ref.HOP) * window
            magnitude = torch.fft.rfft(frames, n=ref.FFT).abs().float()
            log_mel = torch.log(magnitude @ mel + ref.LOG_OFFSET)
            examples = log_mel.unfold(1, ref.EXAMPLE_FRAMES, ref.EXAMPLE_FRAMES)
            examples = examples.permute(0, 1, 3, 2)  # [B, E, 96, 64]
            count = examples.shape[1]
            embeddings = network(examples.reshape(batch * count, *examples.shape[2:]))
            return embeddings.reshape(batch, count, -1).numpy()

    return run


def torch_bert(checkpoint, batch, length, seed=0):
    """transformers' BertModel on PyTorch, 2 threads, inference mode (its default sdpa)."""
    import torch
    import transformers

    torch.set_num_threads(2)
    model = transformers.BertModel.from_pretrained(checkpoint, local_files_only=True).eval()
    inputs = {
        k: torch.as_tensor(v, dtype=torch.long)
        for k, v in bert_batch(batch, length, model.config.vocab_size, seed).items()
        if k != "segment_ids"
    }
    inputs["attention_mask"] = inputs.pop("padding_mask")
    inputs["input_ids"] = inputs.pop("token_ids")

    def run():
        with torch.inference_mode():
            return model(**inputs).last_hidden_state.numpy()

    return run


def bert_batch(batch, length, vocab_size, seed=0):
    """Random token ids, lengths between half and all of `length`, padding after."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(length // 2, length + 1, batch)
    mask = (np.arange(length)[None] < lengths[:, None]).astype("int32")
    ids = rng.integers(min(1000, vocab_size - 1), vocab_size, (batch, length)) * mask
    return {"token_ids": ids.astype("int32"), "padding_mask": mask, "segment_ids": 0 * mask}


REFERENCES = {
    "librosa_log_mel": librosa_log_mel,
    "torch_vggish": torch_vggish,
    "torch_bert": torch_bert,
}


class ReferenceProcess:
    """A zero-argument callable that runs a reference once in the child process.

    `result()` returns the child's last output (for checks outside the timed calls).
    """

    def __init__(self, name, **kwargs):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
        # Idle worker threads that spin (OpenMP's, OpenBLAS's, ~0.1 s after each call)
        # would steal the cores from the TensorFlow call timed next; alone, the
        # references measured as fast with these settings as without.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmarks.references"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
        )
        weakref.finalize(self, _close, self._process)
        self._request({"name": name, "kwargs": kwargs}, expect="ready")

    def __call__(self):
        self._request("run", expect="done")

    def result(self):
        return np.asarray(json.loads(self._request("result", expect=None)))

    def _request(self, message, expect):
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline().strip()
        if not answer or (expect is not None and answer != expect):
            raise RuntimeError(f"reference process answered {answer!r}, expected {expect}")
        return answer


def _close(process):
    if process.poll() is None:
        process.stdin.close()
        process.wait(timeout=30)


def serve():
    spec = json.loads(sys.stdin.readline())
    kwargs = spec["kwargs"]
    if "widths" in kwargs:
        kwargs["widths"] = [tuple(w) if isinstance(w, list) else w for w in kwargs["widths"]]
    run = REFERENCES[spec["name"]](**kwargs)
    output = None
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command == "run":
            output = run()
            print("done", flush=True)
        elif command == "result":
            print(json.dumps(np.asarray(output, "float64").tolist()), flush=True)


if __name__ == "__main__":
    serve()
