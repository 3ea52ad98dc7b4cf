"""Shared fixtures. Fixtures of one area live in lazyconn/testing/ and are registered here."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

pytest_plugins = [
    "lazyconn.testing.cluster",
    "lazyconn.testing.group",
    "lazyconn.testing.imaging",
    "lazyconn.testing.s3",
    "lazyconn.testing.storage",
    "lazyconn.testing.datasets",
]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def affine():
    """A non-trivial affine: 3 mm voxels, a translation, unequal to the identity."""
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = [-10.0, -12.0, -9.0]
    return aff


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """dask already runs one task per core; a multi-threaded BLAS under it only oversubscribes
    (tiny matrix inverses took milliseconds instead of microseconds on 2 cores)."""
    with threadpool_limits(limits=1):
        yield
