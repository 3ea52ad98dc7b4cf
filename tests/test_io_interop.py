"""NIfTI-Zarr interop with the reference implementation (``nifti-zarr`` on PyPI).

Where it stops: ``niizarr.zarr2nii`` returns the stored (unscaled) values in memory
and drops ``scl_slope``/``scl_inter`` when writing a file, for its own stores as for
ours; so scaled-integer images are only exchanged losslessly lazyconn <- niizarr.
"""

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import lazyconn

niizarr = pytest.importorskip("niizarr")


@pytest.mark.parametrize("name", ["run.nii", "run.nii.gz"])
def test_niizarr_reads_lazyconn_stores(make_nifti, tmp_path, name):
    path, ref = make_nifti(name)
    store = str(tmp_path / "run.zarr")
    lazyconn.convert(path, store, chunks=(4, 5, 6), progress=False)
    img = niizarr.zarr2nii(store)
    assert img.shape == ref.shape
    np.testing.assert_array_equal(np.asarray(img.dataobj), ref)
    np.testing.assert_array_equal(img.header.get_best_affine(), nib.load(path).affine)
    # Written back by niizarr: the very bytes of the original NIfTI.
    back = str(tmp_path / "back.nii")
    niizarr.zarr2nii(store, back)
    original = Path(path).read_bytes()
    assert Path(back).read_bytes() == (
        gzip.decompress(original) if name.endswith("gz") else original
    )


@pytest.mark.parametrize("dtype, slope, inter", [(np.float32, None, None), (np.int16, 0.5, 3.0)])
def test_lazyconn_reads_niizarr_stores(make_nifti, tmp_path, dtype, slope, inter):
    path, ref = make_nifti("run.nii.gz", dtype=dtype, slope=slope, inter=inter)
    store = str(tmp_path / "nz.zarr")
    niizarr.nii2zarr(nib.load(path), store, chunk=4, nb_levels=1)
    img = lazyconn.load(store)  # no lazyconn metadata: read as a plain NIfTI-Zarr
    assert img.dtype == ref.dtype
    np.testing.assert_array_equal(img.data.compute(), ref)
    np.testing.assert_array_equal(img.affine, nib.load(path).affine)
    assert img.t_r == 2.0


def test_niizarr_drops_scaling_documented_limit(make_nifti, tmp_path):
    """The one place interop stops (see module docstring): niizarr ignores scl_slope."""
    path, ref = make_nifti("run.nii.gz", dtype=np.int16, slope=0.5, inter=3.0)
    store = str(tmp_path / "run.zarr")
    lazyconn.convert(path, store, progress=False)
    unscaled = np.asarray(nib.load(path).dataobj.get_unscaled())
    np.testing.assert_array_equal(np.asarray(niizarr.zarr2nii(store).dataobj), unscaled)
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)
