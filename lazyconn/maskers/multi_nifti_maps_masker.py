"""MultiNiftiMapsMasker: NiftiMapsMasker over several runs / subjects, computed as one graph."""

from __future__ import annotations

from lazyconn.maskers.base_masker import MultiRunsMixin, multi_docstring
from lazyconn.maskers.nifti_maps_masker import NiftiMapsMasker


class MultiNiftiMapsMasker(MultiRunsMixin, NiftiMapsMasker):
    # docstring: nilearn's Multi masker = the single-run one + n_jobs (set below)

    def __init__(
        self,
        maps_img=None,
        mask_img=None,
        allow_overlap=True,
        smoothing_fwhm=None,
        standardize=False,
        standardize_confounds=True,
        high_variance_confounds=False,
        detrend=False,
        low_pass=None,
        high_pass=None,
        t_r=None,
        dtype=None,
        resampling_target="data",
        keep_masked_maps=False,
        memory=None,
        memory_level=0,
        verbose=0,
        reports=True,
        cmap="CMRmap_r",
        n_jobs=1,
        clean_args=None,
    ):
        super().__init__(
            maps_img=maps_img,
            mask_img=mask_img,
            allow_overlap=allow_overlap,
            smoothing_fwhm=smoothing_fwhm,
            standardize=standardize,
            standardize_confounds=standardize_confounds,
            high_variance_confounds=high_variance_confounds,
            detrend=detrend,
            low_pass=low_pass,
            high_pass=high_pass,
            t_r=t_r,
            dtype=dtype,
            resampling_target=resampling_target,
            keep_masked_maps=keep_masked_maps,
            memory=memory,
            memory_level=memory_level,
            verbose=verbose,
            reports=reports,
            cmap=cmap,
            clean_args=clean_args,
        )
        self.n_jobs = n_jobs


MultiNiftiMapsMasker.__doc__ = multi_docstring(
    NiftiMapsMasker,
    """NiftiMapsMasker for lists of runs (nilearn's ``MultiNiftiMapsMasker``).

    ``transform`` of a list computes every run in one ``dask.compute`` call
    (``compute=False`` returns the lazy arrays); each element of a list is one run (a 3-D
    image gives a 1-D row). As in nilearn, high-variance confounds are appended after the
    user's confounds. Otherwise as :class:`NiftiMapsMasker`:""",
)
