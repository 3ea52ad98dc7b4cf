"""Synthetic resting-state fMRI in an fMRIPrep-like layout, with a planted ground truth.

The generator is small, deterministic and fast, so tests, examples and benchmarks can run the
whole connectome workflow on data whose answer is known. See :func:`make_synthetic_fmri`.

Modules: ``_truth`` (the planted networks and correlations), ``_layout`` (the brain: grid,
regions, tissue classes, nuisance weights), ``_timecourses`` (per-subject signals and
confounds), ``_writers`` (deterministic files), ``_generate`` (the public function).
"""

from lazyconn.datasets.synthetic._generate import make_synthetic_fmri
from lazyconn.datasets.synthetic._timecourses import REDUCED_CONFOUNDS
from lazyconn.datasets.synthetic._truth import NETWORKS

__all__ = ["NETWORKS", "REDUCED_CONFOUNDS", "make_synthetic_fmri"]
