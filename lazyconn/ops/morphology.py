"""Binary morphology and connected components of 3-D masks (scipy.ndimage kernels).

Masks are small (one volume), so a graph is one task over the whole volume: dilation or
erosion with ``iterations < 1`` (until nothing changes) and connected components are not
local operations, and a halo would cost more than it saves.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import ndimage

from lazyconn.exceptions import ParameterError, ParameterTypeError

__all__ = ["binary_morphology", "check_structure", "label_components"]

OPERATIONS = {"dilation": ndimage.binary_dilation, "erosion": ndimage.binary_erosion}


def check_structure(structure, ndim: int = 3):
    """None, or ``structure`` as a boolean array of ``ndim`` dimensions (as scipy wants)."""
    if structure is None:
        return None
    arr = np.asarray(structure)
    if arr.dtype.kind not in "biuf":
        raise ParameterTypeError(
            f"structure={structure!r} is not valid; expected an array of 0/1 (or bool) values."
        )
    if arr.ndim != ndim or arr.size == 0:
        raise ParameterError(
            f"structure has shape {arr.shape}; expected a non-empty {ndim}-D array (e.g. "
            "scipy.ndimage.generate_binary_structure(3, 1), the default)."
        )
    return arr.astype(bool)


def check_iterations(iterations) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)):
        raise ParameterTypeError(
            f"iterations={iterations!r} is not valid; expected an int (< 1: repeat until the "
            "mask no longer changes, as scipy)."
        )
    return int(iterations)


def _morphology_block(block, operation, structure, iterations, border_value):
    out = OPERATIONS[operation](
        block != 0, structure=structure, iterations=iterations, border_value=border_value
    )
    return out.astype(np.int8)


def binary_morphology(
    arr: da.Array, operation: str, structure=None, iterations: int = 1, border_value: int = 0
) -> da.Array:
    """Lazy scipy ``binary_dilation``/``binary_erosion`` of a 3-D array (nonzero = True), int8.

    One task over the whole volume (the array is brought to one chunk).
    """
    whole = arr.rechunk(-1) if arr.npartitions > 1 else arr
    return whole.map_blocks(
        _morphology_block,
        operation,
        structure,
        iterations,
        border_value,
        dtype=np.int8,
        meta=np.empty((0,) * arr.ndim, dtype=np.int8),
        token=f"lazyconn-binary-{operation}",
    )


def label_components(mask: np.ndarray, structure=None) -> tuple[np.ndarray, int]:
    """scipy ``ndimage.label`` of a 3-D array (nonzero = True): (int32 labels, count)."""
    labels, n = ndimage.label(np.asarray(mask) != 0, structure=structure)
    return labels.astype(np.int32, copy=False), int(n)
