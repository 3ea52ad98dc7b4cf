"""Synthetic images and fixtures for image / masking / resampling tests.

Small shapes with unequal dimensions, each with a chunking that gives at least two uneven
chunks per spatial axis, and a planted "brain" (a bright ellipsoid) so EPI masks are
meaningful.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lazyconn.image import LazyImage, load
from lazyconn.testing.laziness import inaccessible_dask_array

#: shape -> uneven chunks (>= 2 uneven chunks per spatial axis, whole time axis).
UNEVEN_CHUNKS = {
    (7, 8, 9, 20): ((3, 4), (5, 3), (2, 4, 3), (20,)),
    (13, 11, 12, 15): ((5, 8), (4, 7), (3, 4, 5), (15,)),
}


def grid_affine() -> np.ndarray:
    """3 mm voxels and a translation (like conftest's ``affine`` fixture)."""
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = [-10.0, -12.0, -9.0]
    return aff


def brain_blob(shape3, fraction: float = 0.35) -> np.ndarray:
    """Boolean ellipsoid centred in the box, radii = ``fraction`` x the box size."""
    idx = np.indices(shape3, dtype=np.float64)
    centre = (np.asarray(shape3, dtype=np.float64) - 1) / 2
    radii = fraction * np.asarray(shape3, dtype=np.float64)
    return (((idx - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1


def synthetic_epi(shape, rng, affine=None, dtype=np.float32) -> nib.Nifti1Image:
    """A 4-D run: noise + 100 inside a planted brain blob, a slow drift, float32 by default."""
    affine = grid_affine() if affine is None else affine
    data = rng.standard_normal(shape)
    data[brain_blob(shape[:3])] += 100.0
    if len(shape) == 4:
        data += 0.5 * np.sin(np.linspace(0, 3, shape[3]))
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.header.set_zooms(tuple(np.sqrt((affine[:3, :3] ** 2).sum(0))) + (2.0,) * (len(shape) - 3))
    return img


def lazy_uneven(img: nib.Nifti1Image) -> LazyImage:
    """``load`` with the uneven chunking of its shape (3-D images: the spatial part)."""
    chunks = UNEVEN_CHUNKS[_key(img.shape)][:3] + tuple((n,) for n in img.shape[3:])
    return load(img, chunks=chunks)


def _key(shape):
    for key in UNEVEN_CHUNKS:
        if tuple(shape[:3]) == key[:3]:
            return key
    raise KeyError(shape)


def inaccessible_image(shape, affine=None, dtype=np.float32) -> LazyImage:
    """A LazyImage whose voxels raise when read (uneven chunks)."""
    affine = grid_affine() if affine is None else affine
    chunks = UNEVEN_CHUNKS[_key(shape)][: len(shape)]
    if len(shape) == 4:
        chunks = chunks[:3] + ((shape[3],),)
    return LazyImage(inaccessible_dask_array(shape, chunks, dtype), affine)


@pytest.fixture(params=sorted(UNEVEN_CHUNKS), ids=lambda s: "x".join(map(str, s)))
def epi_shape(request):
    return request.param


@pytest.fixture
def epi_img(epi_shape, rng):
    """(nibabel run, lazy unevenly chunked run) with a planted brain."""
    img = synthetic_epi(epi_shape, rng)
    return img, lazy_uneven(img)
