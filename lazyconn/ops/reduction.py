"""Truncated SVD of a run's (T, V) matrix through its (T, T) Gram matrix, chunk by chunk.

A run is short in time (T ~ 100-1200) and wide in space (V ~ 10^4-10^5 voxels), and its
chunks hold the whole time axis for a block of voxels. The top singular vectors are then
cheapest through the small Gram matrix ``G = X Xᵀ``, a sum of per-chunk products:

1. ``G = Σ_c X_c X_cᵀ`` (float64), a tree reduction over the voxel chunks (pass 1);
2. ``G = U Λ Uᵀ`` (``scipy.linalg.eigh``, T x T, milliseconds);
3. ``B = U_kᵀ X`` (k x V), again chunk by chunk (pass 2): the rows of ``B`` are the voxel-space
   singular vectors scaled by their singular values, ``B = S_k V_kᵀ``.

``B`` is exactly what nilearn's per-subject reduction keeps (``S · Uᵀ`` of the SVD of ``Xᵀ``);
the signs follow scikit-learn's ``svd_flip`` (in each row the entry of largest magnitude is
positive). Nothing here computes: the functions return dask arrays (the caller chooses one
graph, which keeps ``X``'s chunks alive between the two products, or two computes, which
read ``X`` twice and never hold it).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import linalg


def gram(x: da.Array) -> da.Array:
    """Lazy ``X Xᵀ`` (T, T) in float64 of a lazy (T, V) array, summed over voxel chunks."""
    xf = x.astype(np.float64)
    return xf @ xf.T


def top_eigenvectors(g: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_components`` leading eigenvectors (T, k) of a symmetric PSD ``g`` and their
    eigenvalues (k,), largest first (negative rounding-level eigenvalues clipped to 0)."""
    g = np.asarray(g, dtype=np.float64)
    n = g.shape[0]
    k = int(min(n_components, n))
    w, u = linalg.eigh(g, subset_by_index=[n - k, n - 1])
    order = np.argsort(w)[::-1]
    return u[:, order], np.clip(w[order], 0, None)


def project(u: np.ndarray, x: da.Array) -> da.Array:
    """Lazy ``uᵀ X`` (k, V) in float64: the run's rows rotated onto ``u``'s time courses."""
    return da.from_array(np.ascontiguousarray(u.T), chunks=-1) @ x.astype(np.float64)


def flip_rows(b: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude entry of each row positive (scikit-learn's ``svd_flip``
    on voxel-space vectors), in place; returns ``b``."""
    if b.size:
        idx = np.argmax(np.abs(b), axis=1)
        signs = np.sign(b[np.arange(b.shape[0]), idx])
        signs[signs == 0] = 1
        b *= signs[:, None]
    return b
