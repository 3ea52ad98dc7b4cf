"""mean_img, index_img, math_img, new_img_like, get_data, threshold_img, binarize_img, templates,
clean_img and high_variance_confounds: parity with nilearn on unevenly chunked inputs."""

import dask.array as da
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import datasets as ndatasets
from nilearn import image as nimage

from lazyconn import image as limage
from lazyconn.exceptions import (
    DimensionError,
    GridMismatchError,
    LazyconnWarning,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.testing.imaging import (
    brain_blob,
    grid_affine,
    inaccessible_image,
    lazy_uneven,
    synthetic_epi,
)
from lazyconn.testing.laziness import raise_if_dask_computes
from lazyconn.testing.reference import quiet


def _close32(result, expected):
    """float32 (lazyconn) vs float64 or float32 (nilearn): 1e-5 of the data's scale.

    The mean over time is accumulated in float64 by lazyconn and in float32 by numpy, so
    entries near 0 only agree to the scale of the data, not relatively.
    """
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(np.abs(expected).max(), 1e-30)
    np.testing.assert_allclose(
        np.asarray(result, dtype=np.float64), expected, rtol=1e-5, atol=1e-5 * scale
    )


# --- mean_img ------------------------------------------------------------------------------
def test_mean_img_single_4d(epi_img):
    img, lazy = epi_img
    expected = nimage.mean_img(img)
    result = limage.mean_img(lazy)
    assert result.dtype == np.asanyarray(expected.dataobj).dtype == np.float32
    _close32(result.data, expected.dataobj)


def test_mean_img_list_is_unweighted_mean_of_means_and_resamples(rng):
    a = synthetic_epi((13, 11, 12, 2), rng)
    b = synthetic_epi((13, 11, 12, 6), rng)
    expected = nimage.mean_img([a, b])
    _close32(limage.mean_img([lazy_uneven(a), lazy_uneven(b)]).data, expected.dataobj)
    ta = np.diag([4.0, 4.0, 4.0, 1.0])
    ta[:3, 3] = [-8, -10, -7]
    expected = quiet(nimage.mean_img, [a, b], target_affine=ta, target_shape=(9, 8, 9))
    result = limage.mean_img([a, lazy_uneven(b)], target_affine=ta, target_shape=(9, 8, 9))
    np.testing.assert_array_equal(result.affine, expected.affine)
    _close32(result.data, expected.dataobj)


def test_mean_img_int_3d_gives_float64(rng):
    img = nib.Nifti1Image((rng.random((7, 8, 9)) * 9).astype(np.int16), grid_affine())
    expected = nimage.mean_img(img)
    result = limage.mean_img(lazy_uneven(img))
    assert result.dtype == np.asanyarray(expected.dataobj).dtype == np.float64
    np.testing.assert_array_equal(np.asarray(result.data), np.asanyarray(expected.dataobj))


# --- index_img / get_data / new_img_like ---------------------------------------------------
@pytest.mark.parametrize(
    "index", [3, -1, slice(2, 9, 3), [0, 4, 4, 1], np.array([True, False] * 7 + [True]), "series"]
)
def test_index_img_matches_nilearn(rng, index):
    img = synthetic_epi((13, 11, 12, 15), rng)
    if isinstance(index, str):
        index = pd.Series([1, 5, 2])
    expected = nimage.index_img(img, index)
    result = limage.index_img(lazy_uneven(img), index)
    assert result.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(result.data), np.asanyarray(expected.dataobj))


def test_index_img_errors_and_list_of_3d(rng):
    img = inaccessible_image((7, 8, 9, 20))
    with pytest.raises(IndexError, match="Integer index 20 out of range"):
        limage.index_img(img, 20)
    with pytest.raises(
        DimensionError, match=r"imgs has shape \(7, 8, 9\) \(3-D\); expected a 4-D"
    ):
        limage.index_img(inaccessible_image((7, 8, 9)), 0)
    vols = [synthetic_epi((7, 8, 9), rng) for _ in range(3)]
    np.testing.assert_array_equal(
        np.asarray(limage.index_img(vols, 1).data), np.asanyarray(vols[1].dataobj)
    )


def test_list_of_images_must_share_grid_and_be_3d(rng):
    a = synthetic_epi((7, 8, 9), rng)
    b = synthetic_epi((7, 8, 9), rng, affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(GridMismatchError, match=r"imgs\[0\] \(shape \(7, 8, 9\).*imgs\[1\]"):
        limage.index_img([a, b], 0)
    with pytest.raises(DimensionError, match=r"imgs\[1\] has shape \(7, 8, 9, 20\)"):
        limage.index_img([a, inaccessible_image((7, 8, 9, 20))], 0)


def test_get_data_and_new_img_like(rng):
    img = synthetic_epi((7, 8, 9, 20), rng)
    expected = nimage.get_data(img)
    data = limage.get_data(img)
    assert type(data) is np.ndarray and data.dtype == expected.dtype
    np.testing.assert_array_equal(data, expected)
    lazy = limage.get_data(img, compute=False)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), expected)
    new = limage.new_img_like(img, np.ones((7, 8, 9), bool))
    assert new.dtype == np.uint8 and new.shape == (7, 8, 9)
    np.testing.assert_array_equal(new.affine, img.affine)
    with pytest.warns(LazyconnWarning, match="64-bit ints"):
        assert limage.new_img_like(img, np.ones((7, 8, 9), np.int64)).dtype == np.int32
    with pytest.raises(ParameterTypeError, match="data has type list"):
        limage.new_img_like(img, [1, 2])


# --- math_img ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "formula",
    [
        "img1 + 2 * img2",
        "np.mean(img1, axis=-1) - img2[..., 0]",
        "np.log(np.abs(img1) + 1) - img2",
        "img1 > img2",
    ],
)
def test_math_img_matches_nilearn(rng, formula):
    a, b = synthetic_epi((13, 11, 12, 15), rng), synthetic_epi((13, 11, 12, 15), rng)
    expected = nimage.math_img(formula, img1=a, img2=b)
    with raise_if_dask_computes():
        result = limage.math_img(formula, img1=lazy_uneven(a), img2=lazy_uneven(b))
    assert result.shape == expected.shape
    _close32(result.data, np.asanyarray(expected.dataobj))


def test_math_img_errors(rng):
    a = inaccessible_image((7, 8, 9, 20))
    b = inaccessible_image((13, 11, 12, 15))
    with pytest.raises(
        GridMismatchError, match=r"img1 \(shape \(7, 8, 9\).*img2 \(shape \(13, 11, 12\)"
    ):
        limage.math_img("img1 + img2", img1=a, img2=b)
    with pytest.warns(LazyconnWarning, match=r"Some images \(\['other'\]\) are not mentioned"):
        limage.math_img("img * 2", img=a, other=a)
    with pytest.raises(ParameterError, match="copy_header_from='nope'"):
        limage.math_img("img * 2", copy_header_from="nope", img=a)
    with pytest.raises(DimensionError, match="different number of dimensions"):
        limage.math_img("np.mean(img, axis=-1)", copy_header_from="img", img=a)
    with pytest.raises(NameError, match="name 'imgx' is not defined"):
        limage.math_img("imgx + 1", img=a)


# --- threshold_img / binarize_img ----------------------------------------------------------
@pytest.mark.parametrize(
    ("threshold", "two_sided"),
    [
        ("80%", True),
        ("80%", False),
        ("0%", True),
        (0.8, True),
        (0.4, False),
        (-0.5, False),
        (101.0, True),
    ],
)
@pytest.mark.parametrize("cluster_threshold", [0, 4])
@pytest.mark.parametrize("use_mask", [False, True])
def test_threshold_img_matches_nilearn(rng, threshold, two_sided, cluster_threshold, use_mask):
    stat = nib.Nifti1Image(rng.standard_normal((13, 11, 12)).astype(np.float32), grid_affine())
    mask = (
        nib.Nifti1Image(brain_blob((13, 11, 12), 0.45).astype(np.uint8), grid_affine())
        if use_mask
        else None
    )
    kwargs = {"cluster_threshold": cluster_threshold, "two_sided": two_sided, "mask_img": mask}
    expected = quiet(nimage.threshold_img, stat, threshold, **kwargs)
    if threshold == 101.0:  # above the maximum: nilearn's warning (3-D maps)
        with pytest.warns(LazyconnWarning, match="must not exceed"):
            result = limage.threshold_img(lazy_uneven(stat), threshold, **kwargs)
    else:
        result = limage.threshold_img(lazy_uneven(stat), threshold, **kwargs)
    np.testing.assert_array_equal(np.asarray(result.data), np.asanyarray(expected.dataobj))


def test_threshold_img_4d_nan_and_resampled_mask(rng):
    data = rng.standard_normal((7, 8, 9, 3)).astype(np.float32)
    data[1, 2, 3, 0] = np.nan
    img = nib.Nifti1Image(data, grid_affine())
    mask_aff = np.diag([1.5, 1.5, 1.5, 1.0])
    mask_aff[:3, 3] = [-10.0, -12.0, -9.0]
    mask = nib.Nifti1Image(brain_blob((14, 16, 18), 0.45).astype(np.uint8), mask_aff)
    kwargs = {"cluster_threshold": 3, "mask_img": mask}
    expected = quiet(nimage.threshold_img, img, "70%", **kwargs)
    result = limage.threshold_img(lazy_uneven(img), "70%", **kwargs)
    np.testing.assert_array_equal(np.asarray(result.data), np.asanyarray(expected.dataobj))


@pytest.mark.parametrize(("threshold", "two_sided"), [(0.0, False), ("60%", True), (0.5, True)])
def test_binarize_img_matches_nilearn(rng, threshold, two_sided):
    stat = nib.Nifti1Image(rng.standard_normal((7, 8, 9)).astype(np.float32), grid_affine())
    expected = quiet(nimage.binarize_img, stat, threshold, two_sided=two_sided)
    result = limage.binarize_img(lazy_uneven(stat), threshold, two_sided=two_sided)
    assert result.dtype == np.int8
    np.testing.assert_array_equal(np.asarray(result.data), np.asanyarray(expected.dataobj))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"threshold": "80"}, ParameterError, r"number followed by the percent sign.*'80'"),
        ({"threshold": "abc%"}, ParameterError, "percent sign"),
        ({"threshold": "-5%"}, ParameterError, "negative percentile"),
        ({"threshold": "120%"}, ParameterError, "within 0% and 100%"),
        ({"threshold": [1]}, ParameterTypeError, "either a number or a string"),
        (
            {"threshold": -1.0},
            ParameterError,
            "should not be a negative value when two_sided=True",
        ),
        ({"threshold": 1.0, "cluster_threshold": -2}, ParameterError, "cluster_threshold=-2"),
    ],
)
def test_threshold_img_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        limage.threshold_img(inaccessible_image((7, 8, 9)), **kwargs)


def test_threshold_and_binarize_are_lazy():
    img = inaccessible_image((13, 11, 12, 15))
    with raise_if_dask_computes():
        a = limage.threshold_img(img, "90%", cluster_threshold=5)
        b = limage.binarize_img(img, 0.5, two_sided=True)
    assert a.shape == b.shape == img.shape


# --- templates -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("resolution", "n_mask_voxels"),
    [pytest.param(None, 1_882_989, marks=pytest.mark.slow), (4, 29_398)],
)
def test_mni152_template_and_brain_mask(resolution, n_mask_voxels):
    expected = ndatasets.load_mni152_template(resolution=resolution)
    result = limage.load_mni152_template(resolution=resolution)
    assert result.shape == expected.shape and result.dtype == np.float32
    np.testing.assert_array_equal(result.affine, expected.affine)
    np.testing.assert_allclose(
        np.asarray(result.data), expected.get_fdata(dtype=np.float32), rtol=0, atol=1e-7
    )
    # voxel counts of nilearn's masks (reference section 9.2) and nilearn's rule (> 0.2, int8)
    mask = limage.load_mni152_brain_mask(resolution=resolution)
    assert mask.dtype == np.int8
    values = np.asarray(mask.data)
    assert int(values.sum()) == n_mask_voxels
    np.testing.assert_array_equal(values, expected.get_fdata(dtype=np.float32) > 0.2)


def test_mni152_bad_resolution():
    with pytest.raises(ParameterError, match="resolution='2mm' is not valid"):
        limage.load_mni152_template("2mm")


# --- clean_img / high_variance_confounds -----------------------------------------------------
@pytest.fixture
def run64(rng):
    img = synthetic_epi((7, 8, 9, 40), rng)
    img64 = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.float64), img.affine)
    return img, img64


CLEAN_CASES = {
    "defaults": {},
    "zscore+filter+confounds": {
        "standardize": "zscore_sample",
        "detrend": True,
        "low_pass": 0.1,
        "high_pass": 0.01,
        "t_r": 2.0,
        "confounds": "rng",
    },
    "psc-no-detrend": {"standardize": "psc", "detrend": False},
    "runs": {"runs": np.repeat([0, 1], 20), "standardize": None, "high_pass": 0.02, "t_r": 1.5},
    "sample_mask": {"standardize": "zscore_sample", "clean__sample_mask": np.arange(3, 37)},
}


@pytest.mark.parametrize("case", sorted(CLEAN_CASES))
@pytest.mark.parametrize("masked", [False, True])
def test_clean_img_matches_nilearn(run64, rng, case, masked):
    img, img64 = run64
    kwargs = dict(CLEAN_CASES[case])
    if kwargs.get("confounds") == "rng":
        kwargs["confounds"] = rng.standard_normal((40, 3))
    if masked:
        kwargs["mask_img"] = nib.Nifti1Image(
            brain_blob((7, 8, 9), 0.4).astype(np.uint8), img.affine
        )
    expected = quiet(nimage.clean_img, img64, **kwargs).get_fdata()
    result = quiet(limage.clean_img, lazy_uneven(img), **kwargs)
    assert result.dtype == np.float32 and result.shape == expected.shape
    assert result.chunks[:3] == lazy_uneven(img).chunks[:3]
    # float32 data cleaned in float64 vs nilearn in float64 on the same values
    _close32(result.data, expected)


def test_clean_img_is_lazy_and_errors(rng):
    img = inaccessible_image((13, 11, 12, 40))
    mask = nib.Nifti1Image(brain_blob((13, 11, 12), 0.4).astype(np.uint8), grid_affine())
    with raise_if_dask_computes():
        out = limage.clean_img(
            img,
            standardize="zscore_sample",
            low_pass=0.1,
            high_pass=0.01,
            t_r=2.0,
            confounds=rng.standard_normal((40, 2)),
            mask_img=mask,
        )
        hvc = limage.high_variance_confounds(img, mask_img=mask, compute=False)
    assert out.shape == img.shape and hvc.shape == (40, 5)
    with pytest.raises(ParameterError, match=r"t_r\) must be specified for filtering"):
        limage.clean_img(img, low_pass=0.1)
    with pytest.raises(ParameterError, match=r"unexpected keyword arguments \['detrending'\]"):
        limage.clean_img(img, detrending=True)
    with pytest.raises(DimensionError, match=r"expected a 4-D image"):
        limage.clean_img(inaccessible_image((7, 8, 9)))
    bad = nib.Nifti1Image(brain_blob((7, 8, 9)).astype(np.uint8), grid_affine())
    with pytest.raises(GridMismatchError, match=r"mask_img \(shape \(7, 8, 9\)"):
        limage.clean_img(img, mask_img=bad, standardize=None)


@pytest.mark.parametrize("masked", [False, True])
def test_image_high_variance_confounds_matches_nilearn(run64, masked):
    img, img64 = run64
    mask = (
        nib.Nifti1Image(brain_blob((7, 8, 9), 0.4).astype(np.uint8), img.affine)
        if masked
        else None
    )
    expected = nimage.high_variance_confounds(img64, mask_img=mask, percentile=5.0)
    result = limage.high_variance_confounds(lazy_uneven(img), mask_img=mask, percentile=5.0)
    assert type(result) is np.ndarray
    # eigenvector signs are arbitrary (LAPACK)
    signs = np.sign((expected * result).sum(0))
    np.testing.assert_allclose(result * signs, expected, rtol=1e-5, atol=1e-6)


def test_mean_index_math_get_data_are_lazy():
    img = inaccessible_image((13, 11, 12, 15))
    with raise_if_dask_computes():
        m = limage.mean_img(
            [img, img], target_affine=np.diag([2.0, 2.0, 2.0, 1.0]), target_shape=(9, 9, 9)
        )
        i = limage.index_img(img, [1, 3])
        d = limage.get_data(img, compute=False)
        n = limage.new_img_like(img, d * 2)
        f = limage.math_img("np.mean(a, axis=-1) * b[..., 0]", a=img, b=img)
    assert f.shape == (13, 11, 12)
    assert m.shape == (9, 9, 9) and i.shape == (13, 11, 12, 2) and n.shape == img.shape


@pytest.mark.parametrize("kind", ["gm", "wm"])
@pytest.mark.parametrize("resolution", [pytest.param(None, marks=pytest.mark.slow), 4])
def test_mni152_gm_wm_templates_and_masks(kind, resolution):
    expected = getattr(ndatasets, f"load_mni152_{kind}_template")(resolution=resolution)
    result = getattr(limage, f"load_mni152_{kind}_template")(resolution=resolution)
    assert result.shape == expected.shape and result.dtype == np.float32
    np.testing.assert_array_equal(result.affine, expected.affine)
    np.testing.assert_allclose(
        np.asarray(result.data), expected.get_fdata(dtype=np.float32), rtol=0, atol=1e-7
    )
    for kwargs in ({}, {"threshold": 0.5, "n_iter": 1}):
        ref = getattr(ndatasets, f"load_mni152_{kind}_mask")(resolution=resolution, **kwargs)
        mask = getattr(limage, f"load_mni152_{kind}_mask")(resolution=resolution, **kwargs)
        ref_data = np.asanyarray(ref.dataobj)
        assert mask.dtype == ref_data.dtype == np.uint8 and ref_data.sum() > 1000
        np.testing.assert_array_equal(mask.affine, ref.affine)
        np.testing.assert_array_equal(np.asarray(mask.data), ref_data)
    with pytest.raises(ParameterError, match="resolution=-2 is not valid"):
        getattr(limage, f"load_mni152_{kind}_mask")(resolution=-2)
