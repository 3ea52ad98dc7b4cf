"""NiftiMasker / MultiNiftiMasker: shared suite + mask strategies vs nilearn."""

import warnings

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
from nilearn import maskers as nilearn_maskers

from lazyconn.exceptions import ParameterError
from lazyconn.maskers import MultiNiftiMasker, NiftiMasker
from lazyconn.testing.laziness import raise_if_dask_computes
from lazyconn.testing.maskers import (
    CLEAN,
    SHAPE,
    TOL,
    MaskerSuite,
    lazy,
    quiet,
    tiny_affine,
    tiny_run,
)


def tiny_mask(seed=2):
    rng = np.random.default_rng(seed)
    return nib.Nifti1Image((rng.random(SHAPE) > 0.3).astype(np.int8), tiny_affine())


class TestNiftiMaskerSuite(MaskerSuite):
    lazy_cls = NiftiMasker
    reference_cls = nilearn_maskers.NiftiMasker

    def region_kwargs(self):
        return dict(mask_img=tiny_mask())


class TestMultiNiftiMaskerSuite(TestNiftiMaskerSuite):
    lazy_cls = MultiNiftiMasker
    reference_cls = nilearn_maskers.MultiNiftiMasker
    multi = True


def brainish_run(seed):
    """A bright blob on a dark background, so every mask strategy finds a brain."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij"))
    blob = (np.sum(grid**2, axis=0) < 0.6) * 100.0
    data = blob[..., None] + rng.standard_normal(SHAPE + (20,))
    return nib.Nifti1Image(data.astype(np.float32), tiny_affine())


@pytest.mark.parametrize(
    "strategy", ["background", "epi", "whole-brain-template", "gm-template", "wm-template"]
)
@pytest.mark.parametrize("multi", [False, True])
def test_mask_strategies_match_nilearn(strategy, multi):
    imgs = [brainish_run(0), brainish_run(3)]
    ours_cls, ref_cls = (
        (MultiNiftiMasker, nilearn_maskers.MultiNiftiMasker)
        if multi
        else (NiftiMasker, nilearn_maskers.NiftiMasker)
    )
    fit_on = imgs if multi else imgs[0]
    # the tiny box holds little white matter: without opening its mask is not empty
    kw = {"mask_args": {"opening": 0}} if strategy == "wm-template" else {}
    ref = quiet(ref_cls(mask_strategy=strategy, **kw).fit, fit_on)
    ours = ours_cls(mask_strategy=strategy, **kw).fit(
        [lazy(i) for i in imgs] if multi else lazy(imgs[0])
    )
    np.testing.assert_array_equal(
        np.asarray(ours.mask_img_.dataobj).astype(bool), ref.mask_img_.get_fdata().astype(bool)
    )
    assert ours.n_elements_ == ref.n_elements_


def test_runs_parameter_like_nilearn():
    img = tiny_run()
    runs = np.repeat([0, 1], 20)
    kw = dict(mask_img=tiny_mask(), runs=runs, detrend=True, standardize="zscore_sample")
    ref = quiet(nilearn_maskers.NiftiMasker(**kw).fit_transform, img)
    got = NiftiMasker(**kw).fit_transform(lazy(img))
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL)


def test_inverse_transform_like_nilearn():
    img = tiny_run()
    ref_m = quiet(nilearn_maskers.NiftiMasker(mask_img=tiny_mask()).fit, img)
    ours = NiftiMasker(mask_img=tiny_mask()).fit(lazy(img))
    x = ours.transform(lazy(img))
    np.testing.assert_array_equal(
        ours.inverse_transform(x).get_fdata(), quiet(ref_m.inverse_transform, x).get_fdata()
    )
    assert ours.inverse_transform(x[0]).shape == SHAPE


def test_images_on_another_grid_are_resampled_to_the_mask():
    img = tiny_run()
    big = nib.Nifti1Image(np.asarray(tiny_mask().dataobj), np.diag([2.5, 2.5, 2.5, 1.0]))
    ref = quiet(nilearn_maskers.NiftiMasker(mask_img=big).fit_transform, img)
    with pytest.warns(UserWarning, match="resampled to the mask_img resolution"):
        got = NiftiMasker(mask_img=big).fit_transform(lazy(img))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_fit_without_imgs_or_mask_error():
    with pytest.raises(ParameterError, match="'imgs' must be provided"):
        NiftiMasker().fit()


def test_unknown_mask_strategy_error():
    with pytest.raises(ParameterError, match="Unknown value of mask_strategy 'foo'"):
        NiftiMasker(mask_strategy="foo").fit(lazy(tiny_run()))


def test_multi_transform_is_lazy_and_one_compute():
    masker = MultiNiftiMasker(mask_img=tiny_mask(), **CLEAN).fit()
    runs = [lazy(tiny_run(i)) for i in range(3)]
    with raise_if_dask_computes():
        outs = masker.transform(runs, compute=False)
    assert all(isinstance(o, da.Array) and o.shape == (40, masker.n_elements_) for o in outs)
    with raise_if_dask_computes(max_computes=1), warnings.catch_warnings():
        warnings.simplefilter("error")
        arrays = masker.transform(runs)
    ref = quiet(
        nilearn_maskers.MultiNiftiMasker(mask_img=tiny_mask(), **CLEAN).fit_transform,
        [tiny_run(i) for i in range(3)],
    )
    for a, r in zip(arrays, ref, strict=True):
        np.testing.assert_allclose(a, r, rtol=TOL, atol=TOL)
