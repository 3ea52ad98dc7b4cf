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

import collections
import hashlib
import itertools
import threading

import dask.array as da
import dask.core
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.optimization import cull

from lazyconn._utils import rechunk
from lazyconn.config import DEFAULT_CHUNK_BYTES
from lazyconn.ops import spatial

__all__ = [
    "VoxelStream",
    "block_positions",
    "c_positions",
    "gather",
    "scatter",
    "smooth_gather",
    "stream_order",
]


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


def _assemble(parts, ranges, places):
    """The output chunk (T, v) from pieces of the blocks' selections ((n, T) each): rows
    ``r0:r1`` of each part go to ``places`` (a slice, or the rows' positions in C order),
    written once into the (v, T) result (no concatenated copy to permute)."""
    if len(parts) == 1 and isinstance(places[0], slice):
        (r0, r1), part = ranges[0], parts[0]
        return (part if (r0, r1) == (0, len(part)) else part[r0:r1]).T
    n = sum(r1 - r0 for r0, r1 in ranges)
    out = np.empty((n, parts[0].shape[1]), dtype=parts[0].dtype)
    for part, (r0, r1), place in zip(parts, ranges, places, strict=True):
        out[place] = part[r0:r1]
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
        arr = rechunk(arr, {3: -1})
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

    sel_name = f"lc-gather-select-{token}"
    sel_dsk, selected = {}, {}
    for idx, sl in _block_slices(chunks3):
        m = mask[sl]
        if m.any():
            sel_dsk[(sel_name, *idx)] = (_select, (arr.name, *idx, 0), m)
            selected[idx] = (sel_name, *idx)
    layers = {sel_name: (MaterializedLayer(sel_dsk), set(arr.__dask_layers__()))}
    return _c_order(arr, layers, selected, mask, f"lc-gather-{token}", target_bytes)


def _c_order(arr, layers, selected, mask, name, target_bytes):
    """The (T, V) array in C order from each block's in-mask voxels, (n, T) in local C order.

    ``layers`` ({name: (layer, dependencies)}, in graph order) compute those selections over
    ``arr``'s graph; ``selected`` maps each spatial block index (blocks with in-mask voxels
    only) to its selection's key.
    """
    n_t = arr.shape[3]
    target_bytes = DEFAULT_CHUNK_BYTES if target_bytes is None else target_bytes
    max_vox = max(1, int(target_bytes) // max(1, n_t * arr.dtype.itemsize))
    pos = c_positions(mask)
    out_dsk, sizes = {}, []
    # Blocks grouped by x-block: C order never leaves an x-slab before it is complete.
    by_row: dict[int, list] = {}
    for idx, sl in _block_slices(arr.chunks[:3]):
        if idx in selected:
            by_row.setdefault(idx[0], []).append((selected[idx], pos[sl][mask[sl]]))
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
            places, start = [], 0
            for p in got:  # where each piece's rows go in the chunk (C order)
                local = p - s
                in_order = np.array_equal(local, np.arange(start, start + local.size))
                places.append(slice(start, start + local.size) if in_order else local)
                start += local.size
            out_dsk[(name, 0, len(sizes))] = (_assemble, keys, ranges, places)
            sizes.append(int(e - s))
    all_layers = dict(arr.dask.layers)
    deps = dict(arr.dask.dependencies)
    for layer_name, (layer, layer_deps) in layers.items():
        all_layers[layer_name] = layer
        deps[layer_name] = set(layer_deps)
    all_layers[name] = MaterializedLayer(out_dsk)
    deps[name] = {list(layers)[-1]}
    graph = HighLevelGraph(all_layers, deps)
    meta = np.empty((0, 0), dtype=arr.dtype)
    return da.Array(graph, name, chunks=((n_t,), tuple(sizes)), dtype=arr.dtype, meta=meta)


def _sum_spread(terms, which, rows):
    """One block's smoothed in-mask voxels (n, T): for each time chunk, the sum of its own
    term (all its rows, first: it is this task's to add into) and its neighbours' terms on
    ``rows``; time chunks joined in order."""
    sums = []
    for chunk_terms in terms:
        out = chunk_terms[0][which[0]]
        for term, k, r in zip(chunk_terms[1:], which[1:], rows[1:], strict=True):
            out[r] += term[k]
        sums.append(out)
    return sums[0] if len(sums) == 1 else np.concatenate(sums, axis=1)


def _spread_after(block, sigmas, truncate, where, targets, after=None):
    """:func:`~lazyconn.ops.spatial.gaussian_spread_block`; ``after`` (ignored) is the
    block's terms for the previous time chunk, so a scheduler takes its time chunks in
    order (they are all kept for the sum anyway: no memory is held for it)."""
    return spatial.gaussian_spread_block(block, sigmas, truncate, where, targets)


def smooth_gather(
    arr: da.Array, mask: np.ndarray, sigmas, truncate: float = 4.0, target_bytes=None
) -> da.Array:
    """``gather(gaussian_smooth(arr, sigmas), mask)`` (NaN/inf as 0) without the smoothed
    array: each block is read once and smoothed alone, only at in-mask voxels.

    One task per block computes what it adds to every in-mask voxel within the kernel's
    half-width (:func:`lazyconn.ops.spatial.gaussian_spread_block`: smoothing is linear, so
    the smoothed array is the sum of the blocks smoothed alone); one task per block with
    in-mask voxels sums its terms, in the order and layout of :func:`gather`'s selections.
    So no block waits in memory for its neighbours (a halo graph keeps every block until
    its neighbours have been read to assemble its halo, e.g. a whole subject's run when its
    mask's box spans 2 x 2 blocks), there is no halo copy and no smoothed block: peak
    memory is one block and its terms per thread. Time chunks (a ``.nii.gz`` read in
    slabs of volumes) are smoothed apart and joined in the sums, so a run is never
    rechunked into whole-time blocks first. Results equal the halo graph's within float32
    rounding (the same weights, summed block by block).

    Parameters
    ----------
    arr : dask.array.Array, 4-D
        Spatially chunked run (any chunks, time included).
    mask : numpy bool array, 3-D, shape ``arr.shape[:3]``
    sigmas : sequence of 3 floats
        Gaussian sigma in voxels per spatial axis.
    truncate : float, default=4.0
        Kernel half-width in sigmas.
    target_bytes : int, optional
        As :func:`gather`'s.

    Returns
    -------
    dask.array.Array, shape (T, V), as :func:`gather` with ``order="C"``.
    """
    mask = np.asarray(mask, dtype=bool)
    sigmas = tuple(float(s) for s in sigmas)
    depth = [spatial.gaussian_halfwidth(s, truncate) for s in sigmas]
    chunks3 = arr.chunks[:3]
    token = tokenize(arr.name, mask, chunks3, sigmas, truncate, target_bytes)
    blocks = list(_block_slices(chunks3))
    # Each target block's in-mask voxels (local C order, as gather's selections).
    voxels = {}
    for idx, sl in blocks:
        coords = np.nonzero(mask[sl])
        if coords[0].size:
            voxels[idx] = [c + s.start for c, s in zip(coords, sl, strict=True)]
    spread_name = f"lc-smooth-gather-spread-{token}"
    sum_name = f"lc-smooth-gather-sum-{token}"
    spread_dsk, terms = {}, {idx: [] for idx in voxels}
    for idx, sl in blocks:
        where = tuple((n, s.start, s.stop) for n, s in zip(arr.shape[:3], sl, strict=True))
        reach = [
            spatial.spread_range(n, s.start, s.stop, d)
            for n, s, d in zip(arr.shape[:3], sl, depth, strict=True)
        ]
        shape = tuple(r1 - r0 for r0, r1 in reach)
        targets = []
        for j, coords in voxels.items():
            inside = np.ones(coords[0].size, dtype=bool)
            for c, (r0, r1) in zip(coords, reach, strict=True):
                inside &= (c >= r0) & (c < r1)
            rows = np.flatnonzero(inside)
            if rows.size == 0:
                continue
            local = [c[rows] - r0 for c, (r0, _) in zip(coords, reach, strict=True)]
            flat = np.ravel_multi_index(local[::-1], shape[::-1])
            own = j == idx  # its own term covers all its voxels: no row index needed
            terms[j].append((own, (spread_name, *idx), len(targets), None if own else rows))
            targets.append(flat)
        for tc in range(len(arr.chunks[3]) if targets else 0):
            # Time chunks in order: a .nii.gz run's are slabs of one gzip stream, then
            # inflated once, in order, with ISA-L (dask's order took them backwards: the
            # file inflated ~1.7x, with zlib, to resume at snapshots).
            spread_dsk[(spread_name, *idx, tc)] = (
                _spread_after,
                (arr.name, *idx, tc),
                sigmas,
                truncate,
                where,
                targets,
                (spread_name, *idx, tc - 1) if tc else None,
            )
    sum_dsk, selected = {}, {}
    for j, parts in terms.items():
        parts = sorted(parts, key=lambda p: not p[0])  # the block's own term first
        sum_dsk[(sum_name, *j)] = (
            _sum_spread,
            [[(*p[1], tc) for p in parts] for tc in range(len(arr.chunks[3]))],
            [p[2] for p in parts],
            [p[3] for p in parts],
        )
        selected[j] = (sum_name, *j)
    layers = {
        spread_name: (MaterializedLayer(spread_dsk), set(arr.__dask_layers__())),
        sum_name: (MaterializedLayer(sum_dsk), {spread_name}),
    }
    return _c_order(arr, layers, selected, mask, f"lc-smooth-gather-{token}", target_bytes)


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
        x = rechunk(x, {0: -1})
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


def stream_order(numblocks) -> list[tuple[int, ...]]:
    """Spatial blocks in raster order with the axis of most blocks slowest (ties: the
    earlier axis): a block's Gaussian terms reach its neighbours, so a target block stays
    open from its first neighbour read to its last, about one plane of the two faster axes
    and one row later; the smallest planes keep the fewest targets open."""
    numblocks = tuple(int(n) for n in numblocks)
    axes = sorted(range(len(numblocks)), key=lambda a: -numblocks[a])
    order = []
    for idx in np.ndindex(*(numblocks[a] for a in axes)):
        block = [0] * len(numblocks)
        for a, i in zip(axes, idx, strict=True):
            block[a] = i
        order.append(tuple(block))
    return order


def _identity(x):
    return x


#: The last few :meth:`VoxelStream.plan` results, by mask, chunks and kernel (shared by
#: every stream, on any thread; a plan is never modified once made).
_PLANS: collections.OrderedDict = collections.OrderedDict()
_PLANS_LOCK = threading.Lock()
_PLANS_KEPT = 2


class VoxelStream:
    """A run's in-mask voxels, optionally smoothed first, as a stream of finished columns.

    :func:`smooth_gather` (and :func:`gather`) as a loop instead of a graph: the spatial
    blocks are read one at a time in :func:`stream_order`; each block's Gaussian terms are
    added in place into one accumulator per target block it reaches (its in-mask voxels
    only, :func:`lazyconn.ops.spatial.gaussian_spread_block`), and a target is handed out
    as soon as its last neighbour has been read, then forgotten. Iterating yields
    ``(columns, values)``: the target's places on V (C order, as :func:`gather`'s) and its
    (T, n) values, after ``transform`` (e.g. the cleaning, column by column).

    Why: with whole-time chunks a dask graph of a long run's blocks holds GBs whatever
    the order its tasks run in (a 1200-volume HCP run at 2 mm: 4.3 GB with dask's order,
    3.4 GB strictly ordered; each output chunk in C order needs the terms of about two
    planes of blocks). Here what is held is the open accumulators, about one plane of the
    fastest axes' blocks plus one row (``peak_open`` after a pass: the most accumulators
    open at once and their bytes), whatever the number of volumes' chunks. A group is
    handed to ``transform`` alone as it finishes (no concatenation of a block's finished
    groups), as the transpose of its accumulator, which nothing else holds: ``transform``
    may overwrite it and return it (the cleaning writes its result there). A stream can
    be iterated again (a second pass reads the run again).

    A block is read with all its time chunks at once, so a run read in time slabs (a
    ``.nii.gz``, which can only be inflated from its start) would be inflated once per
    block: :func:`lazyconn.masking.stream_mask` streams only runs whose time axis is one
    chunk, and leaves the others to the graph.

    Parameters
    ----------
    arr : dask.array.Array, 4-D
        Spatially chunked run (x, y, z, T).
    mask : numpy bool array, 3-D, shape ``arr.shape[:3]``
    sigmas : sequence of 3 floats, optional
        Gaussian sigma in voxels per spatial axis (None: no smoothing, :func:`gather`).
        NaN and inf count as 0 when smoothing, as in :func:`smooth_gather`.
    truncate : float, default=4.0
        Kernel half-width in sigmas.
    transform : callable, optional
        Applied to each target's (T, n) values before they are yielded; it must work
        column by column and return ``(n_rows, n)`` values of ``dtype`` (possibly the
        values it was given, overwritten).
    n_rows : int, optional
        Rows of ``transform``'s output (default: T).
    dtype : numpy dtype, optional
        dtype of ``transform``'s output (default: ``arr``'s).
    reader : callable, optional
        With smoothing: ``reader(region)``, ``region`` a block's ``((x0, x1), (y0, y1),
        (z0, z1))`` in ``arr``, gives the block (all volumes) another way than ``arr``'s
        graph, or None (then the graph reads it): an object with ``shape``, ``dtype`` and
        ``[..., t0:t1]`` for successive slabs of volumes, which the Gaussian spread reads
        (:class:`lazyconn.io.store.ChunkSlabs`: a local store's chunk decoded a slab at a
        time, not whole; :func:`lazyconn.masking.stream_mask`).
    """

    def __init__(
        self,
        arr,
        mask,
        sigmas=None,
        truncate=4.0,
        transform=None,
        n_rows=None,
        dtype=None,
        reader=None,
    ):
        self.arr = arr
        self.mask = np.asarray(mask, dtype=bool)
        if sigmas is not None and not any(spatial.gaussian_halfwidth(s, truncate) for s in sigmas):
            sigmas = None
        self.sigmas = None if sigmas is None else tuple(float(s) for s in sigmas)
        self.truncate = float(truncate)
        self.transform = _identity if transform is None else transform
        self.n_rows = int(arr.shape[3] if n_rows is None else n_rows)
        self.dtype = np.dtype(arr.dtype if dtype is None else dtype)
        self.peak_open = (0, 0)
        self._plan = None
        self.reader = reader

    @property
    def shape(self) -> tuple[int, int]:
        """(n_rows, V): the (T, V) matrix the stream's columns make up."""
        return self.n_rows, int(self.mask.sum())

    @property
    def nbytes(self) -> int:
        """Bytes of that (T, V) matrix were it held whole."""
        return self.n_rows * self.shape[1] * self.dtype.itemsize

    def map(self, fn, n_rows=None, dtype=None) -> VoxelStream:
        """The stream with ``fn`` applied to each yielded (n_rows, n) values, after
        this stream's own ``transform``.

        Parameters
        ----------
        fn : callable
            Column by column, (n_rows, n) -> (new n_rows, n).
        n_rows : int, optional
            Rows of ``fn``'s output (default: unchanged).
        dtype : numpy dtype, optional
            dtype of ``fn``'s output (default: unchanged).
        """
        first = self.transform
        out = VoxelStream.__new__(VoxelStream)
        out.__dict__.update(self.__dict__)
        out.transform = fn if first is _identity else (lambda x: fn(first(x)))
        out.n_rows = self.n_rows if n_rows is None else int(n_rows)
        out.dtype = self.dtype if dtype is None else np.dtype(dtype)
        out.peak_open = (0, 0)
        return out

    def compute(self) -> np.ndarray:
        """The whole (n_rows, V) matrix, filled piece by piece (one pass)."""
        out = np.empty(self.shape, dtype=self.dtype)
        for cols, values in self:
            out[:, cols] = values
        return out

    # ------------------------------------------------------------------ plan
    def plan(self):
        """For each block in stream order: ``(index, where, contributions, finished)``.

        The in-mask voxels of each block are split into groups reached by the same blocks
        (along each axis: the blocks within the kernel's half-width of the voxel; e.g. the
        voxels near a block's low face also need the block below). ``contributions``
        lists ``(group, flat)``: the flat indices of the group's voxels in the block's
        reached region (:func:`lazyconn.ops.spatial.gaussian_spread_block`'s ``targets``;
        the block reaches all of them); ``finished`` the groups whose last contributing
        block this is. A group is held from its first contributing block to its last,
        so a voxel whose neighbourhood lies inside its own block along the slowest axis
        is held for a row of blocks, not two planes. Blocks reaching no in-mask voxel are
        left out (never read). Without smoothing a group is a block's in-mask voxels and
        ``flat`` is the block's mask.
        """
        if self._plan is not None:
            return self._plan
        shape3 = self.arr.shape[:3]
        chunks3 = self.arr.chunks[:3]
        # The plan depends on the mask, the chunks and the kernel only: every subject of a
        # study shares it (~15 ms of GIL-holding Python per subject otherwise).
        key = (
            self.mask.shape,
            hashlib.blake2b(np.packbits(self.mask).tobytes(), digest_size=16).digest(),
            chunks3,
            self.sigmas,
            self.truncate,
        )
        with _PLANS_LOCK:
            cached = _PLANS.get(key)
            if cached is not None:
                _PLANS.move_to_end(key)
        if cached is None:
            cached = self._make_plan(shape3, chunks3)
            with _PLANS_LOCK:
                _PLANS[key] = cached
                while len(_PLANS) > _PLANS_KEPT:
                    _PLANS.popitem(last=False)
        self._plan, self._columns = cached
        return self._plan

    def _make_plan(self, shape3, chunks3):
        """:meth:`plan`'s steps and each group's places on V, computed."""
        starts = [np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in chunks3]
        depth = [0, 0, 0]
        if self.sigmas is not None:
            depth = [spatial.gaussian_halfwidth(s, self.truncate) for s in self.sigmas]
        order = stream_order(len(c) for c in chunks3)
        rank = {idx: r for r, idx in enumerate(order)}
        pos = c_positions(self.mask)
        slices = dict(_block_slices(chunks3))
        steps = {
            idx: (idx, tuple((n, s.start, s.stop) for n, s in zip(shape3, sl, strict=True)))
            for idx, sl in slices.items()
        }
        contributions = {idx: [] for idx in slices}
        finished = {idx: [] for idx in slices}
        columns = []
        for idx, sl in slices.items():
            local = self.mask[sl]
            coords = [c + s.start for c, s in zip(np.nonzero(local), sl, strict=True)]
            if coords[0].size == 0:
                continue
            if self.sigmas is None:
                contributions[idx].append((len(columns), local))
                finished[idx].append(len(columns))
                columns.append(pos[tuple(coords)])
                continue
            # per voxel and axis: the first and last block within the half-width
            span = []
            for c, st, n, d in zip(coords, starts, shape3, depth, strict=True):
                lo = np.searchsorted(st, np.maximum(c - d, 0), side="right") - 1
                hi = np.searchsorted(st, np.minimum(c + d, n - 1), side="right") - 1
                span += [lo, hi]
            dims = [len(c) for c in chunks3 for _ in range(2)]
            codes, group_of = np.unique(np.ravel_multi_index(span, dims), return_inverse=True)
            by_group = np.argsort(group_of.ravel(), kind="stable")  # C order inside a group
            sizes = np.bincount(group_of.ravel(), minlength=codes.size)
            groups = np.split(by_group, np.cumsum(sizes)[:-1])
            for key, members in zip(
                np.stack(np.unravel_index(codes, dims), 1), groups, strict=True
            ):
                gid = len(columns)
                columns.append(pos[tuple(c[members] for c in coords)])
                sources = [range(int(key[2 * a]), int(key[2 * a + 1]) + 1) for a in range(3)]
                for src in itertools.product(*sources):
                    reach = [
                        spatial.spread_range(n, s.start, s.stop, d)
                        for n, s, d in zip(shape3, slices[src], depth, strict=True)
                    ]
                    shape = tuple(r1 - r0 for r0, r1 in reach)
                    at = [c[members] - r0 for c, (r0, _) in zip(coords, reach, strict=True)]
                    flat = np.ravel_multi_index(at[::-1], shape[::-1])
                    contributions[src].append((gid, flat))
                last = tuple(int(key[2 * a + 1]) for a in range(3))
                finished[last].append(gid)
        plan = [
            (*steps[idx], contributions[idx], finished[idx])
            for idx in sorted(slices, key=rank.__getitem__)
            if contributions[idx]
        ]
        return plan, columns

    def _read(self, idx, where, graph) -> np.ndarray:
        """One spatial block, all its volumes (x, y, z, T): through ``reader`` (with
        smoothing) if it reads it, else computed alone from ``graph`` (the array's tasks,
        materialized once per pass): only the block's own tasks, run in this thread. A
        ``compute`` per block spent ~9 ms of the GIL-holding Python per block on dask's
        optimisation and scheduler (~7 % of a seed subject's pass), which two subjects
        streamed on two threads then wait for in turn."""
        if self.reader is not None and self.sigmas is not None:
            block = self.reader(tuple((start, stop) for _, start, stop in where))
            if block is not None:
                return block
        keys = [(self.arr.name, *idx, t) for t in range(self.arr.numblocks[3])]
        parts = [np.asarray(p) for p in dask.core.get(cull(graph, keys)[0], keys)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=3)

    # ------------------------------------------------------------------ pass
    def __iter__(self):
        plan = self.plan()
        n_t = self.arr.shape[3]
        graph = dict(self.arr.__dask_graph__())
        open_, held, peak = {}, 0, (0, 0)
        for idx, where, contributions, finished in plan:
            block = self._read(idx, where, graph)
            if self.sigmas is None:
                ((gid, local),) = contributions
                open_[gid] = block[local]
                held += open_[gid].nbytes
            else:
                into, first = [], []
                for gid, flat in contributions:
                    acc = open_.get(gid)
                    first.append(acc is None)  # its first term is written, not added
                    if acc is None:
                        acc = open_[gid] = np.empty((flat.size, n_t), self.arr.dtype)
                        held += acc.nbytes
                    into.append(acc)
                spatial.gaussian_spread_block(
                    block,
                    self.sigmas,
                    self.truncate,
                    where,
                    [flat for _, flat in contributions],
                    into=into,
                    first=first,
                )
            del block
            peak = (max(peak[0], len(open_)), max(peak[1], held))
            # The groups finished by this block, one at a time: no concatenated copy, and
            # ``transform`` may write into the group's accumulator (the cleaning does).
            for g in finished:
                values = open_.pop(g)
                held -= values.nbytes
                out = self.transform(values.T)
                del values
                yield self._columns[g], out
                del out
        self.peak_open = peak
