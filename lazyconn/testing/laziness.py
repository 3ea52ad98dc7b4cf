"""Helpers that prove a graph is lazy: a scheduler that refuses to run, an array that refuses reads.

Modelled on xarray's ``raise_if_dask_computes`` and ``InaccessibleArray``.
"""

from __future__ import annotations

import contextlib

import dask
import dask.array as da
import numpy as np


class ComputeCounter:
    """A dask scheduler that counts calls and refuses more than ``max_computes``."""

    def __init__(self, max_computes: int = 0):
        self.max_computes = max_computes
        self.total_computes = 0

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"Too many dask computations were scheduled: {self.total_computes} "
                f"> max_computes={self.max_computes}"
            )
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0):
    """Fail if more than ``max_computes`` dask computations run inside the block."""
    counter = ComputeCounter(max_computes)
    with dask.config.set(scheduler=counter):
        yield counter


class InaccessibleArray(np.lib.mixins.NDArrayOperatorsMixin):
    """An array-like with shape and dtype whose values cannot be read."""

    def __init__(self, shape, dtype=np.float32):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        raise RuntimeError("InaccessibleArray: voxels were read while building a graph")

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("InaccessibleArray: voxels were read while building a graph")


def inaccessible_dask_array(shape, chunks, dtype=np.float32) -> da.Array:
    """A dask array whose every chunk raises when computed."""
    return da.from_array(
        InaccessibleArray(shape, dtype),
        chunks=chunks,
        asarray=False,
        meta=np.empty((0,) * len(shape), dtype),
    )
