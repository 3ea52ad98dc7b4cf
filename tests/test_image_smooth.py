"""smooth_img / smooth_array: parity with nilearn on unevenly chunked runs, and the kernel.

lazyconn smooths by BLAS products, so results equal nilearn's within float32
rounding (``assert_smoothing_close``), not bit for bit.
"""

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
from lazyconn.testing.reference import assert_smoothing_close


@pytest.mark.parametrize(
    "fwhm", [6, 4.5, 2, [3, None, 8], (0, 5, 2), np.array([3.0, 4.0, 5.0]), "fast", None, 30]
)
def test_smooth_img_matches_nilearn(epi_img, fwhm):
    img, lazy = epi_img
    expected = nimage.smooth_img(img, fwhm).get_fdata(dtype=np.float32)
    result = limage.smooth_img(lazy, fwhm)
    assert result.dtype == np.float32
    assert result.chunks == lazy.chunks
    assert_smoothing_close(np.asarray(result.data), expected)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int64, np.float64])
def test_smooth_img_dtype_promotion_as_nilearn(rng, dtype):
    data = (rng.random((7, 8, 9)) * 50).astype(dtype)
    img = nib.Nifti1Image(data, np.diag([2.0, 3.0, 2.5, 1.0]), dtype=dtype)
    expected = np.asanyarray(nimage.smooth_img(img, 5).dataobj)
    result = limage.smooth_img(lazy_uneven(img), 5)
    assert result.dtype == expected.dtype
    assert_smoothing_close(np.asarray(result.data), expected)


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
    assert_smoothing_close(result, expected)


def test_smooth_img_list_gives_list(rng):
    imgs = [synthetic_epi((7, 8, 9, 20), rng) for _ in range(2)]
    expected = nimage.smooth_img(imgs, 5)
    result = limage.smooth_img([lazy_uneven(i) for i in imgs], 5)
    assert isinstance(result, list) and len(result) == 2
    for e, r in zip(expected, result, strict=True):
        assert_smoothing_close(np.asarray(r.data), e.get_fdata(dtype=np.float32))


def test_smooth_img_anisotropic_rotated_affine_uses_column_norms(rng):
    theta = 0.3
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([2.0, 3.5, 4.0])
    img = synthetic_epi((13, 11, 12, 15), rng, affine=aff)
    expected = nimage.smooth_img(img, [5, 7, 9]).get_fdata(dtype=np.float32)
    assert_smoothing_close(
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


def _scipy_passes(x, sigmas, truncate=4.0):
    """The reference: scipy's 1-D passes, axis by axis, in the data's dtype (nilearn's order)."""
    out = np.array(x, copy=True)
    for axis, s in enumerate(sigmas):
        if s > 0:
            ndimage.gaussian_filter1d(out, s, axis=axis, output=out, truncate=truncate)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "chunks", "sigmas"),
    [
        # 4-D, uneven chunks: interior blocks with halos on both sides, image-edge blocks
        ((13, 11, 12, 3), ((5, 8), (4, 7), (3, 4, 5), (1, 2)), [0.8, 1.9, 0.4]),
        # 3-D, anisotropic, one axis unsmoothed
        ((17, 9, 14), ((6, 6, 5), (9,), (4, 10)), [1.3, 0.0, 0.9]),
        # a kernel wider than the axis (several reflections; the axis is made whole)
        ((6, 15, 11, 2), ((3, 3), (8, 7), (11,), (2,)), [4.0, 0.7, 1.1]),
        # a long axis in one block: the operator is applied in tiles
        ((150, 7, 6, 2), ((150,), (7,), (6,), (2,)), [0.5, 1.0, 1.0]),
    ],
)
@pytest.mark.parametrize("order", ["C", "F"])
def test_gaussian_smooth_equals_scipy_passes(rng, shape, chunks, sigmas, dtype, order):
    x = (100 + 10 * rng.standard_normal(shape)).astype(dtype)
    arr = da.from_array(x, chunks=chunks)
    # F: blocks as Zarr and NIfTI files give them (time slowest), halos assembled in F order
    arr = arr.map_blocks(np.asfortranarray if order == "F" else np.ascontiguousarray)
    got = spatial.gaussian_smooth(arr, sigmas).compute()
    assert got.dtype == dtype
    assert_smoothing_close(got, _scipy_passes(x, sigmas))


@pytest.mark.parametrize("order", ["C", "F", "strided"])
def test_gaussian_block_crops_halos_as_scipy(rng, order):
    # A block with context voxels (halos) around its own voxels on some sides; the sides
    # without a halo are image edges (scipy's reflection). Any memory layout.
    x = rng.standard_normal((20, 18, 21, 4)).astype(np.float32)
    halos = [(3, 2), (0, 4), (5, 0)]
    sigmas = [0.9, 1.2, 1.5]
    expected = _scipy_passes(x, sigmas)[3:-2, :-4, 5:]
    block = {"C": x, "F": np.asfortranarray(x), "strided": x[:, ::-1][:, ::-1]}[order]
    got = spatial.gaussian_block(block, sigmas, halos=halos)
    assert got.flags.c_contiguous or got.flags.f_contiguous
    assert_smoothing_close(got, expected)
    np.testing.assert_array_equal(block, x)  # copy=True: the input is not modified
    # copy=False: a pass may write into the block's buffer, the result is the same
    given_up = np.array(block, order="K")
    again = spatial.gaussian_block(given_up, sigmas, halos=halos, copy=False)
    assert not np.may_share_memory(again, given_up)  # not pinning the larger buffer
    np.testing.assert_array_equal(again, got)


@pytest.mark.parametrize("copy", [True, False])
def test_gaussian_block_non_finite_spread_as_scipy(rng, copy):
    # Products would spread a NaN along a whole tile; the kernel recomputes such blocks
    # with scipy, so NaN and inf reach exactly the voxels scipy's filters reach (also when
    # the kernel may reuse the block's buffer: copy=False).
    x = rng.standard_normal((12, 13, 11, 2)).astype(np.float32)
    x[2, 3, 4, 0] = np.nan
    x[9, 1, 8, 1] = np.inf
    expected = _scipy_passes(x, [0.7, 0.5, 0.6])[1:-1, :-2, 2:]
    got = spatial.gaussian_block(x, [0.7, 0.5, 0.6], halos=[(1, 1), (0, 2), (2, 0)], copy=copy)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
    assert_smoothing_close(got, expected)


def test_gaussian_block_integers_cast_per_pass_as_scipy(rng):
    x = (rng.random((9, 10, 11)) * 500).astype(np.int16)
    got = spatial.gaussian_block(x, [1.0, 0.6, 1.4])
    assert got.dtype == np.int16
    # float64 products then truncation after each pass, as scipy's integer output
    np.testing.assert_array_equal(got, _scipy_passes(x, [1.0, 0.6, 1.4]))


def test_gaussian_operator_is_cached_and_read_only():
    op = spatial.gaussian_operator(20, 1.5, 4.0, 3, 2, np.dtype(np.float32))
    assert op.shape == (15, 20) and op.dtype == np.float32
    assert spatial.gaussian_operator(20, 1.5, 4.0, 3, 2, np.dtype(np.float32)) is op
    with pytest.raises(ValueError, match="read-only"):
        op[0, 0] = 1.0


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
    assert_smoothing_close(
        np.asarray(out.data), nimage.smooth_img(img, 4).get_fdata(dtype=np.float32)
    )


def test_smooth_array_on_a_numpy_array_matches_nilearn(rng):
    from nilearn.image.image import smooth_array as nilearn_smooth_array

    from lazyconn.image.image import smooth_array

    x = rng.standard_normal((6, 7, 5, 3)).astype(np.float32)
    affine = np.diag([2.0, 3.0, 2.5, 1.0])
    got = smooth_array(x, affine, fwhm=4.0)
    assert_smoothing_close(np.asarray(got), nilearn_smooth_array(x, affine, fwhm=4.0))
