"""compute_epi_mask, compute_multi_epi_mask, intersect_masks, compute_brain_mask vs nilearn."""

import warnings

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


def _quiet(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


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
    expected = _quiet(nmasking.compute_epi_mask, img, **kwargs)
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
    with pytest.raises(ParameterError, match=r"epi_img: its mean image is constant \(0\.0 everywhere\)"):
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
        nib.Nifti1Image((brain_blob((13, 11, 12), f) & (rng.random((13, 11, 12)) > 0.1)).astype(np.int32), grid_affine())
        for f in (0.3, 0.4, 0.35)
    ]
    expected = nmasking.intersect_masks(masks, threshold=threshold, connected=connected)
    result = lmasking.intersect_masks([lazy_uneven(m) for m in masks], threshold=threshold, connected=connected)
    _same_mask(result, expected)


def test_intersect_masks_errors(rng):
    m = nib.Nifti1Image(brain_blob((7, 8, 9)).astype(np.uint8), grid_affine())
    other = nib.Nifti1Image(brain_blob((7, 8, 9)).astype(np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(ParameterError, match="threshold=1.5 is not valid"):
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
            result = lmasking.compute_multi_epi_mask([lazy_uneven(r) for r in runs], threshold=threshold)
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
    expected = _quiet(nmasking.compute_brain_mask, target, **kwargs)
    result = lmasking.compute_brain_mask(target, **kwargs)
    assert np.asarray(result.data).sum() > 1000
    _same_mask(result, expected)


def test_compute_brain_mask_errors():
    target = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), grid_affine())
    with pytest.raises(ParameterError, match="mask_type='gm' is not valid"):
        lmasking.compute_brain_mask(target, mask_type="gm")
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
