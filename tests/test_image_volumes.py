"""crop/concat/iter/reorder/swap/copy/largest component/coord_transform/check_niimg vs nilearn."""

import nibabel as nib
import numpy as np
import pytest
from nilearn import image as nimage

from lazyconn import image as limage
from lazyconn.exceptions import (
    DimensionError,
    GridMismatchError,
    LazyconnWarning,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.testing.imaging import grid_affine, inaccessible_image, lazy_uneven, synthetic_epi
from lazyconn.testing.laziness import raise_if_dask_computes
from lazyconn.testing.maskers import assert_same_builtin_error, quiet


def _same(result, expected):
    assert isinstance(result, limage.LazyImage)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result.affine, expected.affine)
    # (nilearn's header may keep the reference's dtype; lazyconn's is the voxels')
    assert np.asarray(result.dataobj).dtype == np.asarray(expected.dataobj).dtype
    np.testing.assert_array_equal(np.asarray(result.dataobj), np.asarray(expected.dataobj))


@pytest.fixture
def run(rng):
    return synthetic_epi((7, 8, 9, 20), rng)


def _boxed(rng, shape=(13, 11, 12), ndim=3):
    data = np.zeros(shape + ((4,) if ndim == 4 else ()), np.float32)
    data[3:9, 2:7, 4:10] = rng.standard_normal((6, 5, 6) + ((4,) if ndim == 4 else ()))
    data[5, 4, 6] = 1e-12  # negligible under rtol
    return nib.Nifti1Image(data, grid_affine())


@pytest.mark.parametrize("ndim", [3, 4])
@pytest.mark.parametrize("pad", [True, False])
def test_crop_img_like_nilearn(rng, ndim, pad):
    img = _boxed(rng, ndim=ndim)
    expected, exp_off = nimage.crop_img(img, pad=pad, return_offset=True)
    result, off = limage.crop_img(lazy_uneven(img), pad=pad, return_offset=True)
    assert off == exp_off
    _same(result, expected)


def test_crop_img_empty_warns_like_nilearn(rng):
    img = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), grid_affine())
    with pytest.warns(UserWarning, match="No values above"):
        expected = nimage.crop_img(img)
    with pytest.warns(LazyconnWarning, match="No values above 1e-08. Returning original image"):
        result = limage.crop_img(img)
    _same(result, expected)


@pytest.mark.parametrize("dtype", [np.float32, None, np.float64])
def test_concat_imgs_like_nilearn(run, rng, dtype):
    vols = [nimage.index_img(run, i) for i in range(3)]
    for inputs in ([run, run], vols):
        expected = nimage.concat_imgs(inputs, dtype=dtype)
        with raise_if_dask_computes():
            result = limage.concat_imgs([lazy_uneven(im) for im in inputs], dtype=dtype)
        _same(result, expected)


def test_concat_imgs_errors_like_nilearn(run):
    vol = nimage.index_img(run, 0)
    other = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), np.eye(4))
    for bad, ours_cls, match in [
        ([], ParameterTypeError, "cannot concatenate empty"),
        ([run, vol], DimensionError, r"niimgs\[1\] has shape \(7, 8, 9\) \(3-D\)"),
        ([vol, other], GridMismatchError, "not on the same voxel grid"),
    ]:
        with pytest.raises(Exception) as expected:  # nilearn's class
            quiet(nimage.concat_imgs, bad)
        with pytest.raises(ours_cls, match=match) as got:
            limage.concat_imgs(bad)
        assert_same_builtin_error(got.value, expected.value)


def test_concat_imgs_auto_resample_like_nilearn(run):
    vol = nimage.index_img(run, 0)
    aff = grid_affine().copy()
    aff[:3, 3] += 1.5
    moved = nib.Nifti1Image(np.asarray(vol.dataobj), aff)
    with pytest.warns(UserWarning, match="Affine is different"):
        expected = nimage.concat_imgs([vol, moved], auto_resample=True)
    with pytest.warns(LazyconnWarning, match="Affine is different"):
        result = limage.concat_imgs([vol, moved], auto_resample=True)
    assert result.shape == expected.shape
    np.testing.assert_allclose(np.asarray(result.dataobj), expected.get_fdata(), atol=1e-4)


def test_iter_img_like_nilearn(run):
    expected = list(nimage.iter_img(run))
    with raise_if_dask_computes():
        result = list(limage.iter_img(lazy_uneven(run)))
    assert len(result) == len(expected) == 20
    for r, e in zip(result, expected, strict=True):
        _same(r, e)
    vols = [nimage.index_img(run, i) for i in range(3)]
    for r, e in zip(limage.iter_img(vols), nimage.iter_img(vols), strict=True):
        _same(r, e)
    with pytest.raises(Exception) as theirs:  # nilearn's class
        list(nimage.iter_img(vols[0]))
    with pytest.raises(DimensionError, match=r"\(3-D\); expected a 4-D image") as ours:
        list(limage.iter_img(vols[0]))
    assert_same_builtin_error(ours.value, theirs.value)


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([-3.0, 2.0, 4.0, 1.0]),
        np.array([[0, 0, 2.0, 5], [-3.0, 0, 0, 1], [0, 2.5, 0, -4], [0, 0, 0, 1]]),
        np.diag([3.0, -3.0, -3.0, 1.0]),
    ],
)
@pytest.mark.parametrize("ndim", [3, 4])
def test_reorder_img_like_nilearn(rng, affine, ndim):
    shape = (5, 6, 7) + ((3,) if ndim == 4 else ())
    img = nib.Nifti1Image(rng.standard_normal(shape).astype(np.float32), affine)
    expected = nimage.reorder_img(img)
    with raise_if_dask_computes():
        result = limage.reorder_img(img)
    _same(result, expected)


def test_reorder_img_rotation_error_and_resample_like_nilearn(rng):
    theta = 0.3
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    img = nib.Nifti1Image(rng.standard_normal((5, 6, 7)).astype(np.float32), rot * 2)
    with pytest.raises(Exception) as theirs:  # nilearn's class
        nimage.reorder_img(img)
    with pytest.raises(ParameterError, match="affine contains rotations") as ours:
        limage.reorder_img(img)
    assert_same_builtin_error(ours.value, theirs.value)
    expected = nimage.reorder_img(img, resample="nearest")
    result = limage.reorder_img(img, resample="nearest")
    assert result.shape == expected.shape
    np.testing.assert_allclose(result.affine, expected.affine)
    np.testing.assert_array_equal(np.asarray(result.dataobj), expected.get_fdata())


def test_swap_img_hemispheres_like_nilearn(rng):
    img = nib.Nifti1Image(rng.standard_normal((5, 6, 7)), np.diag([-3.0, 2.0, 4.0, 1.0]))
    with raise_if_dask_computes():
        result = limage.swap_img_hemispheres(img)
    _same(result, nimage.swap_img_hemispheres(img))


def test_copy_img_like_nilearn(run):
    lazy = lazy_uneven(run)
    result = limage.copy_img(lazy)
    _same(result, nimage.copy_img(run))
    result.affine[0, 0] = 99  # the copy's affine is its own
    assert lazy.affine[0, 0] == 3
    with pytest.raises(Exception) as theirs:  # nilearn's class
        nimage.copy_img("run.nii")
    with pytest.raises(ParameterTypeError, match=r"img='run\.nii' has type str") as ours:
        limage.copy_img("run.nii")
    assert_same_builtin_error(ours.value, theirs.value)


def test_largest_connected_component_img_like_nilearn(rng):
    data = np.zeros((9, 8, 7), np.int32)
    data[1:3, 1:3, 1:3] = 1
    data[5:9, 4:8, 2:6] = 3
    img = nib.Nifti1Image(data, grid_affine())
    expected = nimage.largest_connected_component_img(img)
    _same(limage.largest_connected_component_img(img), expected)
    both = limage.largest_connected_component_img([img, img])
    assert len(both) == 2
    empty = nib.Nifti1Image(np.zeros((4, 4, 4), np.int32), grid_affine())
    with pytest.raises(Exception) as theirs:  # nilearn's class
        nimage.largest_connected_component_img(empty)
    with pytest.raises(ParameterError, match="No non-zero values") as ours:
        limage.largest_connected_component_img(empty)
    assert_same_builtin_error(ours.value, theirs.value)


@pytest.mark.parametrize(
    "coords",
    [(1, 2, 3), (1.5, -2.0, 0.0), ([1, 2], [3, 4], [5, 6]), (np.ones((2, 3)),) * 3],
)
def test_coord_transform_like_nilearn(coords):
    affine = grid_affine()
    expected = nimage.coord_transform(*coords, affine)
    result = limage.coord_transform(*coords, affine)
    for r, e in zip(result, expected, strict=True):
        assert type(r) is type(e)
        np.testing.assert_array_equal(r, e)


def test_check_niimg_like_nilearn(run, tmp_path):
    vol = nimage.index_img(run, 0)
    one = nimage.index_img(run, [0])
    for call in (
        lambda m, im: m.check_niimg_4d(im),
        lambda m, im: m.check_niimg(im, atleast_4d=True),
        lambda m, im: m.check_niimg(im, dtype="auto"),
    ):
        with raise_if_dask_computes():
            result = call(limage, lazy_uneven(run))
        _same(result, call(nimage, run))
    _same(limage.check_niimg_3d(one), nimage.check_niimg_3d(one))
    _same(limage.check_niimg(vol, atleast_4d=True), nimage.check_niimg(vol, atleast_4d=True))
    _same(limage.check_niimg_4d([vol, vol]), nimage.check_niimg_4d([vol, vol]))
    for i in range(3):
        nimage.index_img(run, i).to_filename(tmp_path / f"vol{i}.nii")
    pattern = str(tmp_path / "vol*.nii")
    _same(limage.check_niimg_4d(pattern), nimage.check_niimg_4d(pattern))
    for call, match in [
        (lambda m: m.check_niimg_3d(run), r"\(4-D\); expected a 3-D image"),
        (lambda m: m.check_niimg_4d(vol), r"\(3-D\); expected a 4-D image"),
        (lambda m: m.check_niimg(str(tmp_path / "nothing*.nii")), "no files match"),
    ]:
        with pytest.raises(Exception) as theirs:  # nilearn's class
            call(nimage)
        with pytest.raises((DimensionError, ParameterError), match=match) as ours:
            call(limage)
        assert_same_builtin_error(ours.value, theirs.value)


def test_reshaping_functions_read_nothing():
    img = inaccessible_image((13, 11, 12, 15))
    with raise_if_dask_computes():
        assert limage.concat_imgs([img, img]).shape == (13, 11, 12, 30)
        assert limage.reorder_img(img).shape == img.shape
        assert limage.copy_img(img).shape == img.shape
        assert next(limage.iter_img(img)).shape == (13, 11, 12)
        assert limage.check_niimg_4d(img, dtype=np.float64).dtype == np.float64
