"""The dask array of a 4-D run, whose selections of volumes remember the run."""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np

__all__ = ["RunArray", "VolumeSelection", "volume_selection"]


@dataclass(frozen=True)
class VolumeSelection:
    """Volumes ``indices`` (ints, in range) of the last axis of ``run`` (a dask array)."""

    run: da.Array
    indices: np.ndarray


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
    def of(cls, x: da.Array) -> RunArray:
        """The same dask array (same graph and name) as a RunArray.

        Parameters
        ----------
        x : dask.array.Array
            A run's voxels, volumes along the last axis.

        Returns
        -------
        RunArray
        """
        return cls(x.dask, x.name, x.chunks, meta=x._meta)

    def __getitem__(self, index):
        out = super().__getitem__(index)
        volumes = _volume_indices(index, self.ndim, self.shape[-1])
        if volumes is not None:
            plain = da.Array(self.dask, self.name, self.chunks, meta=self._meta)
            out._lazyconn_volumes = VolumeSelection(plain, volumes)
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


def volume_selection(x) -> VolumeSelection | None:
    """The run and volumes ``x`` was selected from (a :class:`RunArray` index), or None."""
    return getattr(x, "_lazyconn_volumes", None)
