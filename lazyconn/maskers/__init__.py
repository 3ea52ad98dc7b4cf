"""Maskers with nilearn's names, parameters and defaults, computing lazily on dask.

Every masker's ``transform(imgs, confounds=None, sample_mask=None, *, compute=True)``
returns numpy like nilearn, or the lazy dask array with ``compute=False``. As in nilearn,
the Multi maskers take a list of runs (computed in one ``dask.compute``); the others take
one run (a list of 3-D images is one run; a list holding 4-D runs is a DimensionError).
"""

from lazyconn.maskers._report import HTMLReport
from lazyconn.maskers.base_masker import BaseMasker
from lazyconn.maskers.multi_nifti_labels_masker import MultiNiftiLabelsMasker
from lazyconn.maskers.multi_nifti_maps_masker import MultiNiftiMapsMasker
from lazyconn.maskers.multi_nifti_masker import MultiNiftiMasker
from lazyconn.maskers.nifti_labels_masker import NiftiLabelsMasker
from lazyconn.maskers.nifti_maps_masker import NiftiMapsMasker
from lazyconn.maskers.nifti_masker import NiftiMasker
from lazyconn.maskers.nifti_spheres_masker import NiftiSpheresMasker

__all__ = [
    "BaseMasker",
    "HTMLReport",
    "MultiNiftiLabelsMasker",
    "MultiNiftiMapsMasker",
    "MultiNiftiMasker",
    "NiftiLabelsMasker",
    "NiftiMapsMasker",
    "NiftiMasker",
    "NiftiSpheresMasker",
]
