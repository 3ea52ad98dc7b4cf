"""pytest fixtures for storage tests: small NIfTI files written to ``tmp_path``.

Register with ``pytest_plugins = ["lazyconn.testing.storage"]``.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest


def write_nifti(path, data, affine, *, dtype=None, slope=None, inter=None, t_r=2.0):
    """Save ``data`` with nibabel; with ``slope``/``inter`` the file stores scaled integers.

    Returns the values nibabel reads back (``dataobj[...]``), the reference for tests.
    """
    img = nib.Nifti1Image(data, affine)
    if dtype is not None:
        img.header.set_data_dtype(dtype)
    if slope is not None or inter is not None:
        img.header.set_slope_inter(
            1.0 if slope is None else slope, 0.0 if inter is None else inter
        )
    zooms = tuple(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    img.header.set_zooms(zooms + ((t_r,) if data.ndim == 4 else ()))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return nib.load(str(path)).dataobj[...]


def with_flipped_bit(data: bytes, at: int | None = None, bit: int = 0x01) -> bytes:
    """``data`` with one bit of byte ``at`` (default: the middle byte) flipped: a corrupted
    file or object for integrity tests."""
    raw = bytearray(data)
    raw[len(raw) // 2 if at is None else at] ^= bit
    return bytes(raw)


@pytest.fixture
def make_nifti(tmp_path, rng, affine):
    """Factory: ``make_nifti(name, shape=(7, 8, 9, 20), dtype=float32, slope=None, inter=None)``.

    Returns ``(path, reference values)``; int dtypes get random integers, floats normals.
    """

    def make(
        name="run.nii.gz", shape=(7, 8, 9, 20), dtype=np.float32, slope=None, inter=None, t_r=2.0
    ):
        dtype = np.dtype(dtype)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            data = rng.integers(max(info.min, -3000), min(info.max, 3000), shape).astype(dtype)
        else:
            data = (100 + 10 * rng.standard_normal(shape)).astype(dtype)
        path = tmp_path / name
        ref = write_nifti(path, data, affine, dtype=dtype, slope=slope, inter=inter, t_r=t_r)
        return str(path), ref

    return make
