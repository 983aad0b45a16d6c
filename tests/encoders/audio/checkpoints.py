"""Writers of VGGish weights in the published formats, for the loading tests.

- `write_tf1_checkpoint`: a `tf.compat.v1` graph of variables with the TF1 names, saved
  by the v1 `Saver` (V1 format by default: one file, like the released
  `vggish_model.ckpt`).
- `write_saved_model`: a TF2 SavedModel like TF Hub's `google/vggish/1`: variables named
  `vggish/conv1/weights` etc., and a `__call__` taking a 1-D float32 waveform at 16 kHz
  and returning `[E, 128]`. The call is VGGish written with `tf.signal` (float64 STFT,
  `linear_to_mel_weight_matrix`) and `tf.nn`, so it is one more reference.
- `write_torch_state_dict`: torchvggish's keys and layouts.

Nothing here imports mmrep.
"""

import tensorflow as tf
import torch

from tests.encoders.audio import reference as ref


def write_tf1_checkpoint(weights, prefix, version="V1", extra=None):
    """Saves `{name: array}` (plus `extra`) with `tf.compat.v1.train.Saver`."""
    arrays = {**weights, **(extra or {})}
    graph = tf.Graph()
    with graph.as_default():
        assigns, feeds = [], {}
        for name, value in arrays.items():
            variable = tf.compat.v1.get_variable(
                name, shape=value.shape, dtype=tf.as_dtype(value.dtype), use_resource=False
            )
            placeholder = tf.compat.v1.placeholder(variable.dtype, value.shape)
            assigns.append(variable.assign(placeholder))
            feeds[placeholder] = value
        write_version = getattr(tf.compat.v1.train.SaverDef, version)
        saver = tf.compat.v1.train.Saver(write_version=write_version)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(assigns, feeds)
            return saver.save(session, str(prefix), write_meta_graph=False)


class _HubVGGish(tf.Module):
    def __init__(self, weights):
        super().__init__()
        self._weights = {
            name: tf.Variable(value, name=name, trainable=True) for name, value in weights.items()
        }
        self._mel = tf.signal.linear_to_mel_weight_matrix(
            ref.BANDS, ref.FFT // 2 + 1, ref.SAMPLE_RATE, ref.LOW_HZ, ref.HIGH_HZ, tf.float64
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, waveform):
        stft = tf.signal.stft(
            tf.cast(waveform, tf.float64), ref.WINDOW, ref.HOP, fft_length=ref.FFT
        )  # periodic Hann, no padding
        log_mel = tf.math.log(tf.matmul(tf.abs(stft), self._mel) + ref.LOG_OFFSET)
        examples = tf.signal.frame(log_mel, ref.EXAMPLE_FRAMES, ref.EXAMPLE_FRAMES, axis=0)
        x = tf.cast(examples, tf.float32)[..., None]  # [E, 96, 64, 1]
        for name in ref.CONV_NAMES:
            x = tf.nn.conv2d(x, self._weights[f"vggish/{name}/weights"], 1, "SAME")
            x = tf.nn.relu(x + self._weights[f"vggish/{name}/biases"])
            if name in ref.POOL_AFTER:
                x = tf.nn.max_pool2d(x, 2, 2, "SAME")
        x = tf.reshape(x, [tf.shape(x)[0], -1])
        fc_names = sorted(
            n[: -len("/weights")] for n in self._weights if "/fc" in n and "weights" in n
        )
        for i, name in enumerate(fc_names):
            x = tf.matmul(x, self._weights[f"{name}/weights"]) + self._weights[f"{name}/biases"]
            if i < len(fc_names) - 1:
                x = tf.nn.relu(x)
        return x


def write_saved_model(weights, directory):
    """A TF Hub-style VGGish SavedModel in `directory`."""
    tf.saved_model.save(_HubVGGish(weights), str(directory))
    return directory


def torch_state_dict(weights):
    """torchvggish's `features.*` / `embeddings.*` keys from TF1-named weights."""
    state = {}
    conv_indices = [0, 3, 6, 8, 11, 13]  # nn.Sequential: conv, ReLU, [pool], ...
    for index, name in zip(conv_indices, ref.CONV_NAMES, strict=True):
        kernel = weights[f"vggish/{name}/weights"]
        state[f"features.{index}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        state[f"features.{index}.bias"] = torch.from_numpy(weights[f"vggish/{name}/biases"])
    fc_names = sorted(n[: -len("/weights")] for n in weights if "/fc" in n and "weights" in n)
    for i, name in enumerate(fc_names):
        state[f"embeddings.{2 * i}.weight"] = torch.from_numpy(weights[f"{name}/weights"].T.copy())
        state[f"embeddings.{2 * i}.bias"] = torch.from_numpy(weights[f"{name}/biases"])
    return state


def write_torch_state_dict(weights, path, extra=None):
    torch.save({**torch_state_dict(weights), **(extra or {})}, str(path))
    return path
