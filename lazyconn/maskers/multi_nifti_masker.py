"""MultiNiftiMasker: NiftiMasker over several runs / subjects, computed as one graph."""

from __future__ import annotations

from lazyconn._docs import fill_doc
from lazyconn.maskers.base_masker import MultiRunsMixin
from lazyconn.maskers.nifti_masker import NiftiMasker


@fill_doc
class MultiNiftiMasker(MultiRunsMixin, NiftiMasker):
    """NiftiMasker for lists of runs (nilearn's ``MultiNiftiMasker``).

    Parameters mirror nilearn 0.14.1 (names and defaults). ``n_jobs`` is accepted and
    ignored: runs are parallelised by dask's scheduler, and ``transform`` of a list computes
    every run in one ``dask.compute`` call (``compute=False`` returns the lazy arrays).
    Without ``mask_img``, ``fit`` computes a common mask with the ``compute_multi_*``
    variant of ``mask_strategy``. As in nilearn, high-variance confounds are appended after
    the user's confounds, and each element of a list is one run (3-D images give 1-D rows).

    Parameters
    ----------
    mask_img : 3-D image, or path, optional
        The mask; without it ``fit`` computes a common mask of the runs with the
        ``compute_multi_*`` variant of ``mask_strategy``.
    %(runs)s
    %(masker_cleaning)s
    %(target_affine_masker)s
    %(target_shape_masker)s
    %(mask_strategy)s
    %(mask_args)s
    %(dtype_masker)s
    %(masker_ignored)s
    %(n_jobs_ignored)s
    %(cmap)s
    %(clean_args)s

    Attributes
    ----------
    mask_img_ : nibabel image, the common mask (resampled to target_affine / target_shape)
    affine_ : (4, 4) array
    n_elements_ : int, number of in-mask voxels
    """

    _multi = True

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
        memory_level=0,
        n_jobs=1,
        verbose=0,
        reports=True,
        cmap="gray",
        clean_args=None,
    ):
        super().__init__(
            mask_img=mask_img,
            runs=runs,
            smoothing_fwhm=smoothing_fwhm,
            standardize=standardize,
            standardize_confounds=standardize_confounds,
            detrend=detrend,
            high_variance_confounds=high_variance_confounds,
            low_pass=low_pass,
            high_pass=high_pass,
            t_r=t_r,
            target_affine=target_affine,
            target_shape=target_shape,
            mask_strategy=mask_strategy,
            mask_args=mask_args,
            dtype=dtype,
            memory=memory,
            memory_level=memory_level,
            verbose=verbose,
            reports=reports,
            cmap=cmap,
            clean_args=clean_args,
        )
        self.n_jobs = n_jobs
