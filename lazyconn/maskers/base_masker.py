"""Machinery shared by every masker: parameters, runs, confounds, cleaning, compute.

A masker builds, for each run, ``extract -> signal.clean -> cast`` as one dask graph;
``transform`` computes every run given to it with ONE ``dask.compute`` call (or returns
the lazy results with ``compute=False``).
"""

from __future__ import annotations

import contextlib
import numbers

import dask
import dask.array as da
import nibabel as nib
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from lazyconn import signal
from lazyconn._docs import fill_doc
from lazyconn._progress import dask_progress, describe_imgs, log_step
from lazyconn._utils import LOCAL_SCHEDULER, check_fitted, check_in, check_real, rechunk, warn
from lazyconn.exceptions import (
    DimensionError,
    LazyconnWarning,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.image import LazyImage, high_variance_confounds, load
from lazyconn.image._niimg import load_mask_img
from lazyconn.io.confounds import sanitize_confounds
from lazyconn.maskers._report import generate_report, reporting_data
from lazyconn.ops.voxels import VoxelStream

_STANDARDIZE = ("zscore_sample", "psc", True, False, None)


def target_dtype(source_dtype, dtype):
    """nilearn's ``get_target_dtype``: None, "auto" (int32 / float32) or a dtype."""
    if dtype is None:
        return None
    source_dtype = np.dtype(source_dtype)
    if isinstance(dtype, str) and dtype == "auto":
        dtype = np.int32 if source_dtype.kind == "i" else np.float32
    dtype = np.dtype(dtype)
    return None if dtype == source_dtype else dtype


def as_4d(img: LazyImage) -> tuple[LazyImage, bool]:
    """A 4-D view of a run (a 3-D image becomes one volume) and whether it was 3-D."""
    if img.ndim == 3:
        return img.with_data(img.data[..., None]), True
    if img.ndim != 4:
        raise DimensionError(f"imgs has shape {img.shape}; expected a 3-D or 4-D image.")
    return img, False


class BaseMasker(TransformerMixin, BaseEstimator):
    """Base class of lazyconn's maskers (scikit-learn estimator, nilearn's API).

    Subclasses implement ``_fit(imgs)`` (sets the fitted attributes and ``n_elements_``),
    ``_extract(img)`` (a 4-D LazyImage -> lazy (T, n_elements_) signals before cleaning)
    and ``inverse_transform``.

    ``memory`` and ``memory_level`` are accepted for compatibility with nilearn and
    ignored: lazyconn does not cache with joblib (the group layer caches results).
    ``reports`` and ``cmap`` serve ``generate_report`` (an HTML report, with matplotlib).

    Differences from nilearn 0.14.1: ``transform`` takes ``compute=`` and lists of runs;
    boolean ``standardize`` is accepted without nilearn's FutureWarning;
    ``smoothing_fwhm="fast"`` is accepted (nilearn's maskers reject it); filtering without
    ``t_r`` fails at ``fit`` with a clear error (nilearn fails inside ``clean``); a 3-D
    image with confounds, filtering or high-variance confounds is a ``DimensionError``;
    warnings about the run's values (nilearn's "Non-finite values detected" of the labels
    and maps maskers, the spheres masker's NaN notice) are not emitted, since checking them
    would read the run before it is asked for: NaN/inf voxels are read as 0 as in nilearn
    (``GroupConnectome`` counts them in its pass and warns per subject). Warnings about
    masks, atlases, grids and parameters are nilearn's (docs/nilearn-parity.md).
    """

    #: Multi-run maskers append high-variance confounds after the user's (nilearn's order).
    _hv_confounds_last = False
    #: Whether a list of 3-D images is one run (nilearn's non-Multi maskers concatenate it).
    _list_of_3d_is_one_run = True

    # ------------------------------------------------------------------ parameters
    def _check_common_params(self):
        check_in("standardize", self.standardize, _STANDARDIZE)
        for name in ("detrend", "standardize_confounds", "high_variance_confounds"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ParameterTypeError(
                    f"{name}={value!r} has type {type(value).__name__}; expected True or False."
                )
        for name in ("low_pass", "high_pass", "t_r"):
            check_real(
                name,
                getattr(self, name),
                low=0,
                low_inclusive=False,
                allow_none=True,
                expected="None or a number > 0",
            )
        fwhm = self.smoothing_fwhm
        if fwhm is not None and not (isinstance(fwhm, str) and fwhm == "fast"):
            values = np.asarray([fwhm]).ravel()
            ok = all(
                v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 0)
                for v in values
            )
            if not ok or values.size not in (1, 3):
                raise ParameterError(
                    f"smoothing_fwhm={fwhm!r} is not valid; expected None, 'fast', a number "
                    ">= 0 (mm) or 3 of them."
                )
        if self.dtype is not None:
            if isinstance(self.dtype, str) and self.dtype == "auto":
                pass
            else:
                try:
                    dt = np.dtype(self.dtype)
                except TypeError as exc:
                    raise ParameterTypeError(
                        f"dtype={self.dtype!r} is not a numpy dtype; expected None, 'auto' or "
                        "a numeric dtype."
                    ) from exc
                if dt.kind == "b":
                    raise ParameterTypeError("dtype=bool is not valid; 'dtype' cannot be bool.")
        verbose = self.verbose
        if not isinstance(verbose, (numbers.Integral, np.bool_)):
            raise ParameterTypeError(
                f"verbose={verbose!r} has type {type(verbose).__name__}; expected an integer "
                "(0: silent, 1: nilearn's step messages, 2: more)."
            )
        if self.clean_args is not None and not isinstance(self.clean_args, dict):
            raise ParameterTypeError(
                f"clean_args={self.clean_args!r} has type {type(self.clean_args).__name__}; "
                "expected a dict of extra arguments for lazyconn.signal.clean."
            )
        if (
            (self.low_pass is not None or self.high_pass is not None)
            and self.t_r is None
            and (self.clean_args or {}).get("filter", "butterworth") is not False
        ):
            raise ParameterError(
                f"low_pass={self.low_pass!r}, high_pass={self.high_pass!r} need the "
                "repetition time, but t_r=None; expected t_r=<seconds between volumes> "
                "(the masker does not read it from the image header, as in nilearn)."
            )

    def _fitted_smoothing(self):
        fwhm = self.smoothing_fwhm
        if isinstance(fwhm, numbers.Real) and not isinstance(fwhm, bool) and fwhm == 0:
            return None  # nilearn warns and does not smooth
        return fwhm

    def _standardize(self):
        return (
            {True: "zscore_sample", False: None}.get(self.standardize, self.standardize)
            if isinstance(self.standardize, (bool, np.bool_))
            else self.standardize
        )

    # ------------------------------------------------------------------ fit
    def fit(self, imgs=None, y=None):
        """Fit the masker (load and check masks / regions; compute a mask if needed).

        Parameters
        ----------
        imgs : image or list of images, optional
            Images the regions are resampled to (``resampling_target="data"``) or the mask
            is computed from.
        y : ignored

        Returns
        -------
        self
        """
        del y
        self._check_common_params()
        self.clean_args_ = {} if self.clean_args is None else dict(self.clean_args)
        if imgs is not None:
            self._log("fit", f"Loading data from {describe_imgs(imgs)}")
        with LOCAL_SCHEDULER:
            self.mask_img_ = self._load_mask()
            self._weights_cache = {}
            if imgs is not None:
                # As nilearn, imgs are checked even when they are not needed (a given mask):
                # opening reads headers only.
                for run in self._split_runs(imgs)[0]:
                    as_4d(run)
            self._fit(imgs)
            self._reporting_data = reporting_data(self, imgs)
        self._log("fit", "Finished fit")
        return self

    def generate_report(self, engine="matplotlib", title=None, **kwargs):
        """An HTML report of the masker (nilearn's ``generate_report``; needs matplotlib).

        The report holds the masker's summary (mask size, regions table, maps or seeds),
        its parameters, orthogonal cuts of the mask / regions / maps / spheres over the
        middle volume of the first run given to ``fit`` (PNG, embedded) and the report's
        warnings (also emitted as ``UserWarning``, as nilearn). Differences from nilearn:
        only the "matplotlib" engine; the figures are simpler (three cuts, no interactive
        viewer); without matplotlib this raises ImportError naming lazyconn's ``plot``
        extra (nilearn returns a report without figures). The middle volume is read now:
        a run chunked with its whole time axis per chunk is read once.

        Parameters
        ----------
        engine : {"matplotlib"}, default="matplotlib"
            The only engine lazyconn has.
        title : str, optional
            The report's title (default: the class name).
        **kwargs
            ``displayed_maps`` (maps maskers) or ``displayed_spheres`` (spheres masker):
            "all", an int (the first n, default 10) or a list of indices.

        Returns
        -------
        lazyconn.maskers.HTMLReport
            ``save_as_html(path)``, ``open_in_browser()``, ``get_standalone()`` and the
            notebook display, as nilearn's report.
        """
        return generate_report(self, engine=engine, title=title, **kwargs)

    def _log(self, method: str, message: str, level: int = 1) -> None:
        """nilearn's ``verbose`` step message ``[Class.method] message`` (on stderr) when
        ``verbose >= level``."""
        if int(self.verbose) >= level:
            log_step(f"{type(self).__name__}.{method}", message)

    def _load_mask(self):
        """The ``mask_img`` as a 3-D binary nibabel image, validated (None if not given)."""
        if self.mask_img is None:
            return None
        self._log("fit", f"Loading mask from {describe_imgs(self.mask_img)}")
        img = load(self.mask_img)
        if img.ndim == 4:  # nilearn: a voxel is in the mask if all volumes are non-zero
            img = img.with_data((img.data != 0).all(axis=3))
        mask, affine = load_mask_img(img)
        return nib.Nifti1Image(mask.astype(np.int8), affine)

    def _check_array(self, signals, name: str) -> np.ndarray:
        """``inverse_transform``'s input as numpy, shape-checked; bool is cast to ``dtype``
        (int32 by default) with nilearn's warning. Every ``inverse_transform`` starts here."""
        self._log("inverse_transform", "Computing image from signals")
        x = np.atleast_1d(np.asarray(signals))
        if x.ndim > 2 or x.shape[-1] != self.n_elements_:
            raise ParameterError(
                f"{name} has shape {x.shape}; expected (n_samples, {self.n_elements_}) or "
                f"({self.n_elements_},)."
            )
        if x.dtype == bool:
            target = np.int32 if self.dtype is None else self.dtype
            warn(f"Casting boolean input to {target}", LazyconnWarning)
            x = x.astype(np.float32 if isinstance(target, str) and target == "auto" else target)
        return x

    @staticmethod
    def _output_image(data, affine) -> nib.Nifti1Image:
        """``inverse_transform``'s nibabel image with nilearn's dtypes.

        bool becomes int32; int64 data keep an int64 header but are held as int32 when they
        fit (nilearn's ``new_img_like``), instead of nibabel's refusal of int64 arrays.
        """
        if data.dtype == bool:
            data = data.astype(np.int32)
        header_dtype = data.dtype
        if data.dtype == np.int64 and data.size:
            info = np.iinfo(np.int32)
            if info.min <= data.min() and data.max() <= info.max:
                data = data.astype(np.int32)
        return nib.Nifti1Image(data, affine, dtype=header_dtype)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "n_elements_")

    def _check_fitted(self) -> None:
        check_fitted(self)

    @property
    def _n_features_out(self):
        return self.n_elements_

    def get_feature_names_out(self, input_features=None):
        """Output feature names: ``<classname lower><i>`` (nilearn's default)."""
        del input_features
        self._check_fitted()
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self.n_elements_)], dtype=object)

    # ------------------------------------------------------------------ transform
    def _split_runs(self, imgs):
        """(list of LazyImage runs, whether a single run was given)."""
        if isinstance(imgs, (list, tuple)):
            if len(imgs) == 0:
                raise ParameterError("imgs=[] is empty; expected an image or a list of runs.")
            runs = [load(im) for im in imgs]
            if self._list_of_3d_is_one_run:
                # nilearn's single-run maskers: a list is one run made of 3-D volumes.
                for i, run in enumerate(runs):
                    if run.ndim != 3:
                        raise DimensionError(
                            f"imgs[{i}] has shape {run.shape} ({run.ndim}-D): a list given to "
                            f"{type(self).__name__} must hold 3-D images (one run); expected "
                            "one 4-D run. For several runs use a Multi masker, or transform "
                            "each run with compute=False and compute them together."
                        )
                from lazyconn.image._niimg import load_4d

                return [load_4d(list(imgs))], True
            return runs, False
        return [load(imgs)], True

    @staticmethod
    def _per_run(name, value, n_runs, single):
        if single:
            return [value]
        if value is None:
            return [None] * n_runs
        if not isinstance(value, (list, tuple)) or len(value) != n_runs:
            got = (
                f"a list of {len(value)}"
                if isinstance(value, (list, tuple))
                else f"a {type(value).__name__}"
            )
            raise ParameterError(
                f"{name} is {got} but imgs holds {n_runs} runs; expected None or a list "
                f"with one {name} entry per run."
            )
        return list(value)

    @fill_doc
    def transform(self, imgs, confounds=None, sample_mask=None, *, compute=True):
        """Extract signals from one run or a list of runs.

        Parameters
        ----------
        %(masker_imgs)s
        %(masker_transform_params)s

        Returns
        -------
        %(masker_transform_returns)s
        """
        self._check_fitted()
        with LOCAL_SCHEDULER:
            return self._transform(imgs, confounds, sample_mask, compute)

    def _transform(self, imgs, confounds, sample_mask, compute):
        runs, single = self._split_runs(imgs)
        confs = self._per_run("confounds", confounds, len(runs), single)
        masks = self._per_run("sample_mask", sample_mask, len(runs), single)
        outs = []
        for img, c, m in zip(runs, confs, masks, strict=True):
            self._log("transform", f"Loading data from {describe_imgs(img)}")
            stream = self._long_run_stream(img, c, m) if compute else None
            outs.append(self._transform_run(img, c, m) if stream is None else stream)
        if compute:
            lazy = [o for o in outs if not isinstance(o, VoxelStream)]
            label = f"{type(self).__name__}.transform: tasks"
            with dask_progress(label, enabled=int(self.verbose) >= 1):
                done = iter(dask.compute(*lazy))
            outs = [
                o.compute() if isinstance(o, VoxelStream) else np.asarray(next(done)) for o in outs
            ]
        return outs[0] if single else outs

    def _long_run_stream(self, img, confounds, sample_mask):
        """A long run's signals as a stream (voxel maskers; None: the graph computes them)."""
        del img, confounds, sample_mask
        return None

    def transform_single_imgs(self, imgs, confounds=None, sample_mask=None, *, compute=True):
        """Signals of one run, as nilearn's ``transform_single_imgs``.

        Parameters
        ----------
        imgs : 3-D/4-D image, or list of 3-D images (one run)
        confounds : confounds of the run
        sample_mask : kept volumes of the run
        compute : bool, default=True
            lazyconn only: False returns the lazy dask array.

        Returns
        -------
        numpy.ndarray (n_samples, n_features), 1-D for a 3-D image, or a dask array.
        """
        self._check_fitted()
        if isinstance(imgs, (list, tuple)):
            from lazyconn.image._niimg import load_4d

            imgs = load_4d(list(imgs))  # a list of 3-D images is one run (DimensionError else)
        return self.transform(imgs, confounds=confounds, sample_mask=sample_mask, compute=compute)

    @fill_doc
    def fit_transform(
        self, imgs, y=None, confounds=None, sample_mask=None, *, compute=True, **fit_params
    ):
        """``fit(imgs)`` then ``transform(imgs, confounds, sample_mask, compute=compute)``.

        Parameters
        ----------
        %(masker_imgs)s
        y : ignored
        %(masker_transform_params)s
        **fit_params
            Passed to ``fit``.

        Returns
        -------
        %(masker_transform_returns)s
        """
        del y
        with self._fit_transform_filters():
            self.fit(imgs, **fit_params)
        return self.transform(imgs, confounds=confounds, sample_mask=sample_mask, compute=compute)

    def _fit_transform_filters(self):
        """Warnings ``fit_transform`` silences in its ``fit`` (none here)."""
        return contextlib.nullcontext()

    def _input_dtype(self, img):
        """dtype the voxels are cast to before anything (nilearn's ``check_niimg(dtype=)``)."""
        return target_dtype(img.dtype, self.dtype) or img.dtype

    def _output_dtype(self, source_dtype):
        """Final cast of the cleaned signals (nilearn's ``_get_target_dtype``)."""
        out = target_dtype(source_dtype, self.dtype)
        if out is None and self.dtype is not None:
            out = np.dtype(source_dtype)
        return out

    def _transform_run(self, img: LazyImage, confounds, sample_mask):
        img4, was_3d = as_4d(img)
        if was_3d and (
            confounds is not None
            or self.high_variance_confounds
            or self.low_pass is not None
            or self.high_pass is not None
        ):
            raise DimensionError(
                f"imgs has shape {img.shape} (3-D, one volume), but confounds, filtering or "
                "high_variance_confounds need a run; expected a 4-D image (x, y, z, time)."
            )
        n_t = img4.shape[3]
        in_dtype = self._input_dtype(img4)
        if in_dtype != img4.dtype:
            img4 = img4.with_data(img4.data.astype(in_dtype))
        if self._fitted_smoothing() is not None:
            self._log("transform", "Smoothing images")
        self._log("transform", "Extracting region signals")
        signals = self._extract(img4)
        self._log("transform", "Cleaning extracted signals")
        signals = self._clean(signals, img4, confounds, sample_mask, n_t)
        out_dtype = self._output_dtype(img.dtype)
        if out_dtype is not None:
            signals = signals.astype(out_dtype)
        if was_3d:  # nilearn squeezes: (K,), or a 0-d array for one region
            signals = signals[0] if signals.shape[1] != 1 else signals[0, 0]
        return signals

    # ------------------------------------------------------------------ cleaning
    def _clean_kwargs(self):
        kwargs = dict(
            detrend=self.detrend,
            standardize=self._standardize(),
            standardize_confounds=self.standardize_confounds,
            t_r=self.t_r,
            low_pass=self.low_pass,
            high_pass=self.high_pass,
        )
        runs = getattr(self, "runs", None)
        if runs is not None:
            kwargs["runs"] = runs
        kwargs.update(self.clean_args_)
        return kwargs

    def _clean(self, signals, img4, confounds, sample_mask, n_t):
        """``lazyconn.signal.clean`` on the lazy (T, F) signals, as nilearn's maskers call it."""
        kwargs = self._clean_kwargs()
        user = sanitize_confounds(confounds, n_t) if confounds is not None else None
        if not self.high_variance_confounds:
            return signal.clean(signals, confounds=user, sample_mask=sample_mask, **kwargs)
        # Validate everything (and get the output length) with the user's confounds only.
        probe = signal.clean(signals, confounds=user, sample_mask=sample_mask, **kwargs)
        hv = self._high_variance_confounds(img4)
        x = rechunk(signals, {0: -1})
        return da.blockwise(
            _clean_with_hv,
            "tf",
            x,
            "tf",
            hv,
            "tc",
            dtype=probe.dtype,
            adjust_chunks={"t": probe.shape[0]},
            concatenate=True,
            user=user,
            sample_mask=sample_mask,
            hv_last=self._hv_confounds_last,
            kwargs=kwargs,
        )

    def _column_cleaner(self, img4, confounds, sample_mask, n_t, dtype):
        """``_clean`` as a function of numpy columns (:func:`lazyconn.signal.column_cleaner`),
        or None for ``standardize='psc'`` (decided on all the columns at once). High-variance
        confounds are computed now (one more pass over the run)."""
        kwargs = self._clean_kwargs()
        if kwargs.get("standardize") == "psc":
            return None
        conf = sanitize_confounds(confounds, n_t) if confounds is not None else None
        if self.high_variance_confounds:
            hv = self._high_variance_confounds(img4)
            conf = (
                [hv] if conf is None else ([conf, hv] if self._hv_confounds_last else [hv, conf])
            )
        return signal.column_cleaner(n_t, dtype, confounds=conf, sample_mask=sample_mask, **kwargs)

    @staticmethod
    def _high_variance_confounds(img4):
        """nilearn's ``image.high_variance_confounds`` on the raw run (whole box, no mask)."""
        return rechunk(high_variance_confounds(img4, compute=False), -1)


def _clean_with_hv(x, hv, *, user, sample_mask, hv_last, kwargs):
    confounds = [hv] if user is None else ([user, hv] if hv_last else [hv, user])
    return signal.clean(x, confounds=confounds, sample_mask=sample_mask, **kwargs)


def multi_docstring(base: type, summary: str) -> str:
    """A Multi masker's docstring: ``summary``, then ``base``'s with ``n_jobs`` added before
    ``clean_args`` (nilearn's parameter order)."""
    from lazyconn._docs import docdict

    lines = (base.__doc__ or "").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("    clean_args : "))
    n_jobs = ["    " + line for line in docdict["n_jobs_ignored"].splitlines()]
    body = "\n".join(lines[1:at] + n_jobs + lines[at:])
    return summary + "\n" + body


class MultiRunsMixin:
    """What nilearn's Multi maskers add: a list is a list of runs (one output each),
    high-variance confounds come after the user's, and ``transform_imgs``."""

    _hv_confounds_last = True
    _list_of_3d_is_one_run = False

    def transform_imgs(
        self, imgs_list, confounds=None, n_jobs=1, sample_mask=None, *, compute=True
    ):
        """Signals of a list of runs, as nilearn's ``transform_imgs`` (one ``dask.compute``).

        Parameters
        ----------
        imgs_list : list of runs
        confounds : None or list with one confounds entry per run
        n_jobs : int, default=1
            Accepted and ignored: dask's scheduler runs the runs in parallel.
        sample_mask : None or list with one entry per run
        compute : bool, default=True
            lazyconn only: False returns the lazy dask arrays.

        Returns
        -------
        list of numpy.ndarray (or of dask arrays)
        """
        del n_jobs
        return self.transform(
            list(imgs_list), confounds=confounds, sample_mask=sample_mask, compute=compute
        )
