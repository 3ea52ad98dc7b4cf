"""Shared test suite every lazyconn masker passes (subclass ``MaskerSuite`` per masker).

A subclass sets ``lazy_cls`` / ``reference_cls`` (the nilearn class, imported by the test
module: lazyconn itself never imports nilearn) and implements ``region_kwargs()``
returning the masker's own constructor arguments for a tiny 7x8x9 grid; the suite adds
smoothing + detrend + standardize + band-pass for its "clean" case (with confounds). Everything is
compared with nilearn on the same input, read from unevenly chunked dask arrays.
"""

from __future__ import annotations

import inspect
import pickle
import warnings

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import (
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
)

from lazyconn.exceptions import DimensionError, NotFittedError, ParameterError
from lazyconn.image import LazyImage
from lazyconn.testing.laziness import inaccessible_dask_array, raise_if_dask_computes

SHAPE = (7, 8, 9)
N_T = 40
UNEVEN = (3, 5, 4, N_T)  # two or more uneven chunks along every spatial axis
TOL = 1e-4


def tiny_affine():
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = [-10.0, -12.0, -9.0]
    return aff


def tiny_run(seed=0, dtype=np.float32, n_t=N_T):
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal(SHAPE + (n_t,)) + 10).astype(dtype)
    return nib.Nifti1Image(data, tiny_affine())


def two_box_labels():
    """Two box-shaped regions (labels 1 and 2) on the tiny grid, background 0."""
    data = np.zeros(SHAPE, np.int32)
    data[1:4, 1:5, 1:6] = 1
    data[4:7, 3:8, 3:9] = 2
    return nib.Nifti1Image(data, tiny_affine())


def two_box_maps():
    """:func:`two_box_labels` as two binary maps (float32, one region per volume)."""
    labels = np.asarray(two_box_labels().dataobj)
    return nib.Nifti1Image(np.stack([labels == k for k in (1, 2)], -1).astype("f4"), tiny_affine())


def lazy(img, chunks=UNEVEN):
    data = np.asanyarray(img.dataobj)
    chunks = chunks[: data.ndim - 1] + (data.shape[-1],) if data.ndim == 4 else chunks[:3]
    return LazyImage(da.from_array(data, chunks=chunks), img.affine, img.header)


def assert_same_builtin_error(ours: BaseException, theirs: BaseException) -> None:
    """``ours`` is an instance of every builtin exception class ``theirs`` (nilearn's) is.

    lazyconn never raises nilearn's own classes; it raises its own subclasses of the same
    builtins, so ``except TypeError`` code written for nilearn keeps working.
    """
    builtins = [c for c in type(theirs).__mro__ if c.__module__ == "builtins"]
    missing = [c.__name__ for c in builtins if not isinstance(ours, c)]
    assert not missing, (
        f"{type(ours).__name__} is not a {missing} like nilearn's {type(theirs).__name__}"
    )


def quiet(func, *args, **kwargs):
    """Call the reference (nilearn) with its deprecation chatter silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


CLEAN = dict(detrend=True, standardize="zscore_sample", low_pass=0.1, high_pass=0.01, t_r=2.0)


class MaskerSuite:
    """Base test class; see module docstring."""

    lazy_cls = None
    reference_cls = None
    #: parity tolerance (a masker whose nilearn reference is itself noisier may raise it)
    tol = TOL
    #: Multi maskers take a list of runs
    multi = False

    def region_kwargs(self):  # pragma: no cover - implemented by subclasses
        """The masker's own arguments (seeds, labels, maps or mask), made afresh per call."""
        raise NotImplementedError

    def make_kwargs(self, case):
        """``case="plain"``: the masker's own arguments; ``"clean"``: plus smoothing and cleaning."""
        kw = self.region_kwargs()
        return {**kw, "smoothing_fwhm": 6, **CLEAN} if case == "clean" else kw

    # -- helpers ---------------------------------------------------------------------
    def both(self, case="plain", **extra):
        kw = {**self.make_kwargs(case), **extra}
        return self.lazy_cls(**kw), self.reference_cls(**kw)

    def ref_confounds(self, confounds):
        """Confounds as the reference wants them for one image: nilearn's Multi maskers want
        a list even for one image."""
        return [confounds] if self.multi else confounds

    @staticmethod
    def confounds(seed=1, n_t=N_T):
        return np.random.default_rng(seed).standard_normal((n_t, 3))

    # -- scikit-learn contract -----------------------------------------------------------
    def test_signature_matches_nilearn(self):
        ours = inspect.signature(self.lazy_cls.__init__).parameters
        theirs = inspect.signature(self.reference_cls.__init__).parameters
        assert list(ours) == list(theirs)
        for name, p in theirs.items():
            assert ours[name].default == p.default, name

    def test_sklearn_checks(self):
        name = self.lazy_cls.__name__
        check_parameters_default_constructible(name, self.lazy_cls())
        check_no_attributes_set_in_init(name, self.lazy_cls(**self.make_kwargs("plain")))

    def test_clone_params_pickle_fit_returns_self(self):
        masker = self.lazy_cls(**self.make_kwargs("clean"))
        cloned = clone(masker)
        assert cloned.get_params().keys() == masker.get_params().keys()
        cloned.set_params(detrend=False)
        assert cloned.detrend is False and masker.detrend is True
        run = lazy(tiny_run())
        assert masker.fit(run) is masker
        expected = masker.transform(run, confounds=self.confounds())
        again = pickle.loads(pickle.dumps(masker))
        np.testing.assert_array_equal(again.transform(run, confounds=self.confounds()), expected)

    def test_transform_before_fit(self):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            self.lazy_cls(**self.make_kwargs("plain")).transform(lazy(tiny_run()))

    # -- parity with nilearn -------------------------------------------------------------
    @pytest.mark.parametrize("case", ["plain", "clean"])
    def test_parity_uneven_chunks(self, case):
        ours, ref = self.both(case)
        img = tiny_run()
        conf = self.confounds() if case == "clean" else None
        expected = quiet(
            ref.fit_transform, img, confounds=None if conf is None else self.ref_confounds(conf)
        )
        got = ours.fit_transform(lazy(img), confounds=conf)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=self.tol, rtol=self.tol)

    @pytest.mark.parametrize("dtype", [np.float64, np.int16])
    def test_dtypes_like_nilearn(self, dtype):
        ours, ref = self.both("plain")
        img = tiny_run(dtype=dtype)
        expected = quiet(ref.fit_transform, img)
        got = ours.fit_transform(lazy(img))
        assert got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, atol=TOL, rtol=TOL)

    @pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float32, np.float64, bool])
    def test_inverse_transform_dtypes_like_nilearn(self, dtype):
        extra = {}
        if "seeds" in self.region_kwargs():  # spheres invert only onto a given mask
            extra["mask_img"] = nib.Nifti1Image(np.ones(SHAPE, np.int8), tiny_affine())
        ours, ref = self.both("plain", **extra)
        img = tiny_run()
        signals = quiet(ref.fit_transform, img).astype(dtype)
        expected = quiet(ref.inverse_transform, signals)
        ours.fit(lazy(img))
        if dtype is bool:  # nilearn's "Casting boolean input" warning
            with pytest.warns(UserWarning, match="Casting boolean input"):
                got = ours.inverse_transform(signals)
        else:
            got = ours.inverse_transform(signals)
        assert got.get_data_dtype() == expected.get_data_dtype()
        assert np.asarray(got.dataobj).dtype == np.asarray(expected.dataobj).dtype
        np.testing.assert_allclose(got.get_fdata(), expected.get_fdata(), atol=TOL, rtol=TOL)

    @pytest.mark.parametrize(
        ("bad", "match"),
        [
            ("/nonexistent/run.nii", "does not exist"),
            (np.zeros((3, 3, 3)), "has type ndarray"),
            (nib.Nifti1Image(np.ones((2, 2, 2, 2, 2), np.float32), np.eye(4)), r"\(5-D\)"),
        ],
        ids=["missing", "array", "5d"],
    )
    def test_fit_checks_imgs_like_nilearn(self, bad, match):
        """imgs given to fit are checked even when the masker does not need them."""
        ours, ref = self.both("plain")
        with pytest.raises(Exception) as expected:  # nilearn's class
            quiet(ref.fit, bad)
        with pytest.raises(Exception, match=match) as got:  # checked below
            ours.fit(bad)
        assert_same_builtin_error(got.value, expected.value)

    def test_3d_image_gives_1d(self):
        ours, ref = self.both("plain")
        img = tiny_run()
        vol = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine)
        expected = quiet(ref.fit(img).transform, vol)
        got = ours.fit(lazy(img)).transform(lazy(vol))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=TOL, rtol=TOL)

    def test_nan_voxels_like_nilearn(self):
        ours, ref = self.both("plain", smoothing_fwhm=6)
        data = np.asarray(tiny_run().dataobj).copy()
        data[0, 0, :, 3] = np.nan
        data[3, 4, 5, :] = np.nan
        img = nib.Nifti1Image(data, tiny_affine())
        expected = quiet(ref.fit_transform, img)
        np.testing.assert_allclose(ours.fit_transform(lazy(img)), expected, atol=TOL, rtol=TOL)

    def test_high_variance_confounds_like_nilearn(self):
        ours, ref = self.both("plain", high_variance_confounds=True, detrend=True)
        img = tiny_run()
        expected = quiet(ref.fit_transform, img, confounds=self.ref_confounds(self.confounds()))
        got = ours.fit_transform(lazy(img), confounds=self.confounds())
        np.testing.assert_allclose(got, expected, atol=self.tol, rtol=self.tol)

    def test_sample_mask_like_nilearn(self):
        """Scrubbing (censored volumes whose mirrors are kept: nilearn's intended path)."""
        ours, ref = self.both("clean")
        keep = np.delete(np.arange(N_T), [5, 17, 30])
        img = tiny_run()
        conf = self.confounds()
        mask = [keep] if self.ref_confounds(conf) is not conf else keep
        expected = quiet(
            ref.fit_transform, img, confounds=self.ref_confounds(conf), sample_mask=mask
        )
        got = ours.fit_transform(lazy(img), confounds=conf, sample_mask=keep)
        assert got.shape == expected.shape == (N_T - 3, ours.n_elements_)
        np.testing.assert_allclose(got, expected, atol=self.tol, rtol=self.tol)

    def test_fortran_ordered_chunks_like_zarr_stores(self):
        """Stored runs are time-slowest: their chunks arrive F-contiguous (other code path)."""
        ours, ref = self.both("clean")
        data = np.asarray(tiny_run().dataobj).copy()
        data[1, 2, :, 5] = np.nan
        img = nib.Nifti1Image(data, tiny_affine())
        fortran = lazy(img).data.map_blocks(np.asfortranarray)
        expected = quiet(ref.fit_transform, img, confounds=self.ref_confounds(self.confounds()))
        got = ours.fit_transform(LazyImage(fortran, tiny_affine()), confounds=self.confounds())
        np.testing.assert_allclose(got, expected, atol=self.tol, rtol=self.tol)

    # -- laziness and runs ---------------------------------------------------------------
    def test_compute_false_reads_nothing(self):
        masker = self.lazy_cls(**self.make_kwargs("clean")).fit(lazy(tiny_run()))
        ghost = LazyImage(inaccessible_dask_array(SHAPE + (N_T,), UNEVEN), tiny_affine())
        with raise_if_dask_computes():
            out = masker.transform(ghost, confounds=self.confounds(), compute=False)
        assert isinstance(out, da.Array)
        assert out.shape == (N_T, masker.n_elements_)

    def test_list_of_runs_like_nilearn(self):
        """Multi maskers: a list of runs, one compute; others: nilearn's DimensionError."""
        masker = self.lazy_cls(**self.make_kwargs("clean")).fit(lazy(tiny_run()))
        runs = [lazy(tiny_run(1)), lazy(tiny_run(2, n_t=45))]
        if not self.multi:
            ref = self.reference_cls(**self.make_kwargs("clean")).fit(tiny_run())
            with pytest.raises(Exception) as expected:  # nilearn's class
                quiet(ref.transform, [tiny_run(1), tiny_run(2)])
            with pytest.raises(DimensionError, match=r"imgs\[0\] has shape .* \(4-D\)") as got:
                masker.transform(runs)
            assert_same_builtin_error(got.value, expected.value)
            return
        confs = [self.confounds(3), self.confounds(4, n_t=45)]
        singles = [masker.transform(r, confounds=c) for r, c in zip(runs, confs, strict=True)]
        with raise_if_dask_computes(max_computes=1):
            outs = masker.transform(runs, confounds=confs)
        assert isinstance(outs, list) and len(outs) == 2
        for o, s in zip(outs, singles, strict=True):
            np.testing.assert_allclose(o, s, rtol=1e-6, atol=1e-6)
        lazies = masker.transform(runs, confounds=confs, compute=False)
        assert all(isinstance(x, da.Array) for x in lazies)

    # -- bad input -------------------------------------------------------------------
    def test_confounds_wrong_length(self):
        masker = self.lazy_cls(**self.make_kwargs("clean")).fit(lazy(tiny_run()))
        with pytest.raises(ParameterError, match="confounds"):
            masker.transform(lazy(tiny_run()), confounds=self.confounds(n_t=N_T - 3))

    def test_confounds_list_length_mismatch(self):
        if not self.multi:
            return
        masker = self.lazy_cls(**self.make_kwargs("clean")).fit(lazy(tiny_run()))
        runs = [lazy(tiny_run(1)), lazy(tiny_run(2))]
        with pytest.raises(ParameterError, match="confounds is a list of 3 but imgs holds 2"):
            masker.transform(runs, confounds=[self.confounds()] * 3)

    def test_filter_without_t_r(self):
        kw = {**self.make_kwargs("plain"), "low_pass": 0.1}
        with pytest.raises(ParameterError, match="need the repetition time, but t_r=None"):
            self.lazy_cls(**kw).fit(lazy(tiny_run()))

    def test_3d_image_where_run_needed(self):
        masker = self.lazy_cls(**self.make_kwargs("clean")).fit(lazy(tiny_run()))
        vol = lazy(tiny_run()).data[..., 0]
        with pytest.raises(DimensionError, match="3-D, one volume"):
            masker.transform(LazyImage(vol, tiny_affine()), confounds=self.confounds())

    def test_standardize_zscore_rejected(self):
        kw = {**self.make_kwargs("plain"), "standardize": "zscore"}
        with pytest.raises(ParameterError, match="standardize='zscore' is not valid"):
            self.lazy_cls(**kw).fit(lazy(tiny_run()))
