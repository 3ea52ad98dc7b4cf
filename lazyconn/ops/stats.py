"""Voxelwise t-tests as reductions over the last (time) axis, chunk by chunk.

Kernels (pure numpy/scipy on one block) compute per-voxel moments ``(n, mean, M2)`` in
float64 with a two-pass formula inside a block; blocks along the reduced axis are merged
with Chan et al.'s pairwise update, which is as stable as a two-pass over the whole axis.
The finishing kernels follow scipy 1.17 ``ttest_ind`` / ``ttest_1samp`` formula by formula
(``_equal_var_ttest_denom``, ``_unequal_var_ttest_denom``, ``_get_pvalue`` with
``special.stdtr``), so the results equal scipy's on the same data in float64.

The graph builders only choose blocks: one ``map_blocks`` per block of the reduced axis
(no rechunking, each input chunk read once), a binary tree of merges across those blocks,
and one finishing ``map_blocks``.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import special

__all__ = [
    "ALTERNATIVES",
    "NAN_POLICIES",
    "combine_moments",
    "moments_block",
    "selection",
    "selection_moments_block",
    "time_moments",
    "ttest_1samp_block",
    "ttest_1samp_moments",
    "ttest_ind_block",
    "ttest_ind_moments",
    "ttest_ind_selections",
]

ALTERNATIVES = ("two-sided", "less", "greater")
NAN_POLICIES = ("propagate", "omit", "raise")

# --------------------------------------------------------------------------- kernels


def _as_rows(x: np.ndarray):
    """A block ``(..., T)`` as a ``(T, V)`` array of volumes, and how to shape results back.

    A store's block is F-ordered (time slowest in memory): its ``(T, V)`` view is
    C-contiguous, so one volume is one contiguous row and a selection of volumes is a row
    gather. Other layouts are viewed (or copied) the same way.
    """
    lead, n_t = x.shape[:-1], x.shape[-1]
    n_v = int(np.prod(lead, dtype=np.int64))
    if x.flags.f_contiguous:
        rows = x.T.reshape(n_t, n_v)

        def back(r):
            r = r.reshape(lead[::-1] + r.shape[1:])
            k = len(lead)
            return r.transpose(*range(k - 1, -1, -1), *range(k, r.ndim))

        return rows, back
    return x.reshape(n_v, n_t).T, lambda r: r.reshape(lead + r.shape[1:])


def _row_moments(rows: np.ndarray, nan_policy: str) -> np.ndarray:
    """``(n, mean, M2)`` per column of ``(n, V)`` rows, float64, shape (V, 3).

    Two-pass in float64 on the deviations from a per-voxel shift (the first finite value),
    so a large common offset costs no digits; ``M2`` is the sum of squared deviations from
    the mean. Column by column the arithmetic is scipy's (mean, then deviations).
    """
    n, n_v = rows.shape
    out = np.zeros((n_v, 3), dtype=np.float64)
    if n == 0:
        return out
    if nan_policy == "omit":
        valid = ~np.isnan(rows)
        count = valid.sum(axis=0)
        shift = rows[valid.argmax(axis=0), np.arange(n_v)].astype(np.float64)
    else:
        if nan_policy == "raise" and np.isnan(rows).any():
            raise ValueError("The input contains nan values")
        valid, count = None, n
        shift = rows[0].astype(np.float64)
    shift[~np.isfinite(shift)] = 0.0
    # One float64 buffer, updated in place: a cast-and-subtract pass, then row sums.
    dev = np.subtract(rows, shift, dtype=np.float64)
    if valid is not None:
        dev[~valid] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_dev = np.add.reduce(dev, axis=0) / count
    if valid is not None:
        mean_dev[count == 0] = 0.0
    dev -= mean_dev
    if valid is not None:
        dev[~valid] = 0.0
    np.multiply(dev, dev, out=dev)
    out[:, 0] = count
    out[:, 1] = shift + mean_dev
    out[:, 2] = np.add.reduce(dev, axis=0)
    return out


def _float_block(x) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def moments_block(x: np.ndarray, nan_policy: str = "propagate") -> np.ndarray:
    """Per-voxel ``(n, mean, M2)`` over the last axis of one block, float64, shape (..., 3).

    ``M2`` is the sum of squared deviations from the block mean (two-pass). With
    ``nan_policy="omit"`` NaNs are left out of every moment; with ``"raise"`` a NaN raises
    ValueError (at compute time); with ``"propagate"`` a NaN makes the mean and M2 NaN.
    """
    rows, back = _as_rows(_float_block(x))
    return back(_row_moments(rows, nan_policy))


def selection_moments_block(
    x: np.ndarray, selections, nan_policy: str = "propagate"
) -> np.ndarray:
    """:func:`moments_block` of several selections of volumes of one block: (..., k, 3).

    ``selections`` holds one array of volume indices (into this block's last axis) per
    selection. Each selection's volumes are gathered as rows of the block's ``(T, V)``
    view (contiguous rows for a store's block), not as a fancy-indexed copy of the block.
    """
    rows, back = _as_rows(_float_block(x))
    parts = [_row_moments(rows[np.asarray(idx, dtype=np.intp)], nan_policy) for idx in selections]
    return back(np.stack(parts, axis=1))


def combine_moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge two ``(n, mean, M2)`` blocks (Chan, Golub & LeVeque's pairwise update)."""
    na, nb = a[..., 0], b[..., 0]
    n = na + nb
    delta = b[..., 1] - a[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        wb = np.where(n > 0, nb / n, 0.0)
        mean = a[..., 1] + delta * wb
        m2 = a[..., 2] + b[..., 2] + delta * delta * na * wb
    out = np.empty_like(a)
    out[..., 0] = n
    out[..., 1] = mean
    out[..., 2] = m2
    return out


def _variance(moments: np.ndarray) -> np.ndarray:
    n, m2 = moments[..., 0], moments[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return m2 / (n - 1.0)


def _mean(moments: np.ndarray) -> np.ndarray:
    # scipy's mean of an empty slice is NaN.
    return np.where(moments[..., 0] > 0, moments[..., 1], np.nan)


def _pvalue(t: np.ndarray, df: np.ndarray, alternative: str) -> np.ndarray:
    """scipy's ``_get_pvalue`` for the Student t distribution (``special.stdtr``)."""
    if alternative == "less":
        return special.stdtr(df, t)
    if alternative == "greater":
        return special.stdtr(df, -t)
    return 2 * special.stdtr(df, -np.abs(t))


def _finish(t, df, alternative):
    out = np.empty((*t.shape, 3), dtype=np.float64)
    out[..., 0] = t
    out[..., 1] = _pvalue(t, df, alternative)
    out[..., 2] = df
    return out


def ttest_ind_block(
    ma: np.ndarray, mb: np.ndarray, equal_var: bool = True, alternative: str = "two-sided"
) -> np.ndarray:
    """``(t, p, df)`` (shape (..., 3)) of scipy's ``ttest_ind`` from two moment blocks."""
    n1, n2 = ma[..., 0], mb[..., 0]
    v1, v2 = _variance(ma), _variance(mb)
    with np.errstate(invalid="ignore", divide="ignore"):
        if equal_var:
            # scipy: a sample of one observation contributes no variance.
            v1 = np.where(n1 == 1, 0.0, v1)
            v2 = np.where(n2 == 1, 0.0, v2)
            df = n1 + n2 - 2.0
            svar = ((n1 - 1) * v1 + (n2 - 1) * v2) / df
            denom = np.sqrt(svar * (1.0 / n1 + 1.0 / n2))
        else:
            vn1, vn2 = v1 / n1, v2 / n2
            df = (vn1 + vn2) ** 2 / (vn1**2 / (n1 - 1) + vn2**2 / (n2 - 1))
            df = np.where(np.isnan(df), 1.0, df)
            denom = np.sqrt(vn1 + vn2)
        t = (_mean(ma) - _mean(mb)) / denom
    # scipy returns NaN everywhere for an empty sample or a propagated NaN.
    undefined = np.isnan(_mean(ma)) | np.isnan(_mean(mb))
    t = np.where(undefined, np.nan, t)
    out = _finish(t, df, alternative)
    out[..., 2] = np.where(undefined, np.nan, out[..., 2])
    return out


def ttest_1samp_block(
    m: np.ndarray, popmean: np.ndarray | float = 0.0, alternative: str = "two-sided"
) -> np.ndarray:
    """``(t, p, df)`` (shape (..., 3)) of scipy's ``ttest_1samp`` from a moment block."""
    n = m[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = np.sqrt(_variance(m) / n)
        t = (_mean(m) - popmean) / denom
    df = np.where(np.isnan(_mean(m)), np.nan, n - 1.0)
    return _finish(t, df, alternative)


def _ttest_1samp_array_block(m, popmean, alternative):
    return ttest_1samp_block(m, popmean[..., 0], alternative)


# --------------------------------------------------------------------------- graphs


def _merge_tree(parts: list[da.Array]) -> da.Array:
    """A binary tree of :func:`combine_moments` over moment arrays of one shape."""
    while len(parts) > 1:
        merged = [
            da.map_blocks(
                combine_moments,
                a,
                b,
                dtype=np.float64,
                meta=np.empty((0,) * a.ndim, dtype=np.float64),
                token="lazyconn-moments-combine",
            )
            for a, b in zip(parts[0::2], parts[1::2], strict=False)
        ]
        if len(parts) % 2:
            merged.append(parts[-1])
        parts = merged
    return parts[0]


def time_moments(x: da.Array, nan_policy: str = "propagate", selections=None) -> da.Array:
    """Lazy per-voxel ``(n, mean, M2)`` over the last axis.

    Without ``selections``: over every volume, shape ``x.shape[:-1] + (3,)``. With
    ``selections`` (a sequence of k 1-D arrays of indices into the last axis, in range):
    the moments of each selection's volumes, shape ``x.shape[:-1] + (k, 3)``, all from one
    task per chunk (:func:`selection_moments_block`): each chunk is read once for every
    selection, and blocks of the last axis that no selection uses are not read.

    One ``map_blocks`` per block of the last axis (input chunks are never rechunked), then
    a binary tree of :func:`combine_moments` across those blocks. With one block along the
    last axis the whole chain is blockwise, so dask fuses the read, the moments and what
    follows into one task per chunk.
    """
    lead_chunks = x.chunks[:-1]
    meta_ndim = x.ndim if selections is None else x.ndim + 1
    meta = np.empty((0,) * meta_ndim, dtype=np.float64)
    if selections is not None:
        selections = [np.asarray(s, dtype=np.intp).ravel() for s in selections]
        tail = ((len(selections),), (3,))
    else:
        tail = ((3,),)
    lead = (slice(None),) * (x.ndim - 1)
    bounds = np.cumsum((0, *x.chunks[-1]))
    parts = []
    for i in range(x.numblocks[-1]):
        part = x if x.numblocks[-1] == 1 else x.blocks[(*lead, i)]
        if selections is None:
            kernel, args = moments_block, (nan_policy,)
        else:
            lo, hi = bounds[i], bounds[i + 1]
            local = [s[(s >= lo) & (s < hi)] - lo for s in selections]
            if not any(len(s) for s in local):
                continue  # no selected volume in this block: it is not read
            kernel, args = selection_moments_block, (local, nan_policy)
        parts.append(
            da.map_blocks(
                kernel,
                part,
                *args,
                chunks=(*lead_chunks, *tail),
                new_axis=None if selections is None else x.ndim,
                dtype=np.float64,
                meta=meta,
                token="lazyconn-moments",
            )
        )
    if not parts:
        shape = (*x.shape[:-1], len(selections), 3)
        return da.zeros(shape, chunks=(*lead_chunks, *tail), dtype=np.float64)
    return _merge_tree(parts)


def _selection_block(m: np.ndarray, i: int) -> np.ndarray:
    return m[..., i, :]


def selection(m: da.Array, i: int) -> da.Array:
    """The moments ``(..., 3)`` of selection ``i`` of :func:`time_moments`'s ``(..., k, 3)``.

    Blockwise (fused with the moments' task), unlike slicing.
    """
    return da.map_blocks(
        _selection_block,
        m,
        i,
        drop_axis=m.ndim - 2,
        dtype=np.float64,
        meta=np.empty((0,) * (m.ndim - 1), dtype=np.float64),
        token="lazyconn-moments-selection",
    )


def _split_result(out: da.Array):
    return out[..., 0], out[..., 1], out[..., 2]


def ttest_ind_moments(ma: da.Array, mb: da.Array, equal_var: bool, alternative: str):
    """Lazy ``(t, p, df)`` float64 arrays from two lazy moment arrays (:func:`time_moments`)."""
    out = da.map_blocks(
        ttest_ind_block,
        ma,
        mb,
        equal_var,
        alternative,
        dtype=np.float64,
        meta=np.empty((0,) * ma.ndim, dtype=np.float64),
        token="lazyconn-ttest-ind",
    )
    return _split_result(out)


def _ttest_ind_pair_block(m, equal_var, alternative):
    return ttest_ind_block(m[..., 0, :], m[..., 1, :], equal_var, alternative)


def ttest_ind_selections(m: da.Array, equal_var: bool, alternative: str):
    """:func:`ttest_ind_moments` of the two selections of :func:`time_moments` ``(..., 2, 3)``.

    One blockwise step after the moments (a chain dask fuses into the moments' task).
    """
    out = da.map_blocks(
        _ttest_ind_pair_block,
        m,
        equal_var,
        alternative,
        drop_axis=m.ndim - 2,
        dtype=np.float64,
        meta=np.empty((0,) * (m.ndim - 1), dtype=np.float64),
        token="lazyconn-ttest-ind",
    )
    return _split_result(out)


def ttest_1samp_moments(m: da.Array, popmean, alternative: str):
    """Lazy ``(t, p, df)`` float64 arrays from a lazy moment array and ``popmean``.

    ``popmean`` is a scalar or a dask array of the result's shape.
    """
    if isinstance(popmean, da.Array):
        out = da.map_blocks(
            _ttest_1samp_array_block,
            m,
            popmean[..., None],
            alternative,
            dtype=np.float64,
            meta=np.empty((0,) * m.ndim, dtype=np.float64),
            token="lazyconn-ttest-1samp",
        )
    else:
        out = da.map_blocks(
            ttest_1samp_block,
            m,
            popmean,
            alternative,
            dtype=np.float64,
            meta=np.empty((0,) * m.ndim, dtype=np.float64),
            token="lazyconn-ttest-1samp",
        )
    return _split_result(out)
