"""Maskers with nilearn's names, parameters and defaults, computing lazily on dask.

Every masker's ``transform(imgs, confounds=None, sample_mask=None, *, compute=True)``
accepts one run or a list of runs and computes them all in one ``dask.compute``;
``compute=False`` returns the lazy dask arrays.
"""

from lazyconn.maskers.base_masker import BaseMasker
from lazyconn.maskers.multi_nifti_masker import MultiNiftiMasker
from lazyconn.maskers.nifti_labels_masker import NiftiLabelsMasker
from lazyconn.maskers.nifti_maps_masker import NiftiMapsMasker
from lazyconn.maskers.nifti_masker import NiftiMasker
from lazyconn.maskers.nifti_spheres_masker import NiftiSpheresMasker

__all__ = [
    "BaseMasker",
    "MultiNiftiMasker",
    "NiftiLabelsMasker",
    "NiftiMapsMasker",
    "NiftiMasker",
    "NiftiSpheresMasker",
]
