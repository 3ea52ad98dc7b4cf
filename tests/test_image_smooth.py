"""smooth_img / smooth_array: parity with nilearn (bit-identical) on unevenly chunked runs."""

import warnings

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
from nilearn import image as nimage
from scipy import ndimage

from lazyconn import image as limage
from lazyconn.exceptions import LazyconnWarning, ParameterError
from lazyconn.ops import spatial
from lazyconn.testing.imaging import inaccessible_image, lazy_uneven, synthetic_epi
from lazyconn.testing.laziness import raise_if_dask_computes


@pytest.mark.parametrize(
    "fwhm", [6, 4.5, 2, [3, None, 8], (0, 5, 2), np.array([3.0, 4.0, 5.0]), "fast", None, 30]
)
def test_smooth_img_matches_nilearn_exactly(epi_img, fwhm):
    img, lazy = epi_img
    expected = nimage.smooth_img(img, fwhm).get_fdata(dtype=np.float32)
    result = limage.smooth_img(lazy, fwhm)
    assert result.dtype == np.float32
    assert result.chunks == lazy.chunks
    # same scipy passes in the same order on the same float32 data: bit-identical
    np.testing.assert_array_equal(np.asarray(result.data), expected)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int64, np.float64])
def test_smooth_img_dtype_promotion_as_nilearn(rng, dtype):
    data = (rng.random((7, 8, 9)) * 50).astype(dtype)
    img = nib.Nifti1Image(data, np.diag([2.0, 3.0, 2.5, 1.0]), dtype=dtype)
    expected = np.asanyarray(nimage.smooth_img(img, 5).dataobj)
    result = limage.smooth_img(lazy_uneven(img), 5)
    assert result.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(result.data), expected)


def test_smooth_img_non_finite_become_zero_before_smoothing(rng):
    img = synthetic_epi((13, 11, 12, 15), rng)
    data = np.asarray(img.dataobj).copy()
    data[3, 4, 5, :3] = np.nan
    data[10, 2, 1, 7] = np.inf
    data[0, 0, 0, 0] = -np.inf
    img = nib.Nifti1Image(data, img.affine)
    expected = nimage.smooth_img(img, 7).get_fdata(dtype=np.float32)
    result = np.asarray(limage.smooth_img(lazy_uneven(img), 7).data)
    assert np.isfinite(result).all()
    np.testing.assert_array_equal(result, expected)


def test_smooth_img_list_gives_list(rng):
    imgs = [synthetic_epi((7, 8, 9, 20), rng) for _ in range(2)]
    expected = nimage.smooth_img(imgs, 5)
    result = limage.smooth_img([lazy_uneven(i) for i in imgs], 5)
    assert isinstance(result, list) and len(result) == 2
    for e, r in zip(expected, result, strict=True):
        np.testing.assert_array_equal(np.asarray(r.data), e.get_fdata(dtype=np.float32))


def test_smooth_img_anisotropic_rotated_affine_uses_column_norms(rng):
    theta = 0.3
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([2.0, 3.5, 4.0])
    img = synthetic_epi((13, 11, 12, 15), rng, affine=aff)
    expected = nimage.smooth_img(img, [5, 7, 9]).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(
        np.asarray(limage.smooth_img(lazy_uneven(img), [5, 7, 9]).data), expected
    )


def test_gaussian_smooth_equals_scipy_gaussian_filter_float64(rng):
    x = rng.standard_normal((13, 11, 12, 3))
    arr = da.from_array(x, chunks=((5, 8), (4, 7), (3, 4, 5), (1, 2)))
    sig = [0.8, 1.9, 0.4]
    expected = ndimage.gaussian_filter(x, sig + [0], mode="reflect", truncate=4.0)
    np.testing.assert_allclose(
        spatial.gaussian_smooth(arr, sig).compute(), expected, rtol=1e-12, atol=1e-12
    )


def test_gaussian_halo_is_the_kernel_halfwidth():
    # 6 mm at 4 mm voxels -> 3, at 2 mm -> 5, 4 mm at 4 mm -> 2 (reference examples)
    for fwhm, vox, width in [(6, 4, 3), (6, 2, 5), (4, 4, 2)]:
        sigma = spatial.fwhm_to_sigma(fwhm, np.diag([vox, vox, vox, 1.0]))[0]
        assert spatial.gaussian_halfwidth(sigma) == width


def test_smooth_fwhm_zero_warns_and_does_not_smooth(rng):
    img = synthetic_epi((7, 8, 9, 20), rng)
    with pytest.warns(LazyconnWarning, match="Setting it to None"):
        result = limage.smooth_img(lazy_uneven(img), 0)
    np.testing.assert_array_equal(np.asarray(result.data), np.asarray(img.dataobj))


@pytest.mark.parametrize(
    ("fwhm", "match"),
    [
        (-3, r"fwhm=-3 is not valid; expected finite numbers >= 0"),
        ([1, 2], r"fwhm=\[1, 2\] has 2 values; expected a scalar or 3 values"),
        ("slow", r"fwhm='slow' is not valid"),
        (np.nan, r"fwhm=nan is not valid"),
        ([1, "a", 2], r"expected finite numbers >= 0"),
        (True, r"fwhm=True is not valid"),
    ],
)
def test_smooth_bad_fwhm_raises(fwhm, match):
    img = inaccessible_image((7, 8, 9, 20))
    with pytest.raises(ParameterError, match=match):
        limage.smooth_img(img, fwhm)


@pytest.mark.parametrize("fwhm", [6, "fast", None, [2, None, 9]])
def test_smooth_img_is_lazy(fwhm):
    img = inaccessible_image((13, 11, 12, 15))
    with raise_if_dask_computes():
        out = limage.smooth_img(img, fwhm)
    assert out.shape == img.shape and out.dtype == np.float32
    assert isinstance(out.data, da.Array)


def test_smooth_img_accepts_nibabel_and_keeps_affine(rng):
    img = synthetic_epi((7, 8, 9, 20), rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = limage.smooth_img(img, 4)
    np.testing.assert_array_equal(out.affine, img.affine)
    np.testing.assert_array_equal(
        np.asarray(out.data), nimage.smooth_img(img, 4).get_fdata(dtype=np.float32)
    )


def test_smooth_array_on_a_numpy_array_matches_nilearn(rng):
    from nilearn.image.image import smooth_array as nilearn_smooth_array

    from lazyconn.image.image import smooth_array

    x = rng.standard_normal((6, 7, 5, 3)).astype(np.float32)
    affine = np.diag([2.0, 3.0, 2.5, 1.0])
    got = smooth_array(x, affine, fwhm=4.0)
    np.testing.assert_array_equal(np.asarray(got), nilearn_smooth_array(x, affine, fwhm=4.0))
