"""Audio benchmarks: the VGGish log-mel frontend and the full VGGish, on CPU.

The references (librosa, PyTorch) run in a process of their own; see
`tests/benchmarks/references.py` for why.
"""

import tensorflow as tf

from mmrep.encoders import LogMelSpectrogram, VGGish
from tests.benchmarks.references import ReferenceProcess, clips
from tests.benchmarks.runner import Comparison, benchmark
from tests.encoders.audio import reference as ref


@benchmark("vggish_frontend")
def vggish_frontend(size="full"):
    """LogMelSpectrogram (tf.function) vs librosa's magnitude STFT + HTK mel + log."""
    batch, seconds = (32, 10.0) if size == "full" else (2, 1.0)
    layer = LogMelSpectrogram()
    waveform = tf.constant(clips(batch, seconds))
    return Comparison(
        mmrep=tf.function(lambda: layer(waveform)),
        reference=ReferenceProcess("librosa_log_mel", batch=batch, seconds=seconds),
        reference_name="librosa stft (float32 FFT) per clip + HTK mel + log, own process",
        work=f"{batch} clips x {seconds:g} s at 16 kHz -> [F, 64] log-mel; items = seconds",
        items=int(batch * seconds),
    )


def published_size_vggish(widths, seed):
    """A `VGGish` with the random weights the PyTorch reference builds from `seed`."""
    weights = ref.random_weights(ref.tf1_shapes(*widths), seed=seed)
    names = ("conv_filters", "fc_units", "embedding_dim")
    return ref.assign_tf1_weights(VGGish(**dict(zip(names, widths, strict=False))), weights)


@benchmark("vggish_embedding")
def vggish_embedding(size="full"):
    """Full VGGish from waveforms (tf.function) vs the same pipeline in PyTorch, 2 threads."""
    if size == "full":
        batch, seconds, widths = 8, 4.96, ()
    else:
        batch, seconds, widths = 2, 1.0, ((4, 8, 8, 8), (16, 16), 8)
    layer = published_size_vggish(widths, seed=1)
    waveform = tf.constant(clips(batch, seconds, seed=1))
    examples = ref.example_counts([waveform.shape[1]])[0]
    return Comparison(
        mmrep=tf.function(lambda: layer(waveform)["sequence_output"]),
        reference=ReferenceProcess("torch_vggish", batch=batch, seconds=seconds, widths=widths),
        reference_name="PyTorch CPU, 2 threads, same weights and float64 STFT, own process",
        work=f"{batch} clips x {seconds:g} s -> [{batch}, {examples}, 128]; items = examples",
        items=batch * examples,
    )
