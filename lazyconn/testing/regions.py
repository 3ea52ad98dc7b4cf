"""Planted maps for region-extraction tests: blobs where every extraction choice matters.

On a 32x24x20 grid of 4 mm voxels (1350 mm³ = 21.1 voxels), three maps:

0. two positive blobs 13 voxels apart that touch once thresholded: one connected
   component, two random-walker regions (their smoothed peaks are > 10 voxels apart);
1. a positive blob, a larger negative blob and a tiny positive blob (below 1350 mm³);
2. a positive and a negative blob touching each other, and a third positive blob.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

MAPS_SHAPE = (32, 24, 20)


def maps_affine():
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    aff[:3, 3] = [-60.0, -50.0, -30.0]
    return aff


def gaussian_blob(shape, centre, sigma, amplitude=1.0):
    """``amplitude * exp(-d2 / (2 sigma^2))`` around ``centre`` (voxel coordinates)."""
    idx = np.indices(shape, dtype=np.float64)
    d2 = sum((idx[a] - centre[a]) ** 2 for a in range(3))
    return amplitude * np.exp(-d2 / (2 * sigma**2))


def planted_maps(seed=0, noise=0.01):
    """The three maps above (float32 nibabel image) plus a little Gaussian noise."""
    rng = np.random.default_rng(seed)
    s = MAPS_SHAPE
    m = np.zeros((*s, 3))
    m[..., 0] = gaussian_blob(s, (8, 12, 10), 3.5) + gaussian_blob(s, (21, 12, 10), 3.5, 0.8)
    m[..., 1] = (
        gaussian_blob(s, (6, 6, 6), 2.5)
        - gaussian_blob(s, (22, 18, 13), 2.5, 1.2)
        + gaussian_blob(s, (27, 4, 16), 0.9, 0.9)
    )
    m[..., 2] = (
        gaussian_blob(s, (10, 18, 5), 2.5, 1.1)
        - gaussian_blob(s, (10, 18, 10), 2.5, 0.9)
        + gaussian_blob(s, (24, 8, 8), 3.0, 0.7)
    )
    m += noise * rng.standard_normal(m.shape)
    return nib.Nifti1Image(m.astype(np.float32), maps_affine())


def run_on_maps_grid(seed=0, n_t=30, maps=None):
    """A float32 run whose signals follow the planted maps (plus noise), on their grid."""
    rng = np.random.default_rng(seed)
    maps = planted_maps() if maps is None else maps
    mdata = np.asarray(maps.dataobj, dtype=np.float64)
    series = rng.standard_normal((n_t, mdata.shape[-1]))
    data = mdata @ series.T + 0.3 * rng.standard_normal((*MAPS_SHAPE, n_t)) + 5.0
    return nib.Nifti1Image(data.astype(np.float32), maps.affine)
