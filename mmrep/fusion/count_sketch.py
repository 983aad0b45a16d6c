"""Count sketches and the Tensor Sketch of an outer product, for compact bilinear pooling.

A count sketch (Charikar, Chen & Farach-Colton, "Finding Frequent Items in Data Streams",
ICALP 2002) maps `x ∈ R^D` to `C(x) ∈ R^d` with a hash `h: [0, D) → [0, d)` and a sign
`s: [0, D) → {±1}`: `C(x)[k] = Σ_{i: h(i) = k} s(i) x_i`. Pham & Pagh ("Fast and Scalable
Polynomial Kernels via Explicit Feature Maps", KDD 2013) showed that the circular
convolution of two count sketches, computed as `IFFT(FFT(C1(x)) ∘ FFT(C2(y)))`, is the
count sketch of the outer product `x ⊗ y` with hash `(h1(i) + h2(j)) mod d` and sign
`s1(i) s2(j)`, without ever forming `x ⊗ y`; its inner products are unbiased estimates of
`⟨x, x'⟩⟨y, y'⟩`. Gao et al. ("Compact Bilinear Pooling", CVPR 2016) use it to replace
bilinear pooling.

The hashes come from a seed through SplitMix64 (Steele, Lea & Flood, "Fast Splittable
Pseudorandom Number Generators", OOPSLA 2014), a fixed integer formula, so the same seed
gives the same hashes on every platform and NumPy version: a layer rebuilt from its config
sketches exactly as the original did.
"""

import numpy as np
from keras import ops

from mmrep.utils.arguments import check_int

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def _mix64(z):
    """SplitMix64's finaliser: a bijective avalanche mix of uint64 values (wrapping)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def _splitmix64(key, count):
    """`count` SplitMix64 outputs from the stream whose state starts at `key` (uint64)."""
    steps = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix64(np.uint64(key) + steps * _GOLDEN_GAMMA)


def count_sketch_hashes(seed, stream, input_dim, output_dim):
    """The hash and sign arrays of one count sketch, derived from `(seed, stream)`.

    With `mix` the SplitMix64 finaliser and `next_i(state)` the `i`-th output
    (`i = 1, …, D`) of SplitMix64 started from `state` (all arithmetic mod 2**64):
    `key = mix(mix(seed) + 2 * stream)`, `h(i) = next_i(key) mod d`, and `s(i) = -1`
    where the top bit of `next_i(mix(key + 1))` is set, `+1` otherwise. The modulo bias
    is below `d / 2**64`.

    Args:
        seed: int >= 0. The seed, as stored in a layer's config.
        stream: int >= 0. Which sketch of that seed (one per input of a tensor sketch);
            different streams give independent hashes.
        input_dim: int. `D`, the length of the sketched vectors.
        output_dim: int. `d`, the sketch length.

    Returns:
        `(indices, signs)`: int32 `[D]` with values in `[0, d)` and float32 `[D]` with
        values in `{-1, +1}`.

    Raises:
        ValueError: if an argument is negative or a dimension is not positive.
    """
    seed = check_int("seed", seed, minimum=0)
    stream = check_int("stream", stream, minimum=0)
    input_dim = check_int("input_dim", input_dim, minimum=1)
    output_dim = check_int("output_dim", output_dim, minimum=1)
    if seed >= 2**62:
        raise ValueError(f"Expected `seed` < 2**62. Received: seed={seed}")
    with np.errstate(over="ignore"):
        key = _mix64(_mix64(np.uint64(seed)) + np.uint64(2 * stream))
        # Independent streams for the bucket and the sign.
        bucket_bits = _splitmix64(key, input_dim)
        sign_bits = _splitmix64(_mix64(key + np.uint64(1)), input_dim)
    indices = (bucket_bits % np.uint64(output_dim)).astype("int32")
    signs = (1.0 - 2.0 * (sign_bits >> np.uint64(63)).astype("float32")).astype("float32")
    return indices, signs


def count_sketch(x, indices, signs, output_dim):
    """The count sketch of the last axis of `x`: `C(x)[k] = Σ_{i: h(i) = k} s(i) x_i`.

    Computed as a segment sum (no dense `[D, d]` projection matrix), so memory is
    `O(size(x) + size(output))`.

    Args:
        x: float tensor `[..., D]`.
        indices: int32 `[D]`, the hash `h`, values in `[0, output_dim)`.
        signs: `[D]` of ±1, the sign `s`, in the dtype of `x`.
        output_dim: int. `d`.

    Returns:
        Tensor `[..., output_dim]` in the dtype of `x`.
    """
    shape = ops.shape(x)
    flat = ops.reshape(x, (-1, shape[-1])) * signs
    # segment_sum reduces the leading axis, so the sketched axis goes first.
    summed = ops.segment_sum(ops.transpose(flat), indices, num_segments=output_dim)
    return ops.reshape(ops.transpose(summed), tuple(shape[:-1]) + (output_dim,))


def tensor_sketch(x_sketch, y_sketch, set_axis=None):
    """Circular convolution of two count sketches by FFT: the Tensor Sketch of `x ⊗ y`.

    `IFFT(FFT(a) ∘ FFT(b))` of length `d` (Pham & Pagh, 2013). With `set_axis`, the
    products are summed over that axis in the frequency domain before the one inverse
    FFT, which equals the sum of the per-element Tensor Sketches (the FFT is linear).

    Args:
        x_sketch: float32 tensor `[..., d]`.
        y_sketch: float32 tensor of the same shape.
        set_axis: int or `None`. An axis to sum-pool over.

    Returns:
        float32 tensor: `[..., d]`, without `set_axis` when it is given.
    """
    length = x_sketch.shape[-1]
    x_real, x_imag = ops.rfft(x_sketch)
    y_real, y_imag = ops.rfft(y_sketch)
    real = x_real * y_real - x_imag * y_imag
    imag = x_real * y_imag + x_imag * y_real
    if set_axis is not None:
        real = ops.sum(real, axis=set_axis)
        imag = ops.sum(imag, axis=set_axis)
    return ops.irfft((real, imag), fft_length=length)
