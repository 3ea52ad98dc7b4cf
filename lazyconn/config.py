"""Package-wide defaults (dtype policy, chunk sizes)."""

from __future__ import annotations

import numpy as np

#: Target size of one stored chunk, in bytes. A chunk holds a spatial block with
#: the whole time axis, so temporal steps never rechunk.
DEFAULT_CHUNK_BYTES = 32 * 2**20


def float_dtype_for(dtype: np.dtype) -> np.dtype:
    """nilearn's promotion rule: floats kept; 8-byte ints -> float64; other ints -> float32."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype
    if dtype.kind in "iub" and dtype.itemsize == 8:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def default_chunks(shape: tuple[int, ...], dtype, target_bytes: int = DEFAULT_CHUNK_BYTES):
    """Spatial blocks with the whole time axis (and whole volume for 3-D if small).

    The x, y, z block edges are shrunk evenly (largest first) until one chunk holds
    about ``target_bytes``; the time axis is never split.
    """
    itemsize = np.dtype(dtype).itemsize
    block = list(shape[:3])
    per_voxel = itemsize * (int(shape[3]) if len(shape) == 4 else 1)
    while np.prod(block) * per_voxel > target_bytes and max(block) > 1:
        axis = int(np.argmax(block))
        block[axis] = max(1, (block[axis] + 1) // 2)
    return tuple(block) + tuple(shape[3:])
