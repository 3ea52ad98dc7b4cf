"""Truncated SVD of a run's (T, V) matrix through its (T, T) Gram matrix, chunk by chunk.

A run is short in time (T ~ 100-1200) and wide in space (V ~ 10^4-10^5 voxels), and its
chunks hold the whole time axis for a block of voxels. The top singular vectors are then
cheapest through the small Gram matrix ``G = X Xᵀ``, a sum of per-chunk products:

1. ``G = Σ_c X_c X_cᵀ`` (float64), a tree reduction over the voxel chunks (pass 1);
2. a (k, T) coefficient matrix ``C`` from ``G`` alone (milliseconds): the leading
   eigenvectors of ``G`` (:func:`top_eigenvectors`, the exact SVD), or scikit-learn's
   randomized SVD replayed in T-space (:func:`randomized_coefficients`);
3. ``B = C X`` (k x V), again chunk by chunk (pass 2).

With the exact ``C`` the rows of ``B`` are the voxel-space singular vectors scaled by their
singular values, ``B = S_k V_kᵀ``: what nilearn's per-subject reduction keeps (``S · Uᵀ`` of
the SVD of ``Xᵀ``). With the randomized ``C``, ``B`` is what scikit-learn's
``randomized_svd(Xᵀ, ...)`` gives for the same random test matrix. The signs follow
scikit-learn's ``svd_flip`` (in each row the entry of largest magnitude is positive).
Nothing here computes: the functions return dask arrays (the caller chooses one graph,
which keeps ``X``'s chunks alive between the two products, or two computes, which read
``X`` twice and never hold it). :class:`GramAccumulator` and :func:`project_columns` are
the same sums on numpy pieces of columns, for runs streamed block by block
(:class:`lazyconn.ops.voxels.VoxelStream`).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import linalg


def gram(x: da.Array) -> da.Array:
    """Lazy ``X Xᵀ`` (T, T) in float64 of a lazy (T, V) array, summed over voxel chunks."""
    xf = x.astype(np.float64)
    return xf @ xf.T


#: Bytes of the float64 copy of a piece of columns in :class:`GramAccumulator` and
#: :func:`project_columns`: one buffer reused piece after piece (a float64 copy of a whole
#: group of a stream's columns was up to ~15 MB, page-faulted anew for every group).
PIECE_BYTES = 2 << 20


def piece_buffer(n_rows: int) -> np.ndarray:
    """The float64 buffer (T, n) of :func:`_float64_pieces`, Fortran order, of about
    :data:`PIECE_BYTES`.

    Parameters
    ----------
    n_rows : int
        T, the rows of the pieces.
    """
    step = max(1, PIECE_BYTES // max(1, 8 * int(n_rows)))
    return np.empty((int(n_rows), step), order="F")


def _float64_pieces(columns: np.ndarray, buffer: np.ndarray):
    """``(c0, piece)``: the columns ``c0:c0 + n`` of ``columns`` (T, N) as float64 (T, n),
    copied into ``buffer`` (:func:`piece_buffer`) piece after piece, or all at once as
    they are when they already are float64."""
    if columns.dtype == np.float64:
        yield 0, columns
        return
    step = buffer.shape[1]
    for c0 in range(0, columns.shape[1], step):
        piece = buffer[:, : min(step, columns.shape[1] - c0)]
        np.copyto(piece, columns[:, c0 : c0 + step], casting="unsafe")  # asarray's cast
        yield c0, piece


class GramAccumulator:
    """``X Xᵀ`` (T, T) in float64 of a run given as pieces of its columns (numpy), summed
    in place. What :func:`gram` sums over chunks, for runs that are streamed.

    Each piece's product is numpy's ``a @ a.T``, which BLAS computes as a ``syrk`` (one
    triangle, half a product's work, mirrored by numpy) with the GIL released: scipy's
    f2py ``blas.dsyrk`` holds the GIL while BLAS runs, which serialised the subjects
    streamed on dask's threads (~37 % of the GIL held during a seed study's reductions).
    Columns are copied to float64 into one buffer of :data:`PIECE_BYTES`, filled across
    calls and multiplied when full (and by :meth:`result`): the products are the same
    whatever the pieces the columns come in (a stream's voxel groups, some of a few
    voxels).

    Parameters
    ----------
    n_rows : int
        T, the rows of the pieces.
    """

    def __init__(self, n_rows: int):
        self._g = np.zeros((int(n_rows), int(n_rows)))
        self._product = np.empty_like(self._g)
        self._buffer = piece_buffer(n_rows)
        self._filled = 0

    def add(self, columns: np.ndarray) -> None:
        """Add ``columns`` (T, n) times its transpose.

        Parameters
        ----------
        columns : numpy.ndarray, shape (T, n)
        """
        columns = np.asarray(columns)
        step, n, c0 = self._buffer.shape[1], columns.shape[1], 0
        while c0 < n:
            take = min(step - self._filled, n - c0)
            into = self._buffer[:, self._filled : self._filled + take]
            np.copyto(into, columns[:, c0 : c0 + take], casting="unsafe")  # asarray's cast
            self._filled += take
            c0 += take
            if self._filled == step:
                self._flush()

    def _flush(self) -> None:
        if self._filled:
            a = self._buffer[:, : self._filled]
            self._g += np.matmul(a, a.T, out=self._product)
            self._filled = 0

    def result(self) -> np.ndarray:
        """The symmetric (T, T) sum."""
        self._flush()
        return self._g


def project_columns(c: np.ndarray, columns: np.ndarray, buffer=None) -> np.ndarray:
    """``C X`` (k, n) in float64 of numpy columns ``X`` (T, n), in pieces of columns (the
    float64 copy of one piece of :data:`PIECE_BYTES` at a time): what :func:`project`
    computes per chunk.

    Parameters
    ----------
    c : numpy.ndarray, shape (k, T)
    columns : numpy.ndarray, shape (T, n)
    buffer : numpy.ndarray, optional
        The float64 piece buffer, from :func:`piece_buffer` ``(T)``, to reuse over calls
        (default: a new one).
    """
    columns = np.asarray(columns)
    n = columns.shape[1]
    out = np.empty((c.shape[0], n))
    if buffer is None:
        buffer = piece_buffer(columns.shape[0])
    for c0, piece in _float64_pieces(columns, buffer):
        np.matmul(c, piece, out=out[:, c0 : c0 + piece.shape[1]])
    return out


def top_eigenvectors(g: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_components`` leading eigenvectors (T, k) of a symmetric PSD ``g`` and their
    eigenvalues (k,), largest first (negative rounding-level eigenvalues clipped to 0)."""
    g = np.asarray(g, dtype=np.float64)
    n = g.shape[0]
    k = int(min(n_components, n))
    w, u = linalg.eigh(g, subset_by_index=[n - k, n - 1])
    order = np.argsort(w)[::-1]
    return u[:, order], np.clip(w[order], 0, None)


def randomized_coefficients(
    g: np.ndarray, omega: np.ndarray, n_components: int, n_iter: int
) -> np.ndarray:
    """(k, T) ``C`` such that ``C X`` equals ``randomized_svd(Xᵀ, k, n_iter=n_iter)``'s kept
    rows ``(U_k S_k)ᵀ`` (before signs), from the Gram matrix ``g = X Xᵀ`` (T, T) alone.

    scikit-learn's range finder on ``M = Xᵀ`` (V, T; not transposed as V > T) starts from
    ``Ω`` (T, l), alternates ``M Q`` and ``Mᵀ Q`` with LU normalisations and ends with
    ``Q = qr(M Q)``: in exact arithmetic ``range(Q) = range(Xᵀ Gⁿ Ω)``, which only needs
    ``G`` (the normalisations change the basis, not the range; here each step is
    re-orthonormalised in T-space with a QR, which is stabler). With ``A`` an orthonormal
    basis of ``range(Gⁿ Ω)`` and ``AᵀGA = W Λ Wᵀ``, ``Q = Xᵀ A W Λ^{-1/2}`` is
    orthonormal, ``B = QᵀM = Λ^{-1/2} Wᵀ Aᵀ G`` (l, T), ``B = Û s Vᵀ``, and scikit-learn's
    ``U = Q Û``, so ``(U_k s_k)ᵀ = (A W Λ^{-1/2} Û_k s_k)ᵀ X``. Directions of ``AᵀGA`` at
    rounding level (a rank-deficient run) are dropped; missing rows are zero.
    """
    g = np.asarray(g, dtype=np.float64)
    t = g.shape[0]
    k = int(min(n_components, t))
    a = np.asarray(omega, dtype=np.float64)
    for _ in range(n_iter):
        a, _ = linalg.qr(g @ a, mode="economic")
    if n_iter == 0:
        a, _ = linalg.qr(a, mode="economic")
    lam, w = linalg.eigh(a.T @ g @ a)
    top = lam.max(initial=0.0)
    keep = lam > top * 1e-12 if top > 0 else np.zeros(lam.shape, bool)
    basis = a @ (w[:, keep] / np.sqrt(lam[keep]))  # Q = Xᵀ basis, orthonormal
    c = np.zeros((k, t))
    if basis.shape[1]:
        u_hat, s, _ = linalg.svd(basis.T @ g, full_matrices=False)
        m = min(k, len(s))
        c[:m] = ((basis @ u_hat[:, :m]) * s[:m]).T
    return c


def project(c: np.ndarray, x: da.Array) -> da.Array:
    """Lazy ``C X`` (k, V) in float64: the run's rows combined with the (k, T) weights ``c``
    (``c = uᵀ`` for eigenvectors ``u``: the rows rotated onto ``u``'s time courses)."""
    return da.from_array(np.ascontiguousarray(c), chunks=-1) @ x.astype(np.float64)


def flip_rows(b: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude entry of each row positive (scikit-learn's ``svd_flip``
    on voxel-space vectors), in place; returns ``b``."""
    if b.size:
        idx = np.argmax(np.abs(b), axis=1)
        signs = np.sign(b[np.arange(b.shape[0]), idx])
        signs[signs == 0] = 1
        b *= signs[:, None]
    return b
