import dask.array as da
import nibabel as nib
import numpy as np
import pytest

import lazyconn
from lazyconn.exceptions import DimensionError, ParameterTypeError


def test_load_nibabel_image_round_trips(rng, affine):
    data = rng.standard_normal((7, 8, 9, 5)).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms((3, 3, 3, 2.0))
    lazy = lazyconn.load(img, chunks=(4, 5, 9, 5))
    assert isinstance(lazy.data, da.Array)
    assert lazy.shape == (7, 8, 9, 5)
    assert lazy.t_r == 2.0
    assert lazy.chunks[0] == (4, 3)
    back = lazy.to_nifti()
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), data)
    np.testing.assert_array_equal(back.affine, affine)
    assert "t_r=2 s" in repr(lazy)


def test_lazyimage_rejects_bad_dimensions(affine):
    with pytest.raises(DimensionError, match=r"shape \(3, 4\).*expected a 3-D or 4-D"):
        lazyconn.LazyImage(np.zeros((3, 4)), affine)


def test_load_rejects_unknown_type():
    with pytest.raises(ParameterTypeError, match="src=42 has type int"):
        lazyconn.load(42)
