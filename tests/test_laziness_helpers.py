import dask.array as da
import numpy as np
import pytest

from lazyconn.testing.laziness import inaccessible_dask_array, raise_if_dask_computes


def test_raise_if_dask_computes_catches_a_compute():
    x = da.ones((4, 4), chunks=2)
    with (
        pytest.raises(RuntimeError, match="Too many dask computations"),
        raise_if_dask_computes(),
    ):
        x.sum().compute()


def test_inaccessible_array_builds_but_cannot_be_read():
    x = inaccessible_dask_array((6, 5), chunks=(4, 3))
    y = (x * 2).sum(axis=0)  # building is fine
    assert y.shape == (5,)
    with pytest.raises(RuntimeError, match="voxels were read"):
        y.compute()
    assert np.dtype(y.dtype) == np.float32
