"""Short clips of a digit moving or rotating on a dark canvas, generated from its image.

Each clip is drawn deterministically from the example's seed: a motion (a straight path
that bounces off the canvas edges, a rotation swinging back and forth within +-60 degrees,
or both), a speed, a start position and a size. Frames are rendered by inverse affine mapping with bilinear
interpolation (`scipy.ndimage.affine_transform`), so the digit's strokes stay smooth at
every angle. In the spirit of Moving MNIST (Srivastava et al. 2015), on scikit-learn's digits.

Reference:
    Srivastava, Mansimov & Salakhutdinov, "Unsupervised Learning of Video Representations
    using LSTMs", ICML 2015 (the Moving MNIST construction).
"""

import numpy as np
from scipy import ndimage

MOTIONS = ("translate", "rotate", "translate+rotate")


def _bounce(position, velocity, low, high):
    """One step along a path reflected at [low, high]."""
    position = position + velocity
    for axis in range(2):
        if position[axis] < low:
            position[axis], velocity[axis] = 2 * low - position[axis], -velocity[axis]
        elif position[axis] > high:
            position[axis], velocity[axis] = 2 * high - position[axis], -velocity[axis]
    return position, velocity


def moving_digit(image, num_frames, size, rng):
    """Renders a clip of `image` (2-D float in [0, 1]) moving on a `size`×`size` canvas.

    Returns:
        `(frames, motion)`: float32 frames `[num_frames, size, size]` in [0, 1] and the name
        of the motion drawn.
    """
    motion = MOTIONS[rng.integers(len(MOTIONS))]
    # The digit spans 40-55 % of the canvas, so it can move without leaving it.
    digit_size = size * rng.uniform(0.40, 0.55)
    scale = image.shape[0] / digit_size
    half = digit_size / 2 * np.sqrt(2)  # room for the rotated corners
    low, high = half, size - 1 - half
    position = rng.uniform(low, high, 2) if motion != "rotate" else np.full(2, (size - 1) / 2)
    speed = rng.uniform(0.8, 2.0) * size / 32
    heading = rng.uniform(0, 2 * np.pi)
    velocity = (
        speed * np.array([np.sin(heading), np.cos(heading)]) if motion != "rotate" else np.zeros(2)
    )
    # Rotation swings within +-60 degrees: beyond that a 6 turns into a 9.
    angle = rng.uniform(-20, 20)
    swing = rng.uniform(20, 40) if motion != "translate" else 0.0
    period = rng.uniform(8, 16)
    phase = rng.uniform(0, 2 * np.pi)
    source_centre = (np.array(image.shape, "float64") - 1) / 2

    frames = np.empty((num_frames, size, size), "float32")
    for t in range(num_frames):
        theta = np.deg2rad(angle + swing * np.sin(2 * np.pi * t / period + phase))
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        # Canvas pixel p maps to source pixel  scale * R(theta)^T (p - position) + centre.
        matrix = scale * rotation.T
        offset = source_centre - matrix @ position
        frames[t] = ndimage.affine_transform(
            image, matrix, offset=offset, output_shape=(size, size), order=1, cval=0.0
        )
        position, velocity = _bounce(position, velocity, low, high)
    return np.clip(frames, 0.0, 1.0), motion


def moving_digit_clips(images, num_frames, size, seed):
    """Clips for a stack of images `[N, h, w]` in [0, 1]; uint8 RGB `[N, T, S, S, 3]`.

    Also returns the motion name of each clip.
    """
    rng = np.random.default_rng(seed)
    clips = np.empty((len(images), num_frames, size, size, 3), "uint8")
    motions = []
    for i, image in enumerate(images):
        frames, motion = moving_digit(image, num_frames, size, rng)
        clips[i] = np.round(frames * 255).astype("uint8")[..., None]
        motions.append(motion)
    return clips, np.array(motions)
