"""Masking graphs: spatially chunked 4-D runs <-> (T, V) voxel matrices, without a global gather.

``gather`` turns a (x, y, z, T) dask array chunked in spatial blocks into the (T, V) matrix of
the in-mask voxels; ``scatter`` does the reverse. Both are one hand-built graph layer (plus
one selection layer for ``gather``): every task touches only the blocks it needs.

Voxel orders (the V axis):

* ``"C"``: C order of the 3-D index (nilearn's ``data[mask]``). Output chunks never straddle
  an x-block boundary, so an output chunk depends only on the blocks of one x-slab: the
  in-mask rows of each block are selected first (small), then concatenated and permuted
  into C order with a precomputed index.
* ``"block"``: block after block (blocks in C order), voxels in C order inside a block. One
  output chunk per non-empty block and no permutation at all: the fastest layout for steps
  that are independent per voxel (``clean_img``) when the order does not matter.

A ``positions`` array (3-D, int64, -1 outside the mask) maps each voxel to its index on V;
``scatter`` accepts any such map, so it inverts both orders.
"""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from lazyconn.config import DEFAULT_CHUNK_BYTES

__all__ = ["block_positions", "c_positions", "gather", "scatter"]


def _block_slices(chunks3):
    """(index, slices) for every spatial block, blocks in C order."""
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in chunks3]
    for idx in np.ndindex(*(len(c) for c in chunks3)):
        yield (
            idx,
            tuple(slice(int(starts[a][i]), int(starts[a][i + 1])) for a, i in enumerate(idx)),
        )


def c_positions(mask: np.ndarray) -> np.ndarray:
    """Index of each in-mask voxel on V in C order (-1 outside the mask)."""
    mask = np.asarray(mask, dtype=bool)
    pos = np.full(mask.shape, -1, dtype=np.int64)
    pos[mask] = np.arange(int(mask.sum()), dtype=np.int64)
    return pos


def block_positions(mask: np.ndarray, chunks3) -> np.ndarray:
    """Index of each in-mask voxel on V in block order (-1 outside the mask)."""
    mask = np.asarray(mask, dtype=bool)
    pos = np.full(mask.shape, -1, dtype=np.int64)
    offset = 0
    for _, sl in _block_slices(chunks3):
        m = mask[sl]
        n = int(m.sum())
        local = pos[sl]
        local[m] = np.arange(offset, offset + n, dtype=np.int64)
        offset += n
    return pos


def _select(block, mask):
    # (bx, by, bz, T)[mask] -> (n, T), voxels in local C order (= global C order restricted).
    return block[mask]


def _select_t(block, mask):
    return block[mask].T


def _assemble(parts, ranges, perm):
    rows = [p[r0:r1] for p, (r0, r1) in zip(parts, ranges, strict=True)]
    out = rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0)
    if perm is not None:
        out = out[perm]
    return out.T


def gather(arr: da.Array, mask: np.ndarray, order: str = "C", target_bytes: int | None = None):
    """In-mask voxels of a (x, y, z, T) dask array as a lazy (T, V) array.

    Parameters
    ----------
    arr : dask.array.Array, 4-D
        Spatially chunked run; the time axis is made one chunk if it is not.
    mask : numpy bool array, 3-D, shape ``arr.shape[:3]``
    order : {"C", "block"}
        Voxel order on V (see the module docstring).
    target_bytes : int, optional
        Bound on the size of an output chunk (``order="C"``); default
        :data:`lazyconn.config.DEFAULT_CHUNK_BYTES`.

    Returns
    -------
    dask.array.Array, shape (T, V), chunked along V, the whole time axis in every chunk.
    Each chunk is the transpose of a C-contiguous (v, T) array, like nilearn's
    ``series[mask].T``.
    """
    mask = np.asarray(mask, dtype=bool)
    if len(arr.chunks[3]) > 1:
        arr = arr.rechunk({3: -1})
    n_t = arr.shape[3]
    chunks3 = arr.chunks[:3]
    token = tokenize(arr.name, mask, chunks3, order, target_bytes)
    meta = np.empty((0, 0), dtype=arr.dtype)

    if order == "block":
        name = f"lc-gather-block-{token}"
        dsk, sizes = {}, []
        for idx, sl in _block_slices(chunks3):
            m = mask[sl]
            n = int(m.sum())
            if n == 0:
                continue
            dsk[(name, 0, len(sizes))] = (_select_t, (arr.name, *idx, 0), m)
            sizes.append(n)
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[arr])
        return da.Array(graph, name, chunks=((n_t,), tuple(sizes)), dtype=arr.dtype, meta=meta)
    if order != "C":
        raise ValueError(f"order={order!r}; expected 'C' or 'block'.")

    target_bytes = DEFAULT_CHUNK_BYTES if target_bytes is None else target_bytes
    max_vox = max(1, int(target_bytes) // max(1, n_t * arr.dtype.itemsize))
    pos = c_positions(mask)
    sel_name = f"lc-gather-select-{token}"
    name = f"lc-gather-{token}"
    sel_dsk, out_dsk, sizes = {}, {}, []
    # Blocks grouped by x-block: C order never leaves an x-slab before it is complete.
    by_row: dict[int, list] = {}
    for idx, sl in _block_slices(chunks3):
        m = mask[sl]
        if not m.any():
            continue
        key = (sel_name, *idx)
        sel_dsk[key] = (_select, (arr.name, *idx, 0), m)
        by_row.setdefault(idx[0], []).append((key, pos[sl][m]))
    for i in sorted(by_row):
        row = by_row[i]
        first = min(int(p[0]) for _, p in row)
        last = max(int(p[-1]) for _, p in row) + 1
        n_pieces = -(-(last - first) // max_vox)
        bounds = np.linspace(first, last, n_pieces + 1).round().astype(np.int64)
        for s, e in itertools.pairwise(bounds):
            keys, ranges, got = [], [], []
            for key, p in row:
                r0, r1 = np.searchsorted(p, [s, e])
                if r1 > r0:
                    keys.append(key)
                    ranges.append((int(r0), int(r1)))
                    got.append(p[r0:r1])
            got = np.concatenate(got)
            perm = np.argsort(got, kind="stable")
            perm = None if np.array_equal(perm, np.arange(perm.size)) else perm
            out_dsk[(name, 0, len(sizes))] = (_assemble, keys, ranges, perm)
            sizes.append(int(e - s))
    layers = dict(arr.dask.layers)
    deps = dict(arr.dask.dependencies)
    layers[sel_name] = MaterializedLayer(sel_dsk)
    layers[name] = MaterializedLayer(out_dsk)
    deps[sel_name] = set(arr.__dask_layers__())
    deps[name] = {sel_name}
    graph = HighLevelGraph(layers, deps)
    return da.Array(graph, name, chunks=((n_t,), tuple(sizes)), dtype=arr.dtype, meta=meta)


def _scatter(parts, starts, cols, mask, dtype):
    x = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    out = np.zeros(mask.shape + (x.shape[0],), dtype=dtype)
    out[mask] = x[:, cols - starts].T
    return out


def _zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def scatter(x: da.Array, positions: np.ndarray, chunks3) -> da.Array:
    """Inverse of :func:`gather`: a (T, V) dask array -> lazy (x, y, z, T), zeros outside.

    Parameters
    ----------
    x : dask.array.Array, shape (T, V)
    positions : int array, 3-D
        Index of each voxel on V, -1 outside the mask (:func:`c_positions`,
        :func:`block_positions`).
    chunks3 : tuple of 3 tuples
        Spatial chunks of the output; the time axis is one chunk.
    """
    positions = np.asarray(positions)
    if len(x.chunks[0]) > 1:
        x = x.rechunk({0: -1})
    n_t = x.shape[0]
    vstarts = np.concatenate([[0], np.cumsum(x.chunks[1])]).astype(np.int64)
    name = f"lc-scatter-{tokenize(x.name, positions, chunks3)}"
    dsk = {}
    for idx, sl in _block_slices(chunks3):
        p = positions[sl]
        m = p >= 0
        shape = tuple(s.stop - s.start for s in sl) + (n_t,)
        if not m.any():
            dsk[(name, *idx, 0)] = (_zeros, shape, x.dtype)
            continue
        cols = p[m]
        c0 = int(np.searchsorted(vstarts, cols.min(), side="right")) - 1
        c1 = int(np.searchsorted(vstarts, cols.max(), side="right")) - 1
        parts = [(x.name, 0, c) for c in range(c0, c1 + 1)]
        dsk[(name, *idx, 0)] = (_scatter, parts, int(vstarts[c0]), cols, m, x.dtype)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    return da.Array(
        graph,
        name,
        chunks=tuple(tuple(c) for c in chunks3) + ((n_t,),),
        dtype=x.dtype,
        meta=np.empty((0, 0, 0, 0), dtype=x.dtype),
    )
