"""Masker behaviours nilearn users rely on: resampled masks, masks leaving no region."""

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import maskers as nilearn_maskers

from lazyconn import maskers
from lazyconn.exceptions import ParameterError
from lazyconn.testing.maskers import (
    SHAPE,
    assert_same_builtin_error,
    lazy,
    quiet,
    tiny_affine,
    tiny_run,
    two_box_labels,
    two_box_maps,
)


def _fine_mask(box=None):
    """A mask on a finer grid (1.5 mm) covering the same box, or only ``box`` of it."""
    aff = tiny_affine().copy()
    aff[:3, :3] /= 2
    data = np.ones(tuple(2 * s for s in SHAPE), np.int8)
    if box is not None:
        data[:] = 0
        data[box] = 1
    return nib.Nifti1Image(data, aff)


CASES = [
    ("NiftiLabelsMasker", lambda: {"labels_img": two_box_labels(), "resampling_target": "labels"}),
    ("NiftiLabelsMasker", lambda: {"labels_img": two_box_labels(), "resampling_target": "data"}),
    ("NiftiMapsMasker", lambda: {"maps_img": two_box_maps(), "resampling_target": "maps"}),
    ("NiftiMapsMasker", lambda: {"maps_img": two_box_maps(), "resampling_target": "data"}),
]


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_mask_img_resampled_to_the_target_like_nilearn(name, kwargs):
    img = tiny_run()
    ref = quiet(getattr(nilearn_maskers, name)(**kwargs(), mask_img=_fine_mask()).fit, img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # resampling notices, as nilearn's
        ours = getattr(maskers, name)(**kwargs(), mask_img=_fine_mask()).fit(lazy(img))
    assert ours.mask_img_.shape == ref.mask_img_.shape
    np.testing.assert_array_equal(ours.mask_img_.affine, ref.mask_img_.affine)
    np.testing.assert_array_equal(
        np.asarray(ours.mask_img_.dataobj).astype(bool),
        np.asarray(ref.mask_img_.dataobj).astype(bool),
    )
    expected = quiet(ref.transform, img)
    np.testing.assert_allclose(ours.transform(lazy(img)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_mask_leaving_no_region_is_an_error_like_nilearn(name, kwargs):
    # the mask covers only the voxel (0, 0, 0) of the data grid: no label or map there
    mask = _fine_mask(box=(slice(0, 2), slice(0, 2), slice(0, 2)))
    img = tiny_run()
    with pytest.raises(Exception) as expected:  # nilearn's class
        quiet(getattr(nilearn_maskers, name)(**kwargs(), mask_img=mask).fit, img)
    what = "label" if "Labels" in name else "map"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ParameterError, match=f"No {what} left after applying mask") as got:
            getattr(maskers, name)(**kwargs(), mask_img=mask).fit(lazy(img))
    assert_same_builtin_error(got.value, expected.value)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"labels": ["Background", "first", "second"]},
        {"lut": lambda: pd.DataFrame({"index": [0, 1, 2], "name": ["Background", "a", "b"]})},
        {"labels": ["Background", "first"]},
        {"labels": ["first", "second", "third"]},
        {"lut": lambda: pd.DataFrame({"index": [0, 1], "name": ["Background", "a"]})},
        {"lut": lambda: pd.DataFrame({"index": [0, 1, 2, 5], "name": ["B", "a", "b", "e"]})},
    ],
    ids=["values", "labels", "lut", "few-names", "many-names", "short-lut", "long-lut"],
)
def test_lut_region_names_and_ids_like_nilearn(extra):
    extra = {k: v() if callable(v) else v for k, v in extra.items()}
    img = tiny_run()
    ref = quiet(nilearn_maskers.NiftiLabelsMasker(two_box_labels(), **extra).fit, img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # names/labels count (test_warnings_parity)
        ours = maskers.NiftiLabelsMasker(two_box_labels(), **extra).fit(lazy(img))
    pd.testing.assert_frame_equal(ours.lut_, ref.lut_)
    assert ours.region_names_ == ref.region_names_
    assert ours.region_ids_ == ref.region_ids_
    assert ours.labels_ == ref.labels_


@pytest.mark.parametrize("name", ["NiftiMasker", "NiftiLabelsMasker"])
def test_4d_mask_img_like_nilearn(name):
    img = tiny_run()
    data = np.ones((*SHAPE, 2), np.int8)
    data[0, :, :, 1] = 0  # a voxel is in the mask only if it is in every volume
    mask = nib.Nifti1Image(data, tiny_affine())
    kwargs = {"labels_img": two_box_labels()} if name == "NiftiLabelsMasker" else {}
    expected = quiet(getattr(nilearn_maskers, name)(mask_img=mask, **kwargs).fit_transform, img)
    got = getattr(maskers, name)(mask_img=mask, **kwargs).fit_transform(lazy(img))
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_list_of_volumes_is_one_run_like_nilearn():
    img = tiny_run()
    vols = [nib.Nifti1Image(np.asarray(img.dataobj)[..., i], img.affine) for i in range(3)]
    mask = nib.Nifti1Image(np.ones(SHAPE, np.int8), tiny_affine())
    expected = quiet(nilearn_maskers.NiftiMasker(mask_img=mask).fit().transform, vols)
    got = maskers.NiftiMasker(mask_img=mask).fit().transform(vols)
    assert got.shape == expected.shape == (3, int(np.prod(SHAPE)))
    np.testing.assert_array_equal(got, expected)


def test_label_vanishing_after_resampling_like_nilearn():
    """A one-voxel label lost when the atlas is resampled onto a coarser run."""
    labels = np.zeros(SHAPE, np.int32)
    labels[1:4, 1:5, 1:6] = 1
    labels[5, 6, 7] = 2  # falls between the coarse grid's sample points
    atlas = nib.Nifti1Image(labels, tiny_affine())
    aff = tiny_affine().copy()
    aff[:3, :3] *= 2
    rng = np.random.default_rng(0)
    run = nib.Nifti1Image(rng.standard_normal((4, 4, 5, 6)).astype(np.float32), aff)
    ref = nilearn_maskers.NiftiLabelsMasker(atlas, resampling_target="data")
    expected = quiet(ref.fit_transform, run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours = maskers.NiftiLabelsMasker(atlas, resampling_target="data")
        got = ours.fit_transform(lazy(run))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert ours.n_elements_ == ref.n_elements_
    assert expected.shape[1] == 1  # label 2 did vanish


def _coarse_run(n_t=5):
    aff = tiny_affine().copy()
    aff[:3, :3] *= 2
    data = np.random.default_rng(0).standard_normal((4, 4, 5, n_t)).astype(np.float32) + 10
    return nib.Nifti1Image(data, aff)


@pytest.mark.parametrize(
    ("name", "kwargs", "run"),
    [
        ("NiftiLabelsMasker", {}, tiny_run),
        ("NiftiLabelsMasker", {"mask_img": "half"}, tiny_run),
        ("NiftiLabelsMasker", {"mask_img": "half", "keep_masked_labels": True}, tiny_run),
        ("NiftiLabelsMasker", {"mask_img": "half", "strategy": "median"}, tiny_run),
        ("NiftiLabelsMasker", {"resampling_target": "data"}, _coarse_run),
        ("NiftiLabelsMasker", {"resampling_target": "labels", "mask_img": "half"}, _coarse_run),
        ("MultiNiftiLabelsMasker", {"mask_img": "half"}, tiny_run),
        (
            "NiftiLabelsMasker",
            {"mask_img": "half", "labels": ["Background", "a", "b", "c"]},
            tiny_run,
        ),
    ],
    ids=["plain", "mask", "keep_masked", "median", "data-grid", "labels-grid", "multi", "names"],
)
def test_region_atlas_and_region_attributes_like_nilearn(name, kwargs, run):
    """``region_atlas_`` (set by transform) and the region attributes after transform."""
    labels = np.asarray(two_box_labels().dataobj).copy()
    labels[0, 0, 0] = 3  # a label the half mask removes
    kwargs = dict(kwargs, labels_img=nib.Nifti1Image(labels, tiny_affine()))
    if kwargs.get("mask_img") == "half":
        kwargs["mask_img"] = nib.Nifti1Image(
            (np.indices(SHAPE)[0] >= 1).astype(np.int8), tiny_affine()
        )
    img = run()
    ref = getattr(nilearn_maskers, name)(**kwargs)
    ours = getattr(maskers, name)(**kwargs)
    multi = name.startswith("Multi")
    expected = quiet(ref.fit_transform, [img] if multi else img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        got = ours.fit_transform([lazy(img)] if multi else lazy(img))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    atlas, ref_atlas = ours.region_atlas_, ref.region_atlas_
    assert atlas.shape == ref_atlas.shape
    np.testing.assert_allclose(atlas.affine, ref_atlas.affine)
    np.testing.assert_array_equal(np.asarray(atlas.dataobj), np.asarray(ref_atlas.dataobj))
    assert atlas.get_data_dtype() == ref_atlas.get_data_dtype()
    assert ours.region_ids_ == ref.region_ids_
    assert ours.region_names_ == ref.region_names_
    assert ours.labels_ == ref.labels_
    assert ours.n_elements_ == ref.n_elements_
    pd.testing.assert_frame_equal(ours.lut_, ref.lut_, check_dtype=False)


def test_region_atlas_is_set_by_transform_like_nilearn():
    masker = maskers.NiftiLabelsMasker(two_box_labels()).fit()
    assert not hasattr(masker, "region_atlas_")
    assert not hasattr(nilearn_maskers.NiftiLabelsMasker(two_box_labels()).fit(), "region_atlas_")
    masker.transform(lazy(tiny_run()), compute=False)
    assert masker.region_atlas_.shape == SHAPE
