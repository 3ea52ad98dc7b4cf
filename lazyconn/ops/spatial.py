"""Spatial kernels on 3-D / 4-D voxel arrays: Gaussian smoothing, morphology, components.

Kernels are pure numpy/scipy functions on one block (Gaussian smoothing: products with
small banded matrices, done by BLAS); graph builders only choose
the halo (derived from the kernel: Gaussian half-width ``int(truncate * sigma + 0.5)``, 0
on time) and build one graph layer with ``boundary="none"`` semantics, as dask-image's
``map_overlap`` does. The time axis (axis 3) is never filtered and never gets a halo.
"""

from __future__ import annotations

import functools
import itertools
import math

import dask.array as da
import numpy as np
from dask.array.overlap import ensure_minimum_chunksize
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from scipy import ndimage

from lazyconn._utils import rechunk
from lazyconn.exceptions import ParameterError

#: FWHM = sigma * sqrt(8 ln 2).
FWHM_OVER_SIGMA = float(np.sqrt(8 * np.log(2)))

__all__ = [
    "FWHM_OVER_SIGMA",
    "border_data",
    "ensure_finite",
    "extrapolate_out_mask",
    "fast_smooth",
    "fast_smooth_block",
    "fwhm_to_sigma",
    "gaussian_block",
    "gaussian_halfwidth",
    "gaussian_operator",
    "gaussian_smooth",
    "gaussian_spread_block",
    "largest_connected_component",
    "spread_range",
]


def fwhm_to_sigma(fwhm, affine) -> np.ndarray:
    """Per-axis Gaussian sigma in voxels, as nilearn's ``smooth_array``.

    ``fwhm`` is a scalar or a length-3 sequence (``None`` entries = no smoothing on that
    axis), in mm; voxel sizes are the Euclidean norms of the columns of ``affine[:3, :3]``.
    """
    values = np.asarray([fwhm], dtype=object).ravel()
    if values.size == 1:
        values = np.repeat(values, 3)
    if values.size != 3:
        raise ParameterError(
            f"fwhm={fwhm!r} has {values.size} values; expected a scalar or 3 values "
            "(one per spatial axis)."
        )
    out = []
    for v in values:
        v = 0.0 if v is None else v
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        if not ok or not np.isfinite(v) or v < 0:
            raise ParameterError(
                f"fwhm={fwhm!r} is not valid; expected finite numbers >= 0 (mm), None, or 'fast'."
            )
        out.append(float(v))
    vox = np.sqrt(np.sum(np.asarray(affine, dtype=np.float64)[:3, :3] ** 2, axis=0))
    return np.asarray(out) / (FWHM_OVER_SIGMA * vox)


def gaussian_halfwidth(sigma: float, truncate: float = 4.0) -> int:
    """Kernel half-width of ``scipy.ndimage.gaussian_filter1d`` (0 when sigma is 0)."""
    return int(truncate * float(sigma) + 0.5) if sigma > 0 else 0


#: Output rows per tile of a Gaussian operator, per voxel of the kernel's half-width (at
#: least 8): a pass then costs ~6 half-widths of products per output voxel instead of the
#: axis length, in BLAS calls big enough to run at speed (measured on 1-2 mm and 4 mm
#: blocks and volumes; see ``_gaussian_tiles``).
_TILE_ROWS_PER_HALFWIDTH = 4


@functools.lru_cache(maxsize=256)
def gaussian_operator(length: int, sigma: float, truncate: float, before: int, after: int, dtype):
    """The ``(length - before - after, length)`` matrix of one 1-D Gaussian pass, cropped.

    Row ``i`` holds the weights scipy's ``gaussian_filter1d`` (reflect mode) gives each of the
    ``length`` input voxels for output voxel ``before + i``; built by that very call on the
    identity, so the image-edge reflections (several, for a kernel wider than the axis) are
    scipy's. Cached and read-only (shared by every block of the same size).
    """
    eye = np.eye(int(length))
    op = ndimage.gaussian_filter1d(eye, float(sigma), axis=0, truncate=float(truncate))
    op = np.array(op[before : length - after], dtype=dtype, order="C")
    op.flags.writeable = False
    return op


def _tiles(op: np.ndarray, halfwidth: int):
    """An operator as ``(rows, cols, sub-matrix)`` tiles of about ``4 x half-width`` rows.

    Each tile keeps only the input columns its rows weight (a band ``rows + 2 x half-width``
    wide), so a long axis with a short kernel does not pay for all the zeros of the dense
    matrix, while short axes stay one product. Measured (CPU, one thread): 2 mm FWHM on
    4 mm blocks 47 ms tiled / 75 ms dense / 89 ms scipy; a 1 mm volume (182 x 218 x 182,
    6 mm) 132 / 156 / 232 ms; on 2 and 4 mm blocks with 6 mm the tiling changes nothing.
    Dense or tiled, the products beat scipy's filters on every shape measured, so there is
    no scipy path for long axes.
    """
    m = op.shape[0]
    rows = max(8, _TILE_ROWS_PER_HALFWIDTH * halfwidth)
    n_tiles = max(1, round(m / rows))
    tiles = []
    for k in range(n_tiles):
        r0, r1 = k * m // n_tiles, (k + 1) * m // n_tiles
        cols = np.flatnonzero(op[r0:r1].any(axis=0))
        c0, c1 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 0)
        sub = np.array(op[r0:r1, c0:c1], order="C")
        sub.flags.writeable = False
        tiles.append((slice(r0, r1), slice(c0, c1), sub))
    return m, tuple(tiles)


@functools.lru_cache(maxsize=256)
def _gaussian_tiles(length, sigma, truncate, before, after, dtype):
    """:func:`gaussian_operator`'s tiles (:func:`_tiles`)."""
    op = gaussian_operator(length, sigma, truncate, before, after, dtype)
    return _tiles(op, gaussian_halfwidth(sigma, truncate))


def spread_range(length: int, start: int, stop: int, halfwidth: int) -> tuple[int, int]:
    """The voxels ``[r0, r1)`` of an axis of ``length`` that a Gaussian pass of
    ``halfwidth`` carries the voxels ``[start, stop)`` to."""
    return max(0, start - halfwidth), min(length, stop + halfwidth)


@functools.lru_cache(maxsize=256)
def _spread_tiles(length, start, stop, sigma, truncate, dtype):
    """Tiles of the columns ``start:stop`` of the whole axis's operator, on the rows they
    reach (:func:`spread_range`): what the voxels ``[start, stop)`` add to every output."""
    h = gaussian_halfwidth(sigma, truncate)
    op = gaussian_operator(length, sigma, truncate, 0, 0, dtype)
    r0, r1 = spread_range(length, start, stop, h)
    return _tiles(op[r0:r1, start:stop], h)


def _gaussian_pass(x, axis, tiles, m, buffer=None):
    """Apply an operator's tiles along ``axis`` of a C-contiguous array.

    The result is a new array, or is written at the start of ``buffer`` (a flat array of
    the same dtype, not overlapping ``x``, at least as large as the result).

    The array is viewed as ``(P, L, N)`` (axes before, the axis, axes after): one GEMM when
    P = 1, ``(P, L) @ A.T`` when N = 1, else a stack of P GEMMs. Tiles read and write
    strided views in place (BLAS takes them as they are: unit inner stride).
    """
    shape = list(x.shape)
    length = shape[axis]
    shape[axis] = m
    p, n = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1 :])
    if buffer is None:
        out = np.empty(shape, dtype=x.dtype)
    else:
        out = buffer[: math.prod(shape)].reshape(shape)
    # errstate: a non-finite voxel times a tile's zeros (gaussian_block then redoes the block)
    with np.errstate(invalid="ignore", over="ignore"):
        if n == 1:
            x2, o2 = x.reshape(p, length), out.reshape(p, m)
            for rows, cols, sub in tiles:
                np.matmul(x2[:, cols], sub.T, out=o2[:, rows])
        else:
            x3, o3 = x.reshape(p, length, n), out.reshape(p, m, n)
            for rows, cols, sub in tiles:
                np.matmul(sub, x3[:, cols], out=o3[:, rows])
    return out


def gaussian_block(
    block: np.ndarray, sigmas, truncate: float = 4.0, halos=None, copy: bool = True
) -> np.ndarray:
    """Separable Gaussian smoothing of the spatial axes of a block: BLAS products.

    Each axis's pass is a product with a small banded matrix (:func:`gaussian_operator`:
    scipy's ``gaussian_filter1d`` in reflect mode applied to the identity), so the result is
    nilearn's ``smooth_array`` (same kernels, same reflections at the image edges, same
    order of the axes) **within float32 rounding**, not bit-identical: float32 blocks are
    multiplied in float32 (BLAS sums the ~2 x half-width + 1 products in float32, where
    scipy sums each line in float64 and rounds once per pass; measured: at most ~4 float32
    ulps of the data's magnitude from the exact result, ~1 ulp rms, against scipy's 1.2 and
    0.4). Why: the products take 2-5x less CPU per block than scipy's line-by-line filters
    (``benchmarks/bench_clean.py --kernel``), and a float32 product is ~2-2.5x faster than
    a float64 one, which would only buy back those few ulps. Both release the GIL (scipy's
    ``correlate1d`` as well; measured), so dask's threads smooth blocks on every core. Float64 blocks are multiplied in float64
    (agreement ~1e-16); other dtypes in float64, cast to the block's dtype after each pass
    as scipy does.

    ``halos`` (one ``(before, after)`` pair per spatial axis) marks context voxels around
    the block: the halo crop is folded into each axis's operator (its rows are the block's
    own voxels only), so later passes only work on the block's own extent along earlier
    axes. This is exact: a 1-D pass along an axis mixes values only along that axis, and a
    halo as wide as the kernel's half-width holds every voxel the kept rows weight.

    Non-finite values: a product spreads a NaN or inf along its whole tile, where scipy
    spreads it over the kernel's width only, so a block whose first pass is not finite (a
    non-finite voxel reaches the result) is computed again with scipy's filters (exact,
    slower; callers that run ``ensure_finite`` first, as nilearn's smoothing does, never
    take that path).

    Memory: a new array for the first and the last filtered axis, each at most the size of
    the block, and the middle pass written into the block's buffer when ``copy=False``
    (else a third new array); the caller's block plus two at once.

    Parameters
    ----------
    block : numpy.ndarray
        3-D or 4-D block (spatial axes first; axes past the third are not filtered).
    sigmas : sequence of 3 floats
        Gaussian sigma in voxels per spatial axis (0: no smoothing on that axis).
    truncate : float, default=4.0
        Kernel half-width in sigmas, as scipy's ``truncate``.
    halos : sequence of 3 (int, int), optional
        Context voxels ``(before, after)`` per spatial axis, cropped from the result.
    copy : bool, default=True
        ``False``: the block is a buffer the caller gives up (a pass may write into it, and
        the result may be ``block`` itself when nothing is filtered or cropped).
    """
    halos = [(0, 0)] * 3 if halos is None else [tuple(int(h) for h in p) for p in halos]
    x = block
    transposed = not x.flags.c_contiguous and x.flags.f_contiguous
    if transposed:  # F-ordered (time-slowest) blocks: work on the C-ordered transpose
        x = x.T
    x = np.ascontiguousarray(x)
    # float32 data multiply in float32: ~2-2.5x faster than float64 products, within ~4
    # ulps of the exact result (see the docstring); other non-float64 dtypes in float64
    work = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    filtered = [a for a, s in enumerate(sigmas) if gaussian_halfwidth(s, truncate) > 0]
    # A middle pass may write into the input's buffer when it is ours (a copy made above)
    # or the caller's to reuse (copy=False): one page-faulting allocation less per block.
    # The first pass has read it by then; the last pass gets a new, exact-size array, so
    # the result never pins the larger buffer.
    reusable = not copy or not np.may_share_memory(x, block)
    spare = x.reshape(-1) if reusable and x.dtype == work else None
    for axis, sigma in enumerate(sigmas):
        before, after = halos[axis]
        ax = x.ndim - 1 - axis if transposed else axis
        length = x.shape[ax]
        if axis in filtered:
            m, tiles = _gaussian_tiles(length, float(sigma), float(truncate), before, after, work)
            reuse = spare if axis not in (filtered[0], filtered[-1]) else None
            if reuse is not None and reuse.size < x.size // length * m:
                reuse = None
            x = _gaussian_pass(x.astype(work, copy=False), ax, tiles, m, reuse)
            if axis == filtered[0] and not _finite(x):
                # a product spreads a NaN or inf along a whole tile: scipy's exact spread
                # (the block is intact: only later passes may write into it)
                out = _gaussian_block_scipy(block, sigmas, truncate, halos)
                return np.asarray(out, order="F" if transposed else "C")
            x = x.astype(block.dtype, copy=False)
        elif before or after:
            index = [slice(None)] * x.ndim
            index[ax] = slice(before, length - after)
            x = x[tuple(index)]
    out = x.T if transposed else x
    # contiguous, and holding neither the halos nor (unless copy=False) the caller's block
    out = np.asarray(out, order="F" if transposed else "C")
    if copy and np.may_share_memory(out, block):
        out = out.copy(order="K")
    return out


#: Bytes of the reached region per slab of volumes in :func:`gaussian_spread_block`: the
#: kernel's temporaries are two such slabs, whatever the block's length in time (three with
#: a block read a slab at a time, :class:`lazyconn.io.store.ChunkSlabs`). 2 MiB: a seed
#: study's reductions stage peaked ~15 MiB lower than at 4 MiB for the same CPU (two
#: subjects in flight); at 1 MiB ~10 MiB lower, but a block's spread took ~25 % more CPU.
SPREAD_SLAB_BYTES = 2 << 20


def gaussian_spread_block(
    block: np.ndarray, sigmas, truncate, where, targets, into=None, first=None
) -> list:
    """What one block adds to the Gaussian smoothing of the whole array, at chosen voxels.

    Smoothing is linear: the smoothed array is the sum over blocks of each block smoothed
    alone (zeros elsewhere), a term that is non-zero within the kernel's half-width of the
    block (:func:`spread_range`). This computes one block's term with the block's columns
    of each axis's whole operator (:func:`_spread_tiles`: scipy's reflect-mode weights at
    the array's edges), slab of volumes by slab, each pass one BLAS product per tile over
    the whole slab (:func:`_rotating_pass`), and keeps only the ``targets``' voxels. No
    neighbour is needed (no halo): a block is read once and freed as soon as its terms are
    out, and the temporaries are a few slabs of :data:`SPREAD_SLAB_BYTES`, not copies of
    the block.
    Summing the terms gives :func:`gaussian_block`'s result within float32 rounding (the
    same weights, summed block by block).

    NaN and inf count as 0 (nilearn's smoothing implies ``ensure_finite``).

    Parameters
    ----------
    block : numpy.ndarray
        4-D block (x, y, z, t); float32 is smoothed in float32, other dtypes in float64
        (cast back to the block's dtype after each pass, as scipy does).
    sigmas : sequence of 3 floats
        Gaussian sigma in voxels per spatial axis.
    truncate : float
        Kernel half-width in sigmas.
    where : sequence of 3 (int, int, int)
        ``(length, start, stop)``: the block's place on each spatial axis of the array.
    targets : sequence of int arrays
        Flat indices of the voxels to return, in C order of the reached region taken as
        (z, y, x) (its extent is :func:`spread_range` of each axis).
    into : sequence of numpy.ndarray, optional
        One ``(len(target), t)`` accumulator per target: the term is added into it in
        place instead of being returned as a new array (the streamed pass of
        :class:`lazyconn.ops.voxels.VoxelStream`: no term outlives its slab).
    first : sequence of bool, optional
        With ``into``: True for an accumulator that holds nothing yet (e.g. made by
        ``np.empty``), which the term is written into instead of added to (no zero-filled
        accumulator to fault in and read back).

    Returns
    -------
    list of numpy.ndarray
        One C-contiguous ``(len(target), t)`` array per target, in the block's dtype (the
        accumulators when ``into`` is given).
    """
    n_t = block.shape[3]
    work = block.dtype if block.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    passes, reached = [], []
    for (length, start, stop), sigma in zip(where, sigmas, strict=True):
        tiles = None
        if gaussian_halfwidth(sigma, truncate):
            args = (int(length), int(start), int(stop), float(sigma), float(truncate), work)
            m, tiles = _spread_tiles(*args)
        else:
            m = int(stop) - int(start)
        passes.append((tiles, m))
        reached.append(m)
    per_volume = math.prod(reached)
    step = max(1, min(n_t, SPREAD_SLAB_BYTES // max(1, per_volume * work.itemsize)))
    if into is None:
        outs = [np.empty((len(t), n_t), dtype=block.dtype) for t in targets]
        first = [True] * len(outs)
    else:
        outs = list(into)
        first = [False] * len(outs) if first is None else list(first)
    picked = np.empty(max((len(t) for t in targets), default=0) * step, dtype=work)
    # Two buffers reused slab after slab, as the slab's copy and the passes' outputs (the
    # passes only grow the array: the last is the largest): fresh slab-sized arrays would
    # page-fault on every slab.
    bufs = [np.empty(step * per_volume, dtype=work) for _ in range(2)]
    same = work == block.dtype
    for t0 in range(0, n_t, step):
        t1 = min(n_t, t0 + step)
        # (t, z, y, x): a view for F-ordered (Zarr, NIfTI) blocks; a block cropped from a
        # larger one (the mask's box) or C-ordered is copied into the spare buffer
        x = block[..., t0:t1].T
        if same and not x.flags.c_contiguous:
            spare = bufs[1][: x.size].reshape(x.shape)
            np.copyto(spare, x)
            x = spare
        x = np.ascontiguousarray(x, dtype=work)
        if not _finite(x):
            x = np.where(np.isfinite(x), x, work.type(0))
        # Each pass filters the last axis and makes it the first: (t, z, y, x) -> (x, t, z, y)
        # -> (y, x, t, z) -> (z, y, x, t), every pass one product per tile over all the
        # other axes (no stack of small products), and each voxel's slab ends contiguous.
        for i, (tiles, m) in enumerate(passes):
            x = _rotating_pass(x, tiles, m, bufs[i % 2] if same else None)
            if not same:
                x = x.astype(block.dtype).astype(work)
        flat = x.reshape(per_volume, t1 - t0)
        for out, idx, assign in zip(outs, targets, first, strict=True):
            # np.take into a reused buffer: ~4x faster than fancy indexing's new array
            rows = picked[: idx.size * (t1 - t0)].reshape(idx.size, t1 - t0)
            term = np.take(flat, idx, axis=0, out=rows)
            view = out[:, t0:t1]
            if assign:
                np.copyto(view, term, casting="unsafe")
            else:
                np.add(view, term, out=view, casting="unsafe")
    return outs


def _rotating_pass(x: np.ndarray, tiles, m: int, buffer=None) -> np.ndarray:
    """A Gaussian pass (``tiles``, :func:`_tiles`; None: no filtering) along the last axis
    of a C-contiguous array, whose result has that axis first: (..., L) -> (m, ...).

    One product per tile, ``sub @ x2ᵀ[cols]`` with ``x2`` the array as (P, L): BLAS takes
    the transposed view as it is. Written at the start of ``buffer`` when given (not
    overlapping ``x``).
    """
    length = x.shape[-1]
    rest = x.shape[:-1]
    p = math.prod(rest)
    size = m * p
    out = np.empty((m, p), dtype=x.dtype) if buffer is None else buffer[:size].reshape(m, p)
    x2t = x.reshape(p, length).T
    if tiles is None:
        np.copyto(out, x2t)
    else:
        for rows, cols, sub in tiles:
            np.matmul(sub, x2t[cols], out=out[rows])
    return out.reshape((m, *rest))


def _finite(x) -> bool:
    """Whether every value is finite (a finite sum needs no boolean temporary)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return x.dtype.kind != "f" or bool(np.isfinite(x.sum())) or bool(np.isfinite(x).all())


def _gaussian_block_scipy(block, sigmas, truncate, halos):
    """scipy's filters pass by pass (the exact spread of non-finite values); halos cropped."""
    out = np.array(block, copy=True)
    for axis, sigma in enumerate(sigmas):
        if sigma > 0:
            ndimage.gaussian_filter1d(out, sigma, axis=axis, output=out, truncate=truncate)
        before, after = halos[axis]
        index = [slice(None)] * out.ndim
        index[axis] = slice(before, out.shape[axis] - after)
        out = out[tuple(index)]
    return out


def _copy_piece(block, index):
    # A copy, not a view: a view would keep the whole neighbour block alive.
    return np.array(block[index], copy=True)


def _smooth_with_halo(own, pieces, offsets, halos, sigmas, truncate):
    """Assemble the block and its neighbours' halo pieces, then :func:`gaussian_block`.

    The buffer takes the block's memory order: Zarr and NIfTI blocks arrive F-ordered (time
    slowest), and copying them into a C-ordered buffer is a transposition that cost more
    than the smoothing itself (measured on a seed block: 109 ms against 8 ms for an F copy
    and 56-84 ms of smoothing); the kernel works in either order.
    """
    shape = tuple(own.shape[a] + sum(halos[a]) for a in range(3)) + own.shape[3:]
    # x varying fastest (F, also for views of F blocks) or slowest (C)
    order = "F" if abs(own.strides[0]) < abs(own.strides[-1]) else "C"
    padded = np.empty(shape, dtype=own.dtype, order=order)
    for piece, d in zip([own, *pieces], [(0, 0, 0), *offsets], strict=True):
        index = []
        for a, o in enumerate(d):
            start = 0 if o < 0 else halos[a][0] if o == 0 else halos[a][0] + own.shape[a]
            index.append(slice(start, start + piece.shape[a]))
        padded[tuple(index)] = piece
    del own, pieces
    return gaussian_block(padded, sigmas, truncate, halos=halos, copy=False)


def _halo_graph(arr: da.Array, depth, kernel, name, **kernel_kwargs) -> da.Array:
    """Blocks with a halo of ``depth`` voxels (spatial axes), ``boundary="none"``.

    Unlike ``da.overlap``, each neighbour contributes small *copied* pieces (so a loaded
    neighbour block can be freed as soon as its pieces are cut), and the kernel gets the
    halo sizes of its block (none on the image's outer faces). Every chunk must be at least
    ``depth`` thick (see ``ensure_minimum_chunksize``).
    """
    nb = arr.numblocks
    piece_name = f"{name}-piece"
    dsk = {}
    for loc, rest in itertools.product(np.ndindex(*nb[:3]), np.ndindex(*nb[3:])):
        halos = tuple(
            (depth[a] if loc[a] > 0 else 0, depth[a] if loc[a] < nb[a] - 1 else 0)
            for a in range(3)
        )
        pieces, offsets = [], []
        for d in itertools.product((-1, 0, 1), repeat=3):
            if d == (0, 0, 0) or any(o and not depth[a] for a, o in enumerate(d)):
                continue
            n = tuple(c + o for c, o in zip(loc, d, strict=True))
            if any(i < 0 or i >= m for i, m in zip(n, nb[:3], strict=True)):
                continue
            index = []
            for a, o in enumerate(d):
                size = arr.chunks[a][n[a]]
                index.append(
                    slice(size - depth[a], None)
                    if o < 0
                    else slice(None)
                    if o == 0
                    else slice(0, depth[a])
                )
            key = (piece_name, *loc, *rest, *(o + 1 for o in d))
            dsk[key] = (_copy_piece, (arr.name, *n, *rest), tuple(index))
            pieces.append(key)
            offsets.append(d)
        dsk[(name, *loc, *rest)] = (
            kernel,
            (arr.name, *loc, *rest),
            pieces,
            offsets,
            halos,
            *kernel_kwargs.values(),
        )
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[arr])
    return da.Array(graph, name, chunks=arr.chunks, dtype=arr.dtype, meta=arr._meta)


def gaussian_smooth(arr: da.Array, sigmas, truncate: float = 4.0) -> da.Array:
    """Gaussian smoothing of the 3 spatial axes of a 3-D or 4-D dask array.

    Halo = kernel half-width per spatial axis (0 on time), ``boundary="none"``, so at the
    true image edges scipy's reflect mode sees exactly what the eager code sees; the kernel
    crops each axis's halo as part of filtering along it (:func:`gaussian_block`). Results
    equal nilearn's within float32 rounding (BLAS products; see :func:`gaussian_block`).
    The dtype is kept (float input expected); output chunks are the input's (any time
    chunking works: the time axis has no halo).
    """
    sigmas = [float(s) for s in sigmas]
    depth = [gaussian_halfwidth(s, truncate) for s in sigmas]
    if not any(depth):
        return arr
    chunks = arr.chunks
    # A kernel wider than the axis: the axis must be whole in every block (no halo).
    whole = {a: -1 for a, d in enumerate(depth) if d and 2 * d >= arr.shape[a]}
    if whole:
        arr = rechunk(arr, whole)
        depth = [0 if a in whole else d for a, d in enumerate(depth)]
    # Blocks thinner than the halo are merged with a neighbour (as map_overlap does).
    work = rechunk(
        arr,
        tuple(ensure_minimum_chunksize(max(depth[a], 1), c) for a, c in enumerate(arr.chunks[:3]))
        + arr.chunks[3:],
    )
    name = f"gaussian-smooth-{tokenize(work, sigmas, truncate)}"
    out = _halo_graph(
        work, depth, _smooth_with_halo, name, sigmas=tuple(sigmas), truncate=truncate
    )
    return _keep_chunks(out, chunks)


def _keep_chunks(out: da.Array, chunks) -> da.Array:
    # map_overlap merges chunks thinner than the halo; give back the caller's layout.
    return out if out.chunks == chunks else rechunk(out, chunks)


def fast_smooth_block(block: np.ndarray) -> np.ndarray:
    """nilearn's ``fwhm="fast"``: add 0.2 x each existing face neighbour, divide by 2.2."""
    weight = 0.2
    out = block.copy()
    weighted = weight * block
    out[:-1] += weighted[1:]
    out[1:] += weighted[:-1]
    out[:, :-1] += weighted[:, 1:]
    out[:, 1:] += weighted[:, :-1]
    out[:, :, :-1] += weighted[:, :, 1:]
    out[:, :, 1:] += weighted[:, :, :-1]
    out /= 1 + 6 * weight
    return out


def fast_smooth(arr: da.Array) -> da.Array:
    """Lazy ``fast_smooth_block``: 1-voxel halo; image borders are not renormalised."""
    depth = {0: 1, 1: 1, 2: 1}
    if arr.ndim == 4:
        depth[3] = 0
    out = arr.map_overlap(
        fast_smooth_block,
        depth=depth,
        boundary="none",
        dtype=arr.dtype,
        meta=np.empty((0,) * arr.ndim, dtype=arr.dtype),
    )
    return _keep_chunks(out, arr.chunks)


def ensure_finite(arr):
    """NaN and +-inf -> 0 (elementwise, lazy on dask arrays; ints returned unchanged)."""
    if np.dtype(arr.dtype).kind not in "fc":
        return arr
    if isinstance(arr, da.Array):
        return da.where(da.isfinite(arr), arr, arr.dtype.type(0))
    return np.where(np.isfinite(arr), arr, arr.dtype.type(0))


def border_data(data: np.ndarray, border_size: int) -> np.ndarray:
    """The values in the outer shell of thickness ``border_size`` of a 3-D array, raveled.

    Same order and repetitions (edges and corners counted once per face) as nilearn's
    ``_utils.ndimage.get_border_data``, so medians agree.
    """
    return np.concatenate(
        [
            data[:border_size].ravel(),
            data[-border_size:].ravel(),
            data[:, :border_size].ravel(),
            data[:, -border_size:].ravel(),
            data[:, :, :border_size].ravel(),
            data[:, :, -border_size:].ravel(),
        ]
    )


def largest_connected_component(mask: np.ndarray) -> np.ndarray:
    """Largest 6-connected component of a boolean 3-D array (ties: lowest label), eager.

    Same rule as nilearn's ``_utils.ndimage.largest_connected_component``.
    """
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask.copy()
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == counts.argmax()


def extrapolate_out_mask(data: np.ndarray, mask: np.ndarray, iterations: int = 1):
    """Fill the 1-voxel shell around ``mask`` with the mean of its in-mask face neighbours.

    Re-implementation of nilearn's ``masking.extrapolate_out_mask`` (used by resampling
    to fill non-finite voxels before interpolating). Returns (new_data, new_mask).
    """
    if iterations > 1:
        data, mask = extrapolate_out_mask(data, mask, iterations=iterations - 1)
    new_mask = ndimage.binary_dilation(mask)
    larger = np.zeros(np.array(mask.shape) + 2, dtype=bool)
    larger[1:-1, 1:-1, 1:-1] = mask
    padded = np.zeros(larger.shape + data.shape[3:])
    padded[1:-1, 1:-1, 1:-1] = data
    padded[~larger] = np.nan
    shell = larger.copy()
    shell[1:-1, 1:-1, 1:-1] = np.logical_xor(new_mask, mask)
    sx, sy, sz = np.where(shell)
    neighbours = np.array(
        [
            padded[sx + i, sy + j, sz + k]
            for i, j, k in [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
        ]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.nansum(neighbours, axis=0) / np.sum(np.isfinite(neighbours), axis=0)
    values[~np.isfinite(values)] = 0
    new_data = np.zeros_like(padded)
    new_data[shell] = values
    new_data[larger] = padded[larger]
    return new_data[1:-1, 1:-1, 1:-1], new_mask
