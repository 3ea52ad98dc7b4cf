"""Datasets: coordinate atlases and MNI templates shipped with the package, synthetic fMRI.

The ``load_mni152_*`` template and mask loaders live in :mod:`lazyconn.image.templates` and
are re-exported here, where nilearn users look for them.
"""

from lazyconn.datasets.atlas import fetch_coords_dosenbach_2010, fetch_coords_power_2011
from lazyconn.datasets.synthetic import make_synthetic_fmri
from lazyconn.datasets.task import make_synthetic_task_fmri
from lazyconn.image.templates import (
    load_mni152_brain_mask,
    load_mni152_gm_mask,
    load_mni152_gm_template,
    load_mni152_template,
    load_mni152_wm_mask,
    load_mni152_wm_template,
)

__all__ = [
    "fetch_coords_dosenbach_2010",
    "fetch_coords_power_2011",
    "load_mni152_brain_mask",
    "load_mni152_gm_mask",
    "load_mni152_gm_template",
    "load_mni152_template",
    "load_mni152_wm_mask",
    "load_mni152_wm_template",
    "make_synthetic_fmri",
    "make_synthetic_task_fmri",
]
