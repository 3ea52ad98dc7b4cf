"""Group PCA over the stacked per-subject reductions (nilearn's ``_MultiPCA._raw_fit``)."""

from __future__ import annotations

import numpy as np

from lazyconn.ops.reduction import flip_rows

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
    buf = np.empty((n, SQUARES_COLUMNS + 1), dtype=data.dtype, order="F")
    buf[:, 0] = 0  # 0 + x is x: the first piece's sums are its own
    for start in range(0, v, SQUARES_COLUMNS):
        stop = min(start + SQUARES_COLUMNS, v)
        piece = buf[:, : stop - start + 1]
        np.square(data[:, start:stop], out=piece[:, 1:])
        buf[:, 0] = np.sum(piece, axis=1)
    return buf[:, 0].copy()


def _seed(random_state):
    """An integer seed for dask from an int / None / RandomState (drawn once)."""
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return random_state
    return int(random_state.randint(np.iinfo(np.int32).max))


def group_pca(data, n_components: int, do_cca: bool, random_state):
    """Leading ``n_components`` voxel-space singular vectors (K, V) of ``data`` (N, V) and
    their singular values, with optional CCA normalisation (rows scaled to unit norm).

    In memory (numpy ``data``): scikit-learn's ``randomized_svd(data.T, transpose=True,
    n_iter=3, random_state=random_state)`` exactly as nilearn (``data`` is divided and
    multiplied back in place, as nilearn does). Out of core (dask ``data``, a Zarr array):
    ``dask.array.linalg.svd_compressed`` with 3 power iterations (10 oversamples, as
    scikit-learn), which reads the stack a few times and never holds it; its random test
    matrix differs from scikit-learn's, so the components agree up to the accuracy of the
    randomized SVD, not bit for bit. Signs: the largest-magnitude entry of each component
    is positive (scikit-learn's ``svd_flip``).
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
    import dask
    import dask.array as da

    x = data
    if do_cca:
        norms = da.sqrt((x.astype(np.float64) ** 2).sum(axis=1))
        norms = da.where(norms == 0, 1, norms)
        x = (x / norms[:, None]).astype(data.dtype)
    _, s, v = da.linalg.svd_compressed(
        x, n_components, n_power_iter=3, n_oversamples=10, seed=_seed(random_state)
    )
    s, v = dask.compute(s, v)
    return flip_rows(np.asarray(v)), np.asarray(s)
