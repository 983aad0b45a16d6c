"""Reading `.safetensors` files (single or sharded) into numpy, bfloat16 included.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor
name to its dtype, shape and byte range, then the raw bytes. Reading it here, through a
memory map, gives numpy arrays for every dtype Hugging Face checkpoints use (numpy has no
bfloat16; `ml_dtypes`, which TensorFlow and Keras install, does) and lets a truncated or
corrupt file fail with its name and the problem rather than deep inside a reader.
"""

import json
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class CheckpointError(ValueError):
    """A checkpoint file or folder cannot be read as asked; the message names it."""


def read_safetensors(path):
    """Returns `{name: numpy array}` for every tensor in one `.safetensors` file.

    Arrays are read-only views of a memory map (no copy until used).

    Raises:
        CheckpointError: the header is malformed, names an unknown dtype, or a tensor's
            byte range does not fit its shape or lies beyond the end of the file.
    """
    path = Path(os.fspath(path))
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, no header)")
        (header_size,) = struct.unpack("<Q", head)
        if header_size > size - 8:
            raise CheckpointError(
                f"{path}: header declares {header_size} bytes but the file holds {size}; "
                "the file is truncated or not a safetensors file"
            )
        try:
            header = json.loads(f.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path}: malformed safetensors header ({error})") from None
    header.pop("__metadata__", None)
    data_start = 8 + header_size
    buffer = np.memmap(path, dtype=np.uint8, mode="r") if size > data_start else None
    tensors = {}
    for name, entry in header.items():
        dtype = _DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {entry.get('dtype')!r}; "
                f"expected one of {sorted(_DTYPES)}"
            )
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if end - begin != expected or data_start + end > size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({entry['dtype']} {list(shape)}) needs {expected} "
                f"bytes at [{begin}, {end}) of a data section of {size - data_start} bytes; "
                "the file is truncated or corrupt"
            )
        raw = buffer[data_start + begin : data_start + end] if expected else np.empty(0, np.uint8)
        tensors[name] = raw.view(dtype).reshape(shape)
    return tensors


def read_sharded_safetensors(index_path):
    """Reads every shard named by a `*.safetensors.index.json` file into one dict.

    Raises:
        CheckpointError: a shard is missing, or a tensor the index maps to a shard is not
            in it.
    """
    index_path = Path(os.fspath(index_path))
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{index_path}: expected a JSON object with a 'weight_map' ({error!r})"
        ) from None
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index_path}: the shard {shard} it names is missing")
        tensors.update(read_safetensors(shard_path))
    absent = sorted(set(weight_map) - set(tensors))
    if absent:
        raise CheckpointError(f"{index_path}: tensors missing from their shards: {absent}")
    return tensors
