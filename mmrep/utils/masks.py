"""Masks as bool tensors: presence masks, frame masks and padding masks alike.

A mask may arrive as bool or as numbers (1 present or valid, 0 not); every layer reads it
through `as_bool_mask`, so "non-zero means present" holds everywhere.
"""

import keras
from keras import ops


def as_bool_mask(mask):
    """A mask as bool: bools as they are, numbers `True` where non-zero."""
    if keras.backend.standardize_dtype(mask.dtype) == "bool":
        return mask
    return ops.not_equal(mask, ops.zeros_like(mask))
