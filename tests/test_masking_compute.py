"""compute_{epi,background,brain}_mask, their compute_multi_* variants, intersect_masks vs nilearn."""

import nibabel as nib
import numpy as np
import pytest
from nilearn import masking as nmasking

from lazyconn import masking as lmasking
from lazyconn.exceptions import (
    BoundingBoxError,
    GridMismatchError,
    MaskWarning,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.testing.imaging import brain_blob, grid_affine, lazy_uneven, synthetic_epi
from lazyconn.testing.laziness import raise_if_dask_computes
from lazyconn.testing.reference import quiet


def _same_mask(result, expected):
    exp = np.asanyarray(expected.dataobj)
    assert result.dtype == exp.dtype
    np.testing.assert_array_equal(result.affine, expected.affine)
    np.testing.assert_array_equal(np.asarray(result.data), exp)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"opening": 0, "connected": False},
        {"opening": 1, "lower_cutoff": 0.1, "upper_cutoff": 0.9},
        {"exclude_zeros": True},
        {"target_affine": np.diag([2.5, 2.5, 2.5]), "opening": 1},
    ],
    ids=["defaults", "no-opening", "opening1", "exclude-zeros", "target-3x3"],
)
def test_compute_epi_mask_matches_nilearn(epi_img, kwargs):
    img, lazy = epi_img
    expected = quiet(nmasking.compute_epi_mask, img, **kwargs)
    # the mean is a lazy reduction computed exactly once
    with raise_if_dask_computes(max_computes=1):
        result = lmasking.compute_epi_mask(lazy, **kwargs)
    assert np.asarray(result.data).any()
    _same_mask(result, expected)


def test_compute_epi_mask_planted_brain_and_3d_input(rng):
    img = synthetic_epi((13, 11, 12, 15), rng)
    mean = nib.Nifti1Image(np.asarray(img.dataobj).mean(-1), img.affine)
    result = lmasking.compute_epi_mask(mean, opening=0)
    np.testing.assert_array_equal(np.asarray(result.data).astype(bool), brain_blob((13, 11, 12)))
    _same_mask(result, nmasking.compute_epi_mask(mean, opening=0))


def test_compute_epi_mask_nan_voxels(rng):
    img = synthetic_epi((13, 11, 12, 15), rng)
    data = np.asarray(img.dataobj).copy()
    data[0, :3, :2, :] = np.nan  # SPM-style NaN background
    img = nib.Nifti1Image(data, img.affine)
    _same_mask(lmasking.compute_epi_mask(lazy_uneven(img)), nmasking.compute_epi_mask(img))


def test_compute_epi_mask_all_zero_run_is_an_error():
    zeros = nib.Nifti1Image(np.zeros((7, 8, 9, 20), np.float32), grid_affine())
    with pytest.raises(
        ParameterError, match=r"epi_img: its mean image is constant \(0\.0 everywhere\)"
    ):
        lmasking.compute_epi_mask(lazy_uneven(zeros))
    with pytest.raises(ParameterError, match="once zeros are excluded"):
        lmasking.compute_epi_mask(lazy_uneven(zeros), exclude_zeros=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lower_cutoff": 1.2}, "lower_cutoff=1.2 is not valid"),
        ({"upper_cutoff": -0.1}, "upper_cutoff=-0.1 is not valid"),
        ({"lower_cutoff": 0.9, "upper_cutoff": 0.5}, "must be smaller than upper_cutoff"),
    ],
)
def test_compute_epi_mask_bad_cutoffs(rng, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        lmasking.compute_epi_mask(synthetic_epi((7, 8, 9, 20), rng), **kwargs)


def test_compute_epi_mask_empty_mask_warns(rng):
    # pure noise: the opening erodes everything away
    noise = nib.Nifti1Image(rng.random((7, 8, 9, 20)).astype(np.float32), grid_affine())
    with pytest.warns(UserWarning):
        expected = nmasking.compute_epi_mask(noise, opening=3)
    with pytest.warns(MaskWarning, match="Computed an empty mask"):
        result = lmasking.compute_epi_mask(lazy_uneven(noise), opening=3)
    _same_mask(result, expected)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("connected", [True, False])
def test_intersect_masks_matches_nilearn(rng, threshold, connected):
    masks = [
        nib.Nifti1Image(
            (brain_blob((13, 11, 12), f) & (rng.random((13, 11, 12)) > 0.1)).astype(np.int32),
            grid_affine(),
        )
        for f in (0.3, 0.4, 0.35)
    ]
    expected = nmasking.intersect_masks(masks, threshold=threshold, connected=connected)
    result = lmasking.intersect_masks(
        [lazy_uneven(m) for m in masks], threshold=threshold, connected=connected
    )
    _same_mask(result, expected)


def test_intersect_masks_errors(rng):
    m = nib.Nifti1Image(brain_blob((7, 8, 9)).astype(np.uint8), grid_affine())
    other = nib.Nifti1Image(brain_blob((7, 8, 9)).astype(np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(ParameterError, match=r"threshold=1\.5 is not valid"):
        lmasking.intersect_masks([m], threshold=1.5)
    with pytest.raises(ParameterError, match="no mask provided"):
        lmasking.intersect_masks([])
    with pytest.raises(GridMismatchError, match=r"mask_imgs\[0\].*mask_imgs\[1\]"):
        lmasking.intersect_masks([m, other])


def test_compute_multi_epi_mask_matches_nilearn(rng):
    runs = [synthetic_epi((13, 11, 12, 15), rng) for _ in range(3)]
    data = np.asarray(runs[2].dataobj).copy()
    data[:, :, -3:] = 0  # one run lost its top slices
    runs[2] = nib.Nifti1Image(data, runs[2].affine)
    for threshold in (0.5, 1.0):
        expected = nmasking.compute_multi_epi_mask(runs, threshold=threshold)
        with raise_if_dask_computes(max_computes=1):  # all means in one compute
            result = lmasking.compute_multi_epi_mask(
                [lazy_uneven(r) for r in runs], threshold=threshold
            )
        _same_mask(result, expected)
    with pytest.raises(ParameterTypeError, match="an empty object was passed"):
        lmasking.compute_multi_epi_mask([])


@pytest.mark.parametrize(
    ("shape_affine", "kwargs"),
    [
        ("4mm-box", {}),
        ("3mm-shifted", {"threshold": 0.3, "opening": 1, "connected": False}),
    ],
)
def test_compute_brain_mask_matches_nilearn(shape_affine, kwargs):
    if shape_affine == "4mm-box":
        aff = np.diag([4.0, 4.0, 4.0, 1.0])
        aff[:3, 3] = [-90, -126, -72]
        shape = (46, 55, 46)
    else:
        aff = np.diag([6.0, 5.0, 6.0, 1.0])
        aff[:3, 3] = [-80, -110, -60]
        shape = (27, 44, 25)
    target = nib.Nifti1Image(np.zeros(shape + (3,), np.float32), aff)
    expected = quiet(nmasking.compute_brain_mask, target, **kwargs)
    result = lmasking.compute_brain_mask(target, **kwargs)
    assert np.asarray(result.data).sum() > 1000
    _same_mask(result, expected)


def test_compute_brain_mask_errors():
    target = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), grid_affine())
    with pytest.raises(
        ParameterError,
        match="mask_type='csf' is not valid; expected one of 'whole-brain', 'gm', 'wm'",
    ):
        lmasking.compute_brain_mask(target, mask_type="csf")
    corner = np.diag([2.0, 2.0, 2.0, 1.0])
    corner[:3, 3] = [-98, -134, -72]  # the template's empty corner
    target = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), corner)
    with pytest.warns(UserWarning):
        expected = nmasking.compute_brain_mask(target)
    with pytest.warns(MaskWarning, match="whole-brain mask is empty"):
        result = lmasking.compute_brain_mask(target)
    _same_mask(result, expected)
    far = np.eye(4)
    far[:3, 3] = 5000
    with pytest.raises(BoundingBoxError, match="does not contain any of the data"):
        lmasking.compute_brain_mask(nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), far))


@pytest.mark.parametrize("mask_type", ["gm", "wm"])
def test_compute_brain_mask_gm_wm_match_nilearn(mask_type):
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    aff[:3, 3] = [-90, -126, -72]
    target = nib.Nifti1Image(np.zeros((46, 55, 46), np.float32), aff)
    expected = quiet(nmasking.compute_brain_mask, target, mask_type=mask_type, opening=1)
    result = lmasking.compute_brain_mask(target, mask_type=mask_type, opening=1)
    assert np.asarray(result.data).sum() > 1000
    _same_mask(result, expected)
    # the multi variant: the first image's grid, every element checked to be an image
    multi = lmasking.compute_multi_brain_mask([target, target], mask_type=mask_type, opening=1)
    _same_mask(multi, expected)


def test_compute_multi_brain_mask_errors():
    with pytest.raises(ParameterTypeError, match="target_imgs=\\[\\]: an empty object was passed"):
        lmasking.compute_multi_brain_mask([])
    target = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), grid_affine())
    with pytest.raises(ParameterError, match="mask_type='csf' is not valid"):
        lmasking.compute_multi_brain_mask([target], mask_type="csf")


# --- compute_background_mask / compute_multi_background_mask ---------------------------------
def _background_run(shape, rng, background=0.0, fraction=0.35):
    """A run on a constant background with a planted brain (noise + 100 inside)."""
    data = np.full(shape, background, np.float32)
    blob = brain_blob(shape[:3], fraction)
    data[blob] = 100.0 + rng.standard_normal((int(blob.sum()),) + shape[3:]).astype(np.float32)
    return nib.Nifti1Image(data, grid_affine())


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"opening": 2, "connected": True},
        {"border_size": 1, "opening": 1},
        {"border_size": 0},
    ],
    ids=["defaults", "opening2-connected", "border1", "border0"],
)
@pytest.mark.parametrize("background", [0.0, 7.0])
def test_compute_background_mask_matches_nilearn(epi_shape, rng, kwargs, background):
    img = _background_run(epi_shape, rng, background)
    expected = quiet(nmasking.compute_background_mask, img, **kwargs)
    # the mean is a lazy reduction computed exactly once
    with raise_if_dask_computes(max_computes=1):
        result = lmasking.compute_background_mask(lazy_uneven(img), **kwargs)
    _same_mask(result, expected)


@pytest.mark.parametrize("opening", [False, 2])
def test_compute_background_mask_resampled_matches_nilearn(epi_shape, rng, opening):
    # "mean != background" is an exact float test: on a zero background the spline leaves
    # round-off (~1e-14, resampler-specific) where nilearn has exact zeros, so the planted
    # background here is 7 (interpolation leaves it far from the FOV fill value 0).
    img = _background_run(epi_shape, rng, background=7.0)
    kwargs = {"target_affine": np.diag([2.5, 2.5, 2.5]), "opening": opening}
    expected = quiet(nmasking.compute_background_mask, img, **kwargs)
    with raise_if_dask_computes(max_computes=1):
        result = lmasking.compute_background_mask(lazy_uneven(img), **kwargs)
    assert 0 < np.asarray(result.data).sum() < np.asarray(result.data).size
    _same_mask(result, expected)


def test_compute_background_mask_planted_brain_3d_and_nan_border(rng):
    shape = (13, 11, 12, 15)
    img = _background_run(shape, rng)
    result = lmasking.compute_background_mask(lazy_uneven(img))
    np.testing.assert_array_equal(np.asarray(result.data).astype(bool), brain_blob(shape[:3]))
    mean = nib.Nifti1Image(np.asarray(img.dataobj).mean(-1), img.affine)
    _same_mask(
        lmasking.compute_background_mask(lazy_uneven(mean)), nmasking.compute_background_mask(mean)
    )
    # a NaN in the border: the mask is the non-NaN voxels (SPM-style background)
    data = np.asarray(img.dataobj).copy()
    data[:3, :2, :4] = np.nan
    data[6, 5, 6] = np.nan
    nan_img = nib.Nifti1Image(data, img.affine)
    expected = nmasking.compute_background_mask(nan_img)
    result = lmasking.compute_background_mask(lazy_uneven(nan_img))
    assert not np.asarray(result.data)[6, 5, 6] and np.asarray(result.data)[0, 5, 0]
    _same_mask(result, expected)


def test_compute_background_mask_errors_and_empty_mask(rng):
    img = _background_run((7, 8, 9, 20), rng)
    for bad in (-1, 1.5, True):
        with pytest.raises(
            ParameterError, match=f"border_size={bad!r} is not valid; expected a number of voxels"
        ):
            lmasking.compute_background_mask(img, border_size=bad)
        with pytest.raises(ParameterError, match=f"border_size={bad!r} is not valid"):
            lmasking.compute_multi_background_mask([img], border_size=bad)
    constant = nib.Nifti1Image(np.full((7, 8, 9, 20), 3.0, np.float32), grid_affine())
    with pytest.warns(UserWarning):
        expected = nmasking.compute_background_mask(constant)
    with pytest.warns(
        MaskWarning,
        match="Computed an empty mask. Are you sure that input images have a homogeneous",
    ):
        result = lmasking.compute_background_mask(lazy_uneven(constant))
    _same_mask(result, expected)


def test_compute_multi_background_mask_matches_nilearn(rng):
    runs = [_background_run((13, 11, 12, 15), rng, fraction=f) for f in (0.35, 0.3, 0.4)]
    for kwargs in (
        {},
        {"threshold": 1.0, "opening": 1},
        {"connected": False, "opening": 0, "threshold": 0.0},
    ):
        expected = quiet(nmasking.compute_multi_background_mask, runs, **kwargs)
        with raise_if_dask_computes(max_computes=1):  # all means in one compute
            result = lmasking.compute_multi_background_mask(
                [lazy_uneven(r) for r in runs], **kwargs
            )
        assert np.asarray(result.data).any()
        _same_mask(result, expected)
    with pytest.raises(ParameterTypeError, match=r"data_imgs=\[\]: an empty object was passed"):
        lmasking.compute_multi_background_mask([])
    with pytest.raises(ParameterError, match="threshold=2 is not valid"):
        lmasking.compute_multi_background_mask(runs, threshold=2)
    small = _background_run((7, 8, 9, 20), rng)
    with pytest.raises(GridMismatchError, match="data_imgs have different grids"):
        lmasking.compute_multi_background_mask([runs[0], small])
