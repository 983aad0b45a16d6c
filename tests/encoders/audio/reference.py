"""Independent references for the VGGish tests, written from the published facts.

- `log_mel`: VGGish's frontend in float64 numpy, band by band and frame by frame.
- `frame_examples` / `example_counts`: the grouping of frames into 0.96 s examples.
- `TorchVGGish`: the network in PyTorch (NCHW, as torchvggish builds it), given weights
  by their TF1 checkpoint names.

Nothing here imports mmrep.
"""

import numpy as np
import torch

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512  # next power of two
BANDS = 64
LOW_HZ, HIGH_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96


def hz_to_mel(hertz):
    """HTK mel scale."""
    return 1127.0 * np.log(1.0 + np.asarray(hertz, np.float64) / 700.0)


def mel_matrix(bands=BANDS, fft=FFT, rate=SAMPLE_RATE, low=LOW_HZ, high=HIGH_HZ):
    """`[fft // 2 + 1, bands]`: triangles linear in mel over the bin centres, DC row 0."""
    centres_mel = hz_to_mel(np.linspace(0.0, rate / 2.0, fft // 2 + 1))
    edges = np.linspace(hz_to_mel(low), hz_to_mel(high), bands + 2)
    matrix = np.zeros((fft // 2 + 1, bands))
    for band in range(bands):
        left, centre, right = edges[band], edges[band + 1], edges[band + 2]
        for k, mel in enumerate(centres_mel):
            if k == 0:
                continue  # the DC bin is in no band
            if left < mel <= centre:
                matrix[k, band] = (mel - left) / (centre - left)
            elif centre < mel < right:
                matrix[k, band] = (right - mel) / (right - centre)
    return matrix


def periodic_hann(length):
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def log_mel(waveform, log_offset=LOG_OFFSET, bands=BANDS, stft=None):
    """float64 `[frames, bands]` of one 1-D waveform; `stft` overrides the magnitude."""
    x = np.asarray(waveform, np.float64)
    count = 1 + (len(x) - WINDOW) // HOP
    window = periodic_hann(WINDOW)
    spectrum = np.empty((count, FFT // 2 + 1))
    for i in range(count):
        frame = np.zeros(FFT)
        frame[:WINDOW] = x[i * HOP : i * HOP + WINDOW] * window
        spectrum[i] = np.abs(np.fft.rfft(frame))
    return np.log(spectrum @ mel_matrix(bands) + log_offset)


def frame_examples(frames, hop=EXAMPLE_FRAMES, size=EXAMPLE_FRAMES):
    """`[examples, size, bands]`: whole groups of `size` frames every `hop` frames."""
    starts = range(0, len(frames) - size + 1, hop)
    return np.stack([frames[s : s + size] for s in starts]) if len(starts) else None


def example_counts(lengths, hop=EXAMPLE_FRAMES, pad_short=False):
    """Whole examples in clips of `lengths` samples (1 when padded and too short)."""
    counts = []
    for length in lengths:
        frames = 1 + (length - WINDOW) // HOP if length >= WINDOW else 0
        examples = 1 + (frames - EXAMPLE_FRAMES) // hop if frames >= EXAMPLE_FRAMES else 0
        counts.append(max(examples, 1) if pad_short else examples)
    return np.array(counts)


# === The network ===

CONV_NAMES = ["conv1", "conv2", "conv3/conv3_1", "conv3/conv3_2", "conv4/conv4_1", "conv4/conv4_2"]
POOL_AFTER = {"conv1", "conv2", "conv3/conv3_2", "conv4/conv4_2"}


def tf1_shapes(conv_filters=(64, 128, 256, 512), fc_units=(4096, 4096), embedding=128):
    """`{tf1 variable name: shape}` of VGGish (by default the published sizes)."""
    widths = [conv_filters[0], conv_filters[1], *[conv_filters[2]] * 2, *[conv_filters[3]] * 2]
    shapes, channels = {}, 1
    for name, width in zip(CONV_NAMES, widths, strict=True):
        shapes[f"vggish/{name}/weights"] = (3, 3, channels, width)
        shapes[f"vggish/{name}/biases"] = (width,)
        channels = width
    fc_names = [f"fc1/fc1_{i + 1}" for i in range(len(fc_units))] + ["fc2"]
    inputs = 6 * 4 * channels  # 96 x 64 after four 2x2 pools
    for name, width in zip(fc_names, [*fc_units, embedding], strict=True):
        shapes[f"vggish/{name}/weights"] = (inputs, width)
        shapes[f"vggish/{name}/biases"] = (width,)
        inputs = width
    return shapes


def random_weights(shapes, seed=0):
    """He-scaled float32 weights (so activations stay O(1)) and small random biases."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("biases"):
            weights[name] = (0.1 * rng.standard_normal(shape, np.float32)).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[:-1]))
            scale = np.float32(np.sqrt(2.0 / fan_in))
            weights[name] = rng.standard_normal(shape, np.float32) * scale
    return weights


class TorchVGGish(torch.nn.Module):
    """VGGish in PyTorch from the architecture: NCHW convs, flatten after NCHW -> NHWC."""

    def __init__(self, weights):
        super().__init__()
        self.convs = torch.nn.ModuleList()
        for name in CONV_NAMES:
            kernel = weights[f"vggish/{name}/weights"]  # [kh, kw, in, out]
            conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], 3, padding=1)
            conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            conv.bias.data = torch.from_numpy(weights[f"vggish/{name}/biases"].copy())
            self.convs.append(conv)
        fc_names = sorted(n[: -len("/weights")] for n in weights if "/fc" in n and "weights" in n)
        self.fcs = torch.nn.ModuleList()
        for name in fc_names:  # fc1/fc1_1, fc1/fc1_2, fc2: sorted is the network order
            kernel = weights[f"{name}/weights"]  # [in, out]
            linear = torch.nn.Linear(kernel.shape[0], kernel.shape[1])
            linear.weight.data = torch.from_numpy(kernel.T.copy())
            linear.bias.data = torch.from_numpy(weights[f"{name}/biases"].copy())
            self.fcs.append(linear)

    def forward(self, examples):
        """`[N, 96, 64]` log-mel examples -> `[N, embedding]`."""
        x = examples[:, None]  # one channel; height 96 (time), width 64 (mel)
        for name, conv in zip(CONV_NAMES, self.convs, strict=True):
            x = torch.relu(conv(x))
            if name in POOL_AFTER:
                x = torch.nn.functional.max_pool2d(x, 2, 2)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # NHWC flatten
        for i, linear in enumerate(self.fcs):
            x = linear(x)
            if i < len(self.fcs) - 1:
                x = torch.relu(x)
        return x


def assign_tf1_weights(layer, weights):
    """Copies TF1-named arrays into a `VGGish` by hand (independent of mmrep's loaders)."""
    layer.build()
    for name, sublayer in layer.named_layers.items():
        scope = f"{name.split('_')[0]}/{name}" if "_" in name else name
        sublayer.kernel.assign(weights[f"vggish/{scope}/weights"])
        sublayer.bias.assign(weights[f"vggish/{scope}/biases"])
    return layer


def torch_embeddings(model, examples):
    """float32 `[N, embedding]` of `[N, 96, 64]` examples with a `TorchVGGish`, 2 threads."""
    torch.set_num_threads(2)
    with torch.no_grad():
        return model.eval()(torch.from_numpy(np.asarray(examples, np.float32))).numpy()
