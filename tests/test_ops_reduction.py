"""The per-run reduction kernel (Gram matrix -> eigh -> projection) against scipy's SVD."""

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
from scipy import linalg
from sklearn.utils.extmath import svd_flip

from lazyconn.decomposition._base import reduce_run
from lazyconn.ops.reduction import flip_rows, gram, project, top_eigenvectors
from lazyconn.testing.laziness import raise_if_dask_computes


def _reference(x, k):
    """nilearn's exact path: SVD of Xᵀ, svd_flip, S · Uᵀ."""
    u, s, vt = linalg.svd(x.T.astype(np.float64), full_matrices=False)
    u, vt = svd_flip(u, vt)
    return (u[:, :k] * s[:k]).T


@pytest.fixture
def run(rng):
    t, v = 23, 301
    signal = rng.standard_normal((t, 4)) @ rng.standard_normal((4, v)) * 3
    return (signal + rng.standard_normal((t, v))).astype(np.float32)


@pytest.mark.parametrize(
    "chunks", [((23,), (301,)), ((23,), (40, 7, 150, 104)), ((10, 13), (99, 202))]
)
@pytest.mark.parametrize("keep_bytes", [0, 2**30])
def test_reduce_run_equals_exact_svd(run, chunks, keep_bytes):
    x = da.from_array(run, chunks=chunks)
    got = reduce_run(x, 5, keep_bytes)
    assert got.dtype == np.float32 and got.shape == (5, 301)
    np.testing.assert_allclose(got, _reference(run, 5), rtol=1e-4, atol=1e-4)


def test_kernels_are_lazy(run):
    x = da.from_array(run, chunks=(23, 50))
    with raise_if_dask_computes():
        g = gram(x)
        b = project(np.eye(23)[:3], x)
    np.testing.assert_allclose(g.compute(), run.astype(np.float64) @ run.T.astype(np.float64))
    np.testing.assert_allclose(b.compute(), run[:3], rtol=1e-6)


def test_top_eigenvectors_order_and_clip():
    g = np.diag([1.0, 5.0, -1e-12, 3.0])
    u, w = top_eigenvectors(g, 3)
    np.testing.assert_allclose(w, [5.0, 3.0, 1.0])
    np.testing.assert_allclose(np.abs(u[[1, 3, 0], [0, 1, 2]]), 1.0)
    assert top_eigenvectors(np.zeros((2, 2)), 5)[1].tolist() == [0.0, 0.0]


def test_flip_rows_makes_the_largest_entry_positive():
    b = np.array([[1.0, -3.0, 2.0], [0.0, 0.0, 0.0], [4.0, -1.0, 0.0]])
    np.testing.assert_array_equal(flip_rows(b), [[-1, 3, -2], [0, 0, 0], [4, -1, 0]])


class _PeakChunks(Callback):
    """Counts the chunk-shaped arrays alive at once in the local scheduler's cache."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.peak = shape, 0

    def _posttask(self, key, result, dsk, state, worker_id):
        alive = sum(1 for v in state["cache"].values() if getattr(v, "shape", None) == self.shape)
        self.peak = max(self.peak, alive)


def test_a_long_run_is_read_twice_and_never_held_whole(rng):
    """keep_bytes below the run's size: two passes, a few chunks alive at a time."""
    n_chunks, reads = 24, []
    data = rng.standard_normal((30, 24 * 20)).astype(np.float32)

    def read(block_info=None):  # a task per chunk, as reading a file
        reads.append(1)
        (t0, t1), (v0, v1) = block_info[None]["array-location"]
        return data[t0:t1, v0:v1].copy()

    x = da.map_blocks(read, chunks=((30,), (20,) * n_chunks), meta=np.empty((0, 0), np.float32))
    with dask.config.set(scheduler="sync"), _PeakChunks((30, 20)) as cb:
        got = reduce_run(x, 3, keep_bytes=0)
    assert len(reads) == 2 * n_chunks  # two passes
    assert cb.peak <= 4  # never the whole run (24 chunks)
    np.testing.assert_allclose(got, _reference(data, 3), rtol=1e-4, atol=1e-4)
    reads.clear()
    with dask.config.set(scheduler="sync"), _PeakChunks((30, 20)) as cb:
        reduce_run(x, 3, keep_bytes=2**30)
    assert len(reads) == n_chunks  # a short run: read once, kept
    assert cb.peak >= n_chunks
