"""The dask array of a 4-D run, whose selections of volumes remember the run.

Also the record of a spatial step applied to every volume alone (:class:`Volumewise`,
e.g. smoothing): such a step commutes with selecting volumes, and a linear one with the
temporal mean, so lazyconn selects or averages first and applies the step to fewer volumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dask.array as da
import numpy as np

__all__ = [
    "RunArray",
    "VolumeSelection",
    "Volumewise",
    "select_volumes",
    "selections_data",
    "volume_selection",
]


@dataclass(frozen=True)
class Volumewise:
    """``data == step(source)``, ``step`` acting on each volume alone, the same for all.

    Then ``data[..., index] == step(source[..., index])`` for any selection of volumes, and
    the temporal mean of ``data`` is ``step(mean of source)`` (up to float rounding) since
    ``step`` is linear. ``step`` takes a 4-D (or 3-D: one volume) dask array.
    """

    source: da.Array
    step: Callable[[da.Array], da.Array]

    def select(self, index) -> Volumewise:
        """The record of ``data[..., index]`` (same step, selected source volumes)."""
        return Volumewise(select_volumes(self.source, index), self.step)

    def mean(self, dtype) -> da.Array:
        """The temporal mean of ``data``: the step applied to the source's mean (float64)."""
        return self.step(self.source.mean(axis=-1, dtype=np.float64).astype(dtype))


@dataclass(frozen=True)
class VolumeSelection:
    """Volumes ``indices`` (ints, in range) of the last axis of ``run`` (a dask array).

    ``volumewise``: the run's :class:`Volumewise` record, if it has one.
    """

    run: da.Array
    indices: np.ndarray
    volumewise: Volumewise | None = None


class RunArray(da.Array):
    """A 4-D run's dask array (``get_data(img, compute=False)``).

    Indexing it is dask's indexing and returns a plain dask array. A selection of volumes
    (``run[..., mask]`` or ``run[:, :, :, indices]``, with a boolean mask, integer indices,
    a slice or a pandas Series) also remembers the run and the volumes
    (:func:`volume_selection`), so that lazyconn's reductions over several selections of one
    run (``stats.ttest_ind(run[..., a], run[..., b])``) read each chunk once, in one task
    for all selections, instead of copying each selection out of each chunk first. Other
    operations return plain dask arrays, as dask does.
    """

    __slots__ = ()

    @classmethod
    def of(cls, x: da.Array, volumewise: Volumewise | None = None) -> RunArray:
        """The same dask array (same graph and name) as a RunArray.

        Parameters
        ----------
        x : dask.array.Array
            A run's voxels, volumes along the last axis.
        volumewise : Volumewise, optional
            How ``x`` was made from another run by a step on each volume alone (e.g.
            smoothing): selections then apply the step to the selected volumes only.

        Returns
        -------
        RunArray
        """
        out = cls(x.dask, x.name, x.chunks, meta=x._meta)
        out._lazyconn_volumewise = volumewise
        return out

    def __getitem__(self, index):
        out = super().__getitem__(index)
        volumes = _volume_indices(index, self.ndim, self.shape[-1])
        if volumes is not None:
            plain = da.Array(self.dask, self.name, self.chunks, meta=self._meta)
            volumewise = getattr(self, "_lazyconn_volumewise", None)
            out._lazyconn_volumes = VolumeSelection(plain, volumes, volumewise)
        return out


def _volume_indices(index, ndim: int, n_volumes: int) -> np.ndarray | None:
    """The volumes an index selects along the last axis, if that is all it does."""
    if not isinstance(index, tuple) or not index:
        return None
    *spatial, last = index
    whole = slice(None)
    if not (spatial == [Ellipsis] or spatial == [whole] * (ndim - 1)):
        return None
    if hasattr(last, "to_numpy"):
        last = last.to_numpy()
    if isinstance(last, slice):
        return np.arange(n_volumes)[last]
    if isinstance(last, list):
        last = np.asarray(last)
    if not isinstance(last, np.ndarray) or last.ndim != 1:
        return None
    if last.dtype == bool:
        return np.flatnonzero(last) if len(last) == n_volumes else None
    if last.dtype.kind not in "iu" or (
        last.size and (last.min() < -n_volumes or last.max() >= n_volumes)
    ):
        return None
    return np.where(last < 0, last + n_volumes, last).astype(np.intp)


def selections_data(selections: list[VolumeSelection]) -> tuple[da.Array, list[np.ndarray]]:
    """One dask array holding the volumes of selections of one run, and each one's indices.

    The run itself; or, for a run made by a volumewise step, the step applied to the
    selected source volumes only (each volume once).
    """
    volumewise = selections[0].volumewise
    if volumewise is None:
        return selections[0].run, [s.indices for s in selections]
    used = np.unique(np.concatenate([s.indices for s in selections]))
    selected = volumewise.select(used)
    return selected.step(selected.source), [np.searchsorted(used, s.indices) for s in selections]


def _take_volumes(block: np.ndarray, indices: np.ndarray) -> np.ndarray:
    # Rows of the (t, z, y, x) view: whole volumes, copied contiguously; the result keeps
    # time slowest in memory (F order), the order of stored blocks that filters expect.
    return block.T[indices].T


def select_volumes(x: da.Array, index) -> da.Array:
    """``x[..., index]``, as whole-volume copies that keep a block's F memory order.

    dask's fancy indexing returns C-ordered blocks (time fastest), on which a spatial filter
    is several times slower; this copies whole volumes (one blockwise task per chunk, fused
    with what follows) when the time axis is one chunk, and is dask's indexing otherwise.
    """
    indices = _volume_indices((Ellipsis, index), x.ndim, x.shape[-1])
    if indices is None or x.numblocks[-1] != 1:
        return x[..., index]
    return x.map_blocks(
        _take_volumes,
        indices,
        chunks=(*x.chunks[:-1], (len(indices),)),
        dtype=x.dtype,
        meta=x._meta,
        token="lazyconn-select-volumes",
    )


def volume_selection(x) -> VolumeSelection | None:
    """The run and volumes ``x`` was selected from (a :class:`RunArray` index), or None."""
    return getattr(x, "_lazyconn_volumes", None)
