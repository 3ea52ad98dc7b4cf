"""Dask arrays over NIfTI files and lazyconn stores (deterministic names, picklable graphs)."""

from __future__ import annotations

import weakref

import dask.array as da
import numpy as np
from dask.base import tokenize

from lazyconn._utils import rechunk
from lazyconn.config import DEFAULT_CHUNK_BYTES, default_chunks
from lazyconn.io._fs import redact
from lazyconn.io.nifti import NiftiFile, scale
from lazyconn.io.store import (
    StoreInfo,
    checksum_error,
    chunk_frames,
    chunk_slabs,
    decodes_in_place,
    read_chunk,
)


class _RawView:
    """The unscaled voxels of a NiftiFile (what the file stores), for lossless writes."""

    def __init__(self, nifti: NiftiFile):
        self.nifti = nifti
        self.shape = nifti.shape
        self.dtype = nifti.raw_dtype
        self.ndim = nifti.ndim

    def __getitem__(self, key):
        return self.nifti.read_raw(key)


class _CheckedZarr:
    """A store's zarr array whose checksum failures name the store and the chunk.

    Local stores verify as they read (:class:`~lazyconn.io.store.CompleteStore`); this
    catches zarr's own check, on remote stores. A whole chunk of a local store is decoded
    straight into its output (:func:`~lazyconn.io.store.read_chunk`).
    """

    def __init__(self, array, shown: str):
        self.array = array
        self.shown = shown
        self.shape = array.shape
        self.dtype = np.dtype(array.dtype)
        self.ndim = array.ndim
        self.chunks = array.chunks
        self.in_place = decodes_in_place(array)

    def _whole_chunk(self, key):
        """The chunk indices if ``key`` selects exactly one chunk (to the array's edge)."""
        if not isinstance(key, tuple) or len(key) != self.ndim:
            return None
        coords = []
        for k, c, n in zip(key, self.chunks, self.shape, strict=True):
            if not isinstance(k, slice) or k.step not in (None, 1):
                return None
            start = k.start or 0
            if start % c or (n if k.stop is None else k.stop) != min(start + c, n):
                return None
            coords.append(start // c)
        return tuple(coords)

    def _chunk_shape(self, coords):
        """Chunk ``coords``'s shape inside the array (smaller at its edges)."""
        return tuple(
            min(c, n - i * c) for i, c, n in zip(coords, self.chunks, self.shape, strict=True)
        )

    def frames(self, coords):
        """Chunk ``coords`` (stored order, time first) as successive pieces of whole
        frames, ``(n_frames, voxels)`` (:func:`~lazyconn.io.store.chunk_frames`); a chunk
        it cannot decode in pieces comes whole, read as :meth:`__getitem__` reads it."""
        shape = self._chunk_shape(coords)
        pieces = chunk_frames(self.array, coords, shape) if self.in_place else None
        if pieces is None:
            key = tuple(
                slice(i * c, i * c + n) for i, c, n in zip(coords, self.chunks, shape, strict=True)
            )
            chunk = np.asarray(self[key])
            pieces = iter([chunk.reshape(chunk.shape[0], -1)])
        return pieces

    def slabs(self, coords, select):
        """The part ``select`` ((x, y, z) slices) of chunk ``coords`` (stored order) as a
        :class:`~lazyconn.io.store.ChunkSlabs`, or None (:func:`~lazyconn.io.store.
        chunk_slabs`)."""
        if not self.in_place:
            return None
        return chunk_slabs(self.array, coords, self._chunk_shape(coords), select)

    def __getitem__(self, key):
        coords = self._whole_chunk(key) if self.in_place else None
        if coords is not None:
            shape = tuple(
                min(c, n - i * c) for i, c, n in zip(coords, self.chunks, self.shape, strict=True)
            )
            out = read_chunk(self.array, coords, shape)
            if out is not None:
                return out
        try:
            return self.array[key]
        except ValueError as exc:
            if "checksum" not in str(exc):
                raise
            where = tuple((k.start or 0) // c for k, c in zip(key, self.chunks, strict=False))
            raise checksum_error(self.shown, where) from None


class VoxelFrames:
    """The chunks of a store's voxel array (x, y, z, t) as pieces of whole time frames:
    ``frames(block)`` for the dask array's block index yields ``(n_frames, voxels)``
    arrays, voxels in the block's F order (x fastest), frames in time order, each valid
    until the next is asked for. What :func:`voxel_frames` gives for such an array."""

    def __init__(self, source: _CheckedZarr):
        self.source = source

    def __call__(self, block):
        return self.source.frames(tuple(int(b) for b in block[::-1]))

    def slabs(self, block, select):
        """Block ``block`` (4-D index), its part ``select`` ((x, y, z) slices), decoded a
        slab of volumes at a time (:class:`~lazyconn.io.store.ChunkSlabs`), or None."""
        return self.source.slabs(tuple(int(b) for b in block[::-1]), select)


#: dask array name -> the store array it reads, for :func:`voxel_frames` (entries go with
#: the arrays' graphs)
_FRAME_SOURCES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def voxel_frames(data) -> VoxelFrames | None:
    """A :class:`VoxelFrames` reader of ``data`` if it is exactly a local store's voxel
    array as :func:`store_arrays` made it (unscaled, not rechunked, chunks whole in time
    frames decodable in pieces), else None: ``data``'s chunks are then read whole."""
    source = _FRAME_SOURCES.get(getattr(data, "name", None))
    if source is None or not source.in_place:
        return None
    return VoxelFrames(source)


def gzip_slab_chunks(shape, dtype, target_bytes: int | None = None):
    """Whole volumes, slabs along the last (slowest on disk) axis of about ``target_bytes``."""
    if target_bytes is None:
        target_bytes = DEFAULT_CHUNK_BYTES
    frame = int(np.prod(shape[:-1])) * np.dtype(dtype).itemsize
    slab = max(1, min(int(shape[-1]), target_bytes // max(frame, 1)))
    return tuple(shape[:-1]) + (slab,)


def nifti_arrays(nifti: NiftiFile, chunks=None) -> tuple[da.Array, da.Array]:
    """(scaled, raw) dask arrays over a NIfTI file.

    ``.nii``: chunks default to spatial blocks with the whole time axis. ``.nii.gz``:
    time slabs (each read decompresses its byte range once); ``chunks`` then rechunks.
    """
    if nifti.compressed:
        read_chunks = gzip_slab_chunks(nifti.shape, nifti.raw_dtype)
        nifti.slab_volumes = read_chunks[-1]  # snapshots where the slabs begin
    else:
        read_chunks = chunks if chunks is not None else default_chunks(nifti.shape, nifti.dtype)
    token = tokenize(nifti.token, read_chunks)
    meta = np.empty((0,) * nifti.ndim, dtype=nifti.raw_dtype)
    raw = da.from_array(
        _RawView(nifti),
        chunks=read_chunks,
        name=f"nifti-raw-{token}",
        lock=False,
        asarray=False,
        fancy=False,
        meta=meta,
    )
    scaled = _scaled(raw, nifti.slope, nifti.inter, nifti.dtype)
    if nifti.compressed and chunks is not None:
        raw, scaled = rechunk(raw, chunks), rechunk(scaled, chunks)
    return scaled, raw


def _scaled(raw: da.Array, slope, inter, dtype) -> da.Array:
    if (slope, inter) == (1.0, 0.0) or (slope, inter) == (1, 0):
        return raw
    return raw.map_blocks(
        scale,
        slope,
        inter,
        dtype=dtype,
        name=f"nifti-scale-{tokenize(raw.name, slope, inter)}",
        meta=np.empty((0,) * raw.ndim, dtype=dtype),
    )


def _zarr_array(array, info: StoreInfo, kind: str) -> da.Array:
    """A store's zarr array as a dask array in x, y, z[, t] order (one task per chunk)."""
    ident = info.meta.get("uuid") if info.meta else None
    token = tokenize(ident or info.url, info.header_bytes, array.shape, array.chunks)
    checked = _CheckedZarr(array, redact(info.url))
    stored = da.from_array(
        checked,
        chunks=array.chunks,
        name=f"zarr-{token}" if kind == "voxels" else f"zarr-{kind}-{token}",
        lock=False,
        asarray=False,
        fancy=False,
        meta=np.empty((0,) * array.ndim, dtype=array.dtype),
    )
    out = stored.transpose(tuple(range(stored.ndim))[::-1])
    if kind == "voxels":
        _FRAME_SOURCES[out.name] = checked
    return out


def store_arrays(info: StoreInfo, chunks=None) -> tuple[da.Array, da.Array, da.Array | None]:
    """(scaled, raw, mean) dask arrays (x, y, z[, t]) over a store's voxel array.

    ``mean`` is the store's temporal mean (x, y, z), or None: when the store has none, or
    when ``chunks`` rechunks the voxels (the stored mean equals dask's mean of the stored
    chunks' layout, bit for bit; other chunks may sum in another order).
    """
    raw = _zarr_array(info.array, info, "voxels")
    stored_chunks = raw.chunks
    if chunks is not None:
        raw = rechunk(raw, chunks)
    mean = None
    if info.mean is not None and raw.chunks == stored_chunks:
        mean = _zarr_array(info.mean, info, "mean")
    return _scaled(raw, info.slope, info.inter, info.dtype), raw, mean
