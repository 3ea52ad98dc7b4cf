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
    "time_moments",
    "ttest_1samp_block",
    "ttest_1samp_moments",
    "ttest_ind_block",
    "ttest_ind_moments",
]

ALTERNATIVES = ("two-sided", "less", "greater")
NAN_POLICIES = ("propagate", "omit", "raise")

# --------------------------------------------------------------------------- kernels


def moments_block(x: np.ndarray, nan_policy: str = "propagate") -> np.ndarray:
    """Per-voxel ``(n, mean, M2)`` over the last axis of one block, float64, shape (..., 3).

    ``M2`` is the sum of squared deviations from the block mean (two-pass). With
    ``nan_policy="omit"`` NaNs are left out of every moment; with ``"raise"`` a NaN raises
    ValueError (at compute time); with ``"propagate"`` a NaN makes the mean and M2 NaN.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    out = np.empty((*x.shape[:-1], 3), dtype=np.float64)
    if nan_policy == "omit":
        valid = ~np.isnan(x)
        n = valid.sum(axis=-1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(valid, x, 0.0).sum(axis=-1, dtype=np.float64) / n
            dev = np.where(valid, x - mean[..., None], 0.0)
        out[..., 0] = n
        out[..., 1] = np.where(n > 0, mean, 0.0)
        out[..., 2] = np.einsum("...t,...t->...", dev, dev)
        return out
    if nan_policy == "raise" and np.isnan(x).any():
        raise ValueError("The input contains nan values")
    n = x.shape[-1]
    # float64 sums without a float64 copy of the block; the deviations are float64.
    mean = x.sum(axis=-1, dtype=np.float64) / n if n else np.zeros(x.shape[:-1])
    dev = x - mean[..., None]
    out[..., 0] = n
    out[..., 1] = mean
    out[..., 2] = np.einsum("...t,...t->...", dev, dev)
    return out


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


def _blocks_along_last(x: da.Array) -> list[da.Array]:
    lead = (slice(None),) * (x.ndim - 1)
    return [x.blocks[(*lead, i)] for i in range(x.numblocks[-1])]


def time_moments(x: da.Array, nan_policy: str = "propagate") -> da.Array:
    """Lazy per-voxel ``(n, mean, M2)`` over the last axis: shape ``x.shape[:-1] + (3,)``.

    One ``map_blocks`` per block of the last axis (input chunks are read once and never
    rechunked), then a binary tree of :func:`combine_moments` across those blocks.
    """
    lead_chunks = x.chunks[:-1]
    parts = [
        da.map_blocks(
            moments_block,
            part,
            nan_policy,
            chunks=(*lead_chunks, (3,)),
            dtype=np.float64,
            meta=np.empty((0,) * x.ndim, dtype=np.float64),
            token="lazyconn-moments",
        )
        for part in _blocks_along_last(x)
    ]
    while len(parts) > 1:
        merged = [
            da.map_blocks(
                combine_moments,
                a,
                b,
                dtype=np.float64,
                meta=np.empty((0,) * x.ndim, dtype=np.float64),
                token="lazyconn-moments-combine",
            )
            for a, b in zip(parts[0::2], parts[1::2], strict=False)
        ]
        if len(parts) % 2:
            merged.append(parts[-1])
        parts = merged
    return parts[0]


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
