"""NiftiMasker: in-mask voxel time series (T, V), cleaned."""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings

import nibabel as nib
import numpy as np

from lazyconn import masking
from lazyconn._docs import fill_doc
from lazyconn._utils import warn
from lazyconn.exceptions import LazyconnWarning, ParameterError
from lazyconn.image import load
from lazyconn.maskers.base_masker import BaseMasker

_TEMPLATE_MASK_TYPES = {
    "whole-brain-template": "whole-brain",
    "gm-template": "gm",
    "wm-template": "wm",
}


#: The mask function's own ``verbose`` message (nilearn shows it at verbose >= 2).
_MASK_MESSAGES = {
    "background": "Background mask computation",
    "epi": "EPI mask computation",
    **{k: f"Template {v} mask computation" for k, v in _TEMPLATE_MASK_TYPES.items()},
}


def mask_strategy_function(strategy, multi=False):
    """The mask-computing function of a ``mask_strategy`` (nilearn's names)."""
    if strategy == "background":
        return masking.compute_multi_background_mask if multi else masking.compute_background_mask
    if strategy == "epi":
        return masking.compute_multi_epi_mask if multi else masking.compute_epi_mask
    if strategy in _TEMPLATE_MASK_TYPES:
        brain = masking.compute_multi_brain_mask if multi else masking.compute_brain_mask
        return functools.partial(brain, mask_type=_TEMPLATE_MASK_TYPES[strategy])
    if strategy == "template" and multi:  # nilearn's MultiNiftiMasker still takes it
        warn(
            "Masking strategy 'template' is deprecated. Please use 'whole-brain-template' "
            "instead.",
            LazyconnWarning,
        )
        return functools.partial(masking.compute_multi_brain_mask, mask_type="whole-brain")
    raise ParameterError(
        f"Unknown value of mask_strategy {strategy!r}. Acceptable values are 'background', "
        "'epi', 'whole-brain-template', 'gm-template', and 'wm-template'."
    )


@fill_doc
class NiftiMasker(BaseMasker):
    """In-mask voxel time series, cleaned (nilearn's ``NiftiMasker``).

    Parameters mirror nilearn 0.14.1 (names and defaults). ``memory``, ``memory_level``
    are accepted and ignored; ``reports`` serves ``generate_report``; ``verbose`` prints
    nilearn's step messages (on stderr).

    ``transform`` builds read -> smooth -> mask -> clean as one graph: a lazy (T, V) array
    chunked along voxels (whole time axis per chunk); with ``compute=True`` (default) it is
    computed into numpy like nilearn's output. The output is large by nature: use
    ``compute=False`` to keep it out of memory.

    Mask strategies: 'background', 'epi', 'whole-brain-template', 'gm-template' and
    'wm-template' (the ``lazyconn.masking`` functions of nilearn's names).
    Images on another grid than the mask are resampled onto the mask's grid (continuous
    interpolation, with nilearn's warning); nilearn first crops the mask, which gives the
    same in-mask values.

    Parameters
    ----------
    mask_img : 3-D image, or path, optional
        The mask; without it ``fit`` computes one with ``mask_strategy``.
    %(runs)s
    %(masker_cleaning)s
    %(target_affine_masker)s
    %(target_shape_masker)s
    %(mask_strategy)s
    %(mask_args)s
    %(dtype_masker)s
    %(masker_ignored)s
    %(cmap)s
    %(clean_args)s

    Attributes
    ----------
    mask_img_ : nibabel image, the mask (resampled to target_affine / target_shape)
    affine_ : (4, 4) array
    n_elements_ : int, number of in-mask voxels
    """

    _multi = False

    def __init__(
        self,
        mask_img=None,
        runs=None,
        smoothing_fwhm=None,
        standardize=False,
        standardize_confounds=True,
        detrend=False,
        high_variance_confounds=False,
        low_pass=None,
        high_pass=None,
        t_r=None,
        target_affine=None,
        target_shape=None,
        mask_strategy="background",
        mask_args=None,
        dtype=None,
        memory=None,
        memory_level=1,
        verbose=0,
        reports=True,
        cmap="gray",
        clean_args=None,
    ):
        self.mask_img = mask_img
        self.runs = runs
        self.smoothing_fwhm = smoothing_fwhm
        self.standardize = standardize
        self.standardize_confounds = standardize_confounds
        self.detrend = detrend
        self.high_variance_confounds = high_variance_confounds
        self.low_pass = low_pass
        self.high_pass = high_pass
        self.t_r = t_r
        self.target_affine = target_affine
        self.target_shape = target_shape
        self.mask_strategy = mask_strategy
        self.mask_args = mask_args
        self.dtype = dtype
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.reports = reports
        self.cmap = cmap
        self.clean_args = clean_args

    # ------------------------------------------------------------------ fit
    def _compute_mask(self, imgs):
        compute = mask_strategy_function(self.mask_strategy, multi=self._multi)
        params = inspect.signature(compute).parameters
        kwargs, skipped = {}, []
        for key, value in (self.mask_args or {}).items():
            (kwargs.__setitem__(key, value) if key in params else skipped.append(key))
        if skipped:
            warn(
                f"The following arguments are not supported by the masking strategy "
                f"{self.mask_strategy!r}: {skipped}"
            )
        if self._multi and "target_affine" in params:
            kwargs.setdefault("target_affine", self.target_affine)
            kwargs.setdefault("target_shape", self.target_shape)
        self._log("fit", "Computing mask")
        if not self._multi:  # nilearn's multi-run mask functions say nothing
            self._log("fit", _MASK_MESSAGES[self.mask_strategy], 2)
        mask = compute(imgs, **kwargs)
        return load(mask).to_nifti()

    def _fit(self, imgs):
        if self.mask_img_ is None:
            if imgs is None:
                raise ParameterError(
                    f"Parameter 'imgs' must be provided to {type(self).__name__}.fit() if no "
                    "mask is passed to mask_img (imgs=None, mask_img=None)."
                )
            if self._multi:
                runs = imgs if isinstance(imgs, (list, tuple)) else [imgs]
                self.mask_img_ = self._compute_mask([load(r) for r in runs])
            else:
                self.mask_img_ = self._compute_mask(self._split_runs(imgs)[0][0])
        elif imgs is not None:
            warn(
                f"[{type(self).__name__}.fit] Generation of a mask has been requested "
                "(imgs != None) while a mask was given at masker creation. Given mask will "
                "be used.",
                RuntimeWarning,
            )
        mask = self.mask_img_
        self._log("fit", "Resampling mask")  # nilearn says it whether or not it resamples
        if self.target_affine is not None or self.target_shape is not None:
            from lazyconn.image import resample_img

            mask = load(
                resample_img(
                    mask,
                    target_affine=self.target_affine,
                    target_shape=self.target_shape,
                    interpolation="nearest",
                )
            ).to_nifti()
        data = np.asarray(mask.dataobj).astype(bool)
        if not data.any():
            raise ParameterError("The mask is invalid as it is empty: it masks all data.")
        self.mask_img_ = nib.Nifti1Image(data.astype(np.int8), mask.affine)
        self.affine_ = (
            self.mask_img_.affine if self.target_affine is None else np.asarray(self.target_affine)
        )
        self.n_elements_ = int(data.sum())
        return self

    @contextlib.contextmanager
    def _fit_transform_filters(self):
        """No warning about a given mask when fit_transform fits on imgs, as nilearn."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Generation of a mask.*")
            yield

    # ------------------------------------------------------------------ transform
    def _input_dtype(self, img):
        return img.dtype  # NiftiMasker casts only the output (nilearn)

    def _on_mask_grid(self, img):
        mask = self.mask_img_
        if tuple(img.shape[:3]) != tuple(mask.shape) or not np.allclose(img.affine, mask.affine):
            from lazyconn.image import resample_img

            warn(
                "imgs are being resampled to the mask_img resolution. This process is "
                "memory intensive. You might want to provide a target_affine that is equal "
                "to the affine of the imgs or resample the mask beforehand to save memory "
                "and computation time."
            )
            self._log("transform", "Resampling images")
            img = load(resample_img(img, target_affine=mask.affine, target_shape=mask.shape))
        return img

    def _transform_run(self, img, confounds, sample_mask):
        return super()._transform_run(self._on_mask_grid(img), confounds, sample_mask)

    def _long_run_stream(self, img, confounds, sample_mask):
        """``transform`` streams a run whose signals exceed :data:`lazyconn.config.
        STREAM_RUN_BYTES` (bounded memory, one thread: a dask graph of a long run's
        whole-time blocks holds GBs whatever its order); shorter runs go to dask's graph,
        whose blocks run in parallel."""
        from lazyconn import config  # read at call time: the setting can be changed

        if img.ndim != 4 or img.shape[3] * self.n_elements_ * 4 <= config.STREAM_RUN_BYTES:
            return None
        return self._stream_run(img, confounds, sample_mask)

    def _stream_run(self, img, confounds=None, sample_mask=None):
        """``transform(img, confounds, sample_mask, compute=False)`` of one 4-D run as a
        :class:`lazyconn.ops.voxels.VoxelStream` of cleaned columns (read block by block
        in bounded memory), or None where the graph stays the way
        (:func:`lazyconn.masking.stream_mask`; ``standardize='psc'``)."""
        self._check_fitted()
        img = load(img)
        if img.ndim != 4:
            return None
        img = self._on_mask_grid(img)
        in_dtype = self._input_dtype(img)
        img4 = img if in_dtype == img.dtype else img.with_data(img.data.astype(in_dtype))
        stream = masking.stream_mask(
            img4, self.mask_img_, smoothing_fwhm=self._fitted_smoothing(), ensure_finite=True
        )
        if stream is None:
            return None
        n_t = img4.shape[3]
        cleaner = self._column_cleaner(img4, confounds, sample_mask, n_t, stream.dtype)
        if cleaner is None:
            return None
        out_dtype = self._output_dtype(img.dtype)
        dtype = cleaner.out_dtype if out_dtype is None else out_dtype

        def clean(x):
            # the stream's values are its own: cleaned in place when they can hold the result
            if x.dtype == dtype and x.shape[0] == cleaner.n_out and x.flags.writeable:
                return cleaner(x, out=x)
            return cleaner(x).astype(dtype, copy=False)

        return stream.map(clean, cleaner.n_out, dtype)

    def _extract(self, img4):
        return masking.apply_mask(
            img4, self.mask_img_, smoothing_fwhm=self._fitted_smoothing(), compute=False
        )

    def inverse_transform(self, X):
        """Put (T, V) / (V,) data back into a 4-D / 3-D nibabel image (zeros outside).

        Parameters
        ----------
        X : (n_volumes, n_elements_) or (n_elements_,) array
            Voxel signals, as ``transform`` returns them (numpy or dask).

        Returns
        -------
        img : nibabel.Nifti1Image
            4-D for 2-D signals, 3-D for 1-D signals.
        """
        self._check_fitted()
        x = self._check_array(X, "X")
        out_dtype = (
            x.dtype
            if self.dtype is None
            else np.dtype(np.float32 if self.dtype == "auto" else self.dtype)
        )
        img = load(masking.unmask(x, self.mask_img_)).to_nifti()
        return self._output_image(np.asarray(img.dataobj).astype(out_dtype), img.affine)
