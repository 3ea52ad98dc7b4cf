"""Group PCA over the stacked per-subject reductions (nilearn's ``_MultiPCA._raw_fit``)."""

from __future__ import annotations

import numpy as np

from lazyconn.decomposition._base import N_OVERSAMPLES

#: Columns squared at a time by :func:`row_sums_of_squares`.
SQUARES_COLUMNS = 1024


def row_sums_of_squares(data: np.ndarray) -> np.ndarray:
    """``np.sum(data**2, axis=1)`` of a 2-D array, bit for bit, without the array-sized
    ``data**2``: the squares are made ``SQUARES_COLUMNS`` columns at a time.

    For a Fortran-ordered ``data`` (the stacked reductions), numpy sums along axis 1 column
    after column into one running row of sums (the reduced axis is its outer loop, no
    pairwise summation). Each piece's sum starts from the running sums, put in front of
    the piece's squares, so the additions are the same ones in the same order. Other
    layouts are summed as numpy does, in one piece.
    """
    n, v = data.shape
    if not data.flags.f_contiguous or data.flags.c_contiguous or v <= SQUARES_COLUMNS:
        return np.sum(data**2, axis=1)
    sums = _SquareSums(n, data.dtype)
    sums.add(data)
    return sums.result()


class _SquareSums:
    """Running row sums of squares over consecutive column pieces (see
    :func:`row_sums_of_squares`); pieces added in column order, each split in ``columns``
    columns (default ``SQUARES_COLUMNS``)."""

    def __init__(self, n_rows: int, dtype, columns: int | None = None):
        self.columns = SQUARES_COLUMNS if columns is None else int(columns)
        self.buf = np.empty((n_rows, self.columns + 1), dtype=dtype, order="F")
        self.buf[:, 0] = 0  # 0 + x is x: the first piece's sums are its own

    def add(self, columns: np.ndarray) -> None:
        for start in range(0, columns.shape[1], self.columns):
            stop = min(start + self.columns, columns.shape[1])
            piece = self.buf[:, : stop - start + 1]
            np.square(columns[:, start:stop], out=piece[:, 1:])
            self.buf[:, 0] = np.sum(piece, axis=1)

    def result(self) -> np.ndarray:
        return self.buf[:, 0].copy()


def group_pca(data, n_components: int, do_cca: bool, random_state):
    """Leading ``n_components`` voxel-space singular vectors (K, V) of ``data`` (N, V) and
    their singular values, with optional CCA normalisation (rows scaled to unit norm), as
    nilearn: scikit-learn's ``randomized_svd(data.T, transpose=True, n_iter=3,
    random_state=random_state)``. Signs: the largest-magnitude entry of each component is
    positive (scikit-learn's ``svd_flip``).

    In memory (numpy ``data``): that very call (``data`` is divided and multiplied back in
    place, as nilearn does). A :class:`~lazyconn.decomposition._stack.ScratchStack` is
    never held: :func:`streamed_randomized_svd` replays the same algorithm over its column
    blocks.
    """
    if isinstance(data, np.ndarray):
        from sklearn.utils.extmath import randomized_svd

        if do_cca:
            norms = np.sqrt(row_sums_of_squares(data))
            norms[norms == 0] = 1
            data /= norms[:, np.newaxis]
        components, variance, _ = randomized_svd(
            data.T,
            n_components=n_components,
            transpose=True,
            random_state=random_state,
            n_iter=3,
        )
        if do_cca:
            data *= norms[:, np.newaxis]
        return components.T, variance
    return streamed_randomized_svd(data, n_components, do_cca, random_state)


def streamed_randomized_svd(stack, n_components: int, do_cca: bool, random_state, n_iter=3):
    """:func:`group_pca` of a :class:`~lazyconn.decomposition._stack.ScratchStack` (N, V),
    read in column blocks, never whole.

    scikit-learn 1.9's ``randomized_svd(M=data.T, n_components, n_oversamples=10, n_iter,
    power_iteration_normalizer="auto", transpose=True, flip_sign=True)`` step by step, on
    A = data (N, V) (CCA: each row divided by its norm, the norms' squares summed as in
    memory; the division is applied to the small (N, k + 10) factors of each product
    rather than to the stack, which would cost a pass of writes over every block read):
    the same draws from the same generator (the (V, k + 10)
    normal test matrix, cast to float32 for a float32 stack), LU-normalised power
    iterations (``scipy.linalg.lu(permute_l=True)``), the QR of ``A Q``, ``B = Qᵀ A``, the
    SVD of B (gesdd) and ``svd_flip(U, Vt, u_based_decision=False)``. Every product with A
    is summed over the voxel blocks (``A Q`` in float64, then cast to A's dtype, as the
    in-memory product's), so the components agree with the in-memory path's to float
    rounding, and the generator is left where scikit-learn leaves it (the FastICA seeds
    drawn after it are the same). 2 n_iter + 2 reads of the stack (one more for CCA).
    """
    from scipy import linalg
    from sklearn.utils import check_random_state
    from sklearn.utils.extmath import svd_flip

    rng = check_random_state(random_state)
    n, v = stack.shape
    buffer = stack.block_buffer()  # every pass reads into it
    scale = None  # A = diag(scale) · stack
    if do_cca:
        # pieces of SQUARES_COLUMNS as in memory, or of a block when blocks are narrower
        sums = _SquareSums(n, stack.dtype, min(SQUARES_COLUMNS, stack.width))
        for _, _, block in stack.blocks(buffer):
            sums.add(block)
        norms = np.sqrt(sums.result())
        norms[norms == 0] = 1
        scale = 1 / norms.astype(np.float64)
        del sums

    def times(q):  # A Q = diag(scale) (stack Q), (N, s)
        out = np.zeros((n, q.shape[1]))
        for c0, c1, block in stack.blocks(buffer):
            out += block @ q[c0:c1]
        if scale is not None:
            out *= scale[:, np.newaxis]
        return out.astype(stack.dtype, copy=False)

    def transposed_times(q):  # Aᵀ Q = stackᵀ (diag(scale) Q), (V, s)
        if scale is not None:
            q = (q * scale[:, np.newaxis]).astype(q.dtype, copy=False)
        out = np.empty((v, q.shape[1]), dtype=np.result_type(stack.dtype, q.dtype))
        for c0, c1, block in stack.blocks(buffer):
            np.matmul(block.T, q, out=out[c0:c1])
        return out

    q = rng.normal(size=(v, n_components + N_OVERSAMPLES))
    if stack.dtype == np.float32:
        q = q.astype(np.float32, copy=False)
    normalise = n_iter > 2  # "auto": no normalisation up to 2 iterations, else LU
    for _ in range(n_iter):
        for product in (times, transposed_times):
            q = product(q)
            if normalise:
                q = linalg.lu(q, permute_l=True, check_finite=False)[0]
    q = linalg.qr(times(q), mode="economic", check_finite=False)[0]
    b = transposed_times(q).T  # Qᵀ A
    uhat, s, vt = linalg.svd(b, full_matrices=False, lapack_driver="gesdd")
    del b
    u = q @ uhat
    u, vt = svd_flip(u, vt, u_based_decision=False)
    return vt[:n_components], s[:n_components]
