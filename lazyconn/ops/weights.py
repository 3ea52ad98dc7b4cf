"""Region signals as one pass over a run's spatial chunks.

A region masker's extraction is linear in the voxels for sphere/label means and for the
least-squares fit on maps: signals (T, K) = X (T, V) @ W (V, K). Smoothing is linear too,
so ``W.T @ smooth(X) = (smooth*(W)).T @ X`` where ``smooth*`` is the ADJOINT of nilearn's
smoothing: each axis's pass is a matrix (``spatial.gaussian_operator``) and its adjoint
is that matrix's transpose (scipy's ``mode="reflect"`` is not self-adjoint at the image
edges; the transpose carries the reflections). Each spatial chunk of the run is read once,
multiplied by the rows of W that fall into it, and the (T, K) partial products are summed
in a tree.
"""

from __future__ import annotations

import operator

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from scipy import sparse

from lazyconn.ops import spatial


# --------------------------------------------------------------------------- smoothing
def _gaussian_adjoint_axis(vol, start, n, axis, sigma):
    """Adjoint of one reflect-mode Gaussian pass along ``axis``, on a box of that axis.

    The pass over the whole axis (length ``n``) is the matrix ``A`` of
    :func:`lazyconn.ops.spatial.gaussian_operator`; its adjoint is ``A.T``, reflections at
    the image edges included. ``vol`` covers global positions [start, start + length) and
    its support must be at least the kernel's half-width away from the box's ends that are
    not image edges (callers extend the box): then ``A.T``'s rows outside the box meet only
    zeros, and the box's block of ``A.T`` gives the adjoint exactly.
    """
    length = vol.shape[axis]
    op = spatial.gaussian_operator(n, float(sigma), 4.0, 0, 0, np.dtype(np.float64))
    block = op[start : start + length, start : start + length].T
    return np.moveaxis(np.tensordot(block, vol, axes=(1, axis)), 0, axis)


def smoothing_halo(affine, fwhm):
    """Half-width (voxels) of the smoothing kernel along each spatial axis."""
    if fwhm is None:
        return np.zeros(3, dtype=int)
    if isinstance(fwhm, str):
        return np.ones(3, dtype=int)
    return np.array([spatial.gaussian_halfwidth(s) for s in spatial.fwhm_to_sigma(fwhm, affine)])


def smooth_adjoint(vol, start, shape, affine, fwhm):
    """Apply the adjoint of nilearn's smoothing to a weight volume (float64).

    ``vol`` is a box of the image starting at voxel ``start``; it must extend
    ``smoothing_halo`` voxels past its support (or to the image edge).
    """
    vol = np.asarray(vol, dtype=np.float64)
    if fwhm is None:
        return vol
    if isinstance(fwhm, str):
        # nilearn's fwhm="fast" filter is symmetric with zero borders: self-adjoint
        return spatial.fast_smooth_block(vol)
    for axis, sigma in enumerate(spatial.fwhm_to_sigma(fwhm, affine)):
        if sigma > 0:
            vol = _gaussian_adjoint_axis(vol, start[axis], shape[axis], axis, sigma)
    return vol


def region_weights(regions, shape, affine=None, fwhm=None, values=None):
    """Sparse (V, K) weight matrix of regions given as flat C-order voxel indices.

    Parameters
    ----------
    regions : list of int arrays, the voxels of each region
    shape : 3-tuple, the image grid
    affine, fwhm : smoothing to fold in (adjoint), or fwhm=None
    values : list of float arrays (same lengths as ``regions``), default all ones
    """
    shape = tuple(int(s) for s in shape)
    halo = smoothing_halo(affine, fwhm)
    rows, cols, vals = [], [], []
    for k, idx in enumerate(regions):
        idx = np.asarray(idx, dtype=np.int64)
        v = np.ones(idx.size) if values is None else np.asarray(values[k], dtype=np.float64)
        if fwhm is not None and idx.size:
            ijk = np.array(np.unravel_index(idx, shape)).T
            lo = np.maximum(ijk.min(axis=0) - halo, 0)
            hi = np.minimum(ijk.max(axis=0) + 1 + halo, shape)
            box = np.zeros(tuple(hi - lo))
            np.add.at(box, tuple((ijk - lo).T), v)
            box = smooth_adjoint(box, lo, shape, affine, fwhm)
            loc = np.flatnonzero(box)
            bijk = np.array(np.unravel_index(loc, box.shape)).T + lo
            idx = np.ravel_multi_index(bijk.T, shape)
            v = box.ravel()[loc]
        rows.append(idx)
        cols.append(np.full(idx.size, k, dtype=np.int64))
        vals.append(v)
    n = int(np.prod(shape))
    w = sparse.csr_matrix(
        (
            np.concatenate(vals) if vals else np.empty(0),
            (
                np.concatenate(rows) if rows else np.empty(0, int),
                np.concatenate(cols) if cols else np.empty(0, int),
            ),
        ),
        shape=(n, len(regions)),
    )
    w.sum_duplicates()
    return w


# --------------------------------------------------------------------------- graphs
def _split_rows(rows, shape, chunks):
    """Group flat voxel indices by spatial block; return {block: (positions, local flat)}."""
    bounds = [np.concatenate([[0], np.cumsum(c)]) for c in chunks[:3]]
    ijk = np.array(np.unravel_index(rows, shape))
    bidx = [np.searchsorted(b, c, side="right") - 1 for b, c in zip(bounds, ijk, strict=True)]
    key = np.ravel_multi_index(bidx, tuple(len(c) for c in chunks[:3]))
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    groups = {}
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    ends = np.r_[starts[1:], key_sorted.size]
    for s, e in zip(starts, ends, strict=True):
        pos = order[s:e]
        b = tuple(int(x[pos[0]]) for x in bidx)
        loc = [ijk[a, pos] - bounds[a][b[a]] for a in range(3)]
        bshape = tuple(int(chunks[a][b[a]]) for a in range(3))
        groups[b] = (pos, np.ravel_multi_index(loc, bshape))
    return groups


def _finite(x):
    """NaN/inf -> 0 (nilearn's ensure_finite), copying only when needed."""
    # A finite sum means every value is finite (NaN and inf propagate), and it needs no
    # boolean temporary; only a non-finite sum (or an overflow) takes the exact check.
    if x.dtype.kind == "f" and not np.isfinite(x.sum()) and not np.isfinite(x).all():
        x = np.where(np.isfinite(x), x, 0).astype(x.dtype, copy=False)
    return x


#: voxels converted to float64 at a time inside a chunk (2048 x 168 volumes = 2.75 MB, in
#: cache: one seed subject's extraction took 0.15 s of CPU and peaked at +26 MiB traced,
#: against 0.22 s and +34 MiB with slabs of 8192 voxels)
_SLAB_VOXELS = 2048


def _voxel_rows(block):
    """The block's (v, T) voxel matrix without copying, and its voxel order ("C" or "F").

    Zarr stores hold time-slowest arrays, so their blocks arrive F-contiguous; a C-order
    reshape would copy the whole block.
    """
    if block.flags.c_contiguous or not block.flags.f_contiguous:
        return block.reshape(-1, block.shape[-1]), "C"
    return block.reshape(-1, block.shape[-1], order="F"), "F"


def _partial_product(block, weights, after=None):
    """(1, T, K) float64 partial: the block's voxels times their weights.

    ``weights`` maps a voxel order to ``(n_k, sel, pieces)`` (see ``_block_weights``).
    ``after`` (ignored) is the block's partial for the previous time chunk: it makes a
    scheduler compute the time chunks of a block in order (see ``region_reduce``).
    """
    x, order = _voxel_rows(block)
    n_k, sel, pieces = weights[order]
    if sel is not None:
        x = x[sel]
    slab = np.empty(min(_SLAB_VOXELS, x.shape[0]) * x.shape[1])
    return _weighted_sum(x, n_k, pieces, slab).T[None]


def _weighted_sum(rows, n_k, pieces, slab):
    """(n_k, n) float64: the voxel rows ``rows`` (v, n) times their weights ``pieces``
    (:func:`_pieces`), slab after slab through the flat float64 buffer ``slab``.

    float64 C-ordered copies, one voxel slab at a time (bounded memory): float32
    accumulation loses ~1e-3 after cleaning (BOLD means are ~100x their fluctuations);
    integers sum exactly (nilearn truncates integer means). One slab buffer per block,
    reused: a fresh large array per slab costs page faults on every slab (and far more in
    dask workers, whose MALLOC_TRIM_THRESHOLD_ makes every large array a new mmap).
    """
    n = rows.shape[1]
    out = np.zeros((n_k, n))
    for start, stop, wt in pieces:
        xs = slab[: (stop - start) * n].reshape(stop - start, n)
        np.copyto(xs, rows[start:stop], casting="unsafe")
        xs = _finite(xs)
        out += np.asarray(wt @ xs)
    return out


#: Values tested at a time by :func:`count_nonfinite` (a 256 KiB boolean buffer, reused).
_COUNT_PIECE = 2**18


def count_nonfinite(block) -> int:
    """The exact count of NaN and inf values of ``block``, tested piece by piece: a
    whole-chunk boolean mask (a quarter of a float32 chunk, 6 MB for a seed chunk) was
    the largest temporary of a subject's pass.

    Parameters
    ----------
    block : array-like
        Any shape and dtype (integers are always finite: 0).
    """
    block = np.asarray(block)
    if block.dtype.kind != "f":
        return 0
    # a flat view in memory order (zarr's blocks are F-contiguous); else a copy
    flat = block.ravel(order="K")
    finite = np.empty(min(_COUNT_PIECE, flat.size), dtype=bool)
    count = 0
    for start in range(0, flat.size, _COUNT_PIECE):
        piece = flat[start : start + _COUNT_PIECE]
        out = finite[: piece.size]
        np.isfinite(piece, out=out)
        count += piece.size - int(np.count_nonzero(out))
    return count


def _partial_product_frames(frames, block, weights, after=None):
    """``_partial_product`` of a block read as pieces of whole time frames, and the
    count of its non-finite values: ``((1, T, K) float64, int)``.

    ``frames(block)`` yields ``(n_frames, voxels)`` arrays, voxels in the block's F order.
    Each slab of voxels is multiplied by its weights one piece of frames at a time, and the
    slabs add up in the same order as ``_partial_product``'s: with sparse weights the sums
    are bit-equal to it (a product's column does not depend on the other columns).
    """
    n_k, sel, pieces = weights["F"]
    parts, count, buf = [], 0, None
    for x in frames(block):
        count += count_nonfinite(x)
        if sel is not None:
            x = x[:, sel]
        need = min(_SLAB_VOXELS, x.shape[1]) * x.shape[0]
        if buf is None or buf.size < need:
            buf = np.empty(need)
        parts.append(_weighted_sum(x.T, n_k, pieces, buf))
    out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return out.T[None], count


def _pieces(wt):
    """``(start, stop, wt[:, start:stop])`` per slab of ``_SLAB_VOXELS`` columns, leaving out
    the slabs without weights (their voxels add nothing): cut once per block, not per chunk
    (scipy's sparse slicing costs ~0.5 ms a slab, 100+ slabs in a whole-volume chunk)."""
    out = []
    for start in range(0, wt.shape[1], _SLAB_VOXELS):
        stop = min(start + _SLAB_VOXELS, wt.shape[1])
        if sparse.issparse(wt) and wt.indptr[stop] == wt.indptr[start]:
            continue
        out.append((start, stop, wt[:, start:stop]))
    return out


def _block_weights(wb, local, bshape, wdtype):
    """Per voxel order, the weights of one block: ``(n_k, sel, pieces)``, with ``pieces``
    (``_pieces``) of a (K, v_block) CSC matrix over every voxel of the block (``sel`` None),
    or of a dense (K, n_sel) one over the voxels ``sel``."""
    n_k = wb.shape[1]
    n_vox = int(np.prod(bshape))
    ijk = np.unravel_index(local, bshape)
    out = {}
    for order in ("C", "F"):
        cols = np.ravel_multi_index(ijk, bshape, order=order)
        if wb.nnz > 0.25 * wb.shape[0] * wb.shape[1]:
            out[order] = (n_k, cols, _pieces(np.ascontiguousarray(wb.T.toarray())))
        else:
            coo = wb.tocoo()
            wt = sparse.csc_matrix((coo.data, (coo.col, cols[coo.row])), shape=(n_k, n_vox))
            out[order] = (n_k, None, _pieces(wt))
    return out


#: Name prefix of the tasks of ``region_reduce(frames=...)``: each returns its block's
#: partial and the count of the block's non-finite values, ``(partial, count)``.
FRAMES_TASKS = "lazyconn-region-frames-"


def region_reduce(data, weights, *, split_every=8, cache=None, frames=None):
    """Lazy (T, K) float64 ``X @ W`` for a 4-D dask run and sparse (V, K) weights.

    One task per spatial chunk holding non-zero weights; chunks without weights are not
    even read. Partial products are computed and summed in float64 (a tree,
    ``split_every`` at a time). ``cache`` (a dict) lets runs on the same grid and chunks
    share the per-block weights.

    ``frames`` (a callable: block index -> pieces of whole time frames, as
    ``lazyconn.io._dask.VoxelFrames``) reads each block in pieces instead of taking it
    from ``data``'s graph: the tasks (named :data:`FRAMES_TASKS`) then hold a piece of a
    block, not the whole decoded block, and also count its non-finite values.
    """
    shape = data.shape[:3]
    weights = sparse.csr_matrix(weights)
    n_k = weights.shape[1]
    wdtype = np.dtype(np.float64)
    key = (tuple(data.chunks[:3]), str(wdtype))
    blocks = None if cache is None else cache.get(key)
    if blocks is None:
        rows = np.flatnonzero(np.diff(weights.indptr))
        blocks = []
        for b, (pos, local) in sorted(_split_rows(rows, shape, data.chunks).items()):
            bshape = tuple(int(data.chunks[a][b[a]]) for a in range(3))
            wb = weights[rows[pos]].astype(wdtype)
            blocks.append((b, _block_weights(wb, local, bshape, wdtype)))
        if cache is not None:
            cache[key] = blocks
    if not blocks:  # no voxel carries weight: zeros, and nothing is read
        return da.zeros((data.shape[3], n_k), chunks=(data.chunks[3], n_k), dtype=np.float64)
    name = "lazyconn-region-partial-" + tokenize(
        data.name, weights.data, weights.indices, weights.indptr, data.chunks, frames is None
    )
    dsk = {}
    tasks = FRAMES_TASKS + name[len("lazyconn-region-partial-") :]
    for n, (b, wts) in enumerate(blocks):
        for t in range(len(data.chunks[3])):
            # Each time chunk after the previous one (a small (1, T, K) dependency): a
            # .nii.gz run's chunks are time slabs of one gzip stream, which then inflates
            # once, in order, instead of resuming at snapshots for slabs taken out of order.
            after = (name, n, t - 1, 0) if t else None
            if frames is None:
                dsk[(name, n, t, 0)] = (_partial_product, (data.name, *b, t), wts, after)
            else:
                dsk[(tasks, n, t)] = (_partial_product_frames, frames, (*b, t), wts, after)
                dsk[(name, n, t, 0)] = (operator.getitem, (tasks, n, t), 0)
    graph = HighLevelGraph.from_collections(
        name, dsk, dependencies=[data] if frames is None else []
    )
    partials = da.Array(
        graph,
        name,
        chunks=((1,) * len(blocks), data.chunks[3], (n_k,)),
        dtype=np.float64,
        meta=np.empty((0, 0, 0), dtype=np.float64),
    )
    return partials.sum(axis=0, split_every=split_every)


def n_chunks_touched(data, weights):
    """How many spatial chunks a reduction reads (for docs, tests and benchmarks)."""
    rows = np.flatnonzero(np.diff(sparse.csr_matrix(weights).indptr))
    return len(_split_rows(rows, data.shape[:3], data.chunks))


__all__ = [
    "FRAMES_TASKS",
    "count_nonfinite",
    "n_chunks_touched",
    "region_reduce",
    "region_weights",
    "smooth_adjoint",
    "smoothing_halo",
]
