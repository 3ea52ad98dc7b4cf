"""fMRIPrep outputs: confounds by denoising strategy (nilearn's
``nilearn.interfaces.fmriprep``)."""

from lazyconn.interfaces.fmriprep._load_confounds import (
    load_confounds,
    load_confounds_strategy,
)

__all__ = ["load_confounds", "load_confounds_strategy"]
