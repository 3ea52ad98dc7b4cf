"""MultiNiftiLabelsMasker: NiftiLabelsMasker over several runs / subjects, computed as one graph."""

from __future__ import annotations

from lazyconn.maskers.base_masker import MultiRunsMixin, multi_docstring
from lazyconn.maskers.nifti_labels_masker import NiftiLabelsMasker


class MultiNiftiLabelsMasker(MultiRunsMixin, NiftiLabelsMasker):
    # docstring: nilearn's Multi masker = the single-run one + n_jobs (set below)

    def __init__(
        self,
        labels_img=None,
        labels=None,
        lut=None,
        background_label=0,
        mask_img=None,
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
        memory=None,
        memory_level=1,
        verbose=0,
        strategy="mean",
        keep_masked_labels=False,
        reports=True,
        cmap="CMRmap_r",
        n_jobs=1,
        clean_args=None,
    ):
        super().__init__(
            labels_img=labels_img,
            labels=labels,
            lut=lut,
            background_label=background_label,
            mask_img=mask_img,
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
            memory=memory,
            memory_level=memory_level,
            verbose=verbose,
            strategy=strategy,
            keep_masked_labels=keep_masked_labels,
            reports=reports,
            cmap=cmap,
            clean_args=clean_args,
        )
        self.n_jobs = n_jobs


MultiNiftiLabelsMasker.__doc__ = multi_docstring(
    NiftiLabelsMasker,
    """NiftiLabelsMasker for lists of runs (nilearn's ``MultiNiftiLabelsMasker``).

    ``transform`` of a list computes every run in one ``dask.compute`` call
    (``compute=False`` returns the lazy arrays); each element of a list is one run (a 3-D
    image gives a 1-D row). As in nilearn, high-variance confounds are appended after the
    user's confounds. Otherwise as :class:`NiftiLabelsMasker`:""",
)
