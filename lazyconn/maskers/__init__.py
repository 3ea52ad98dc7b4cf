"""Maskers with nilearn's names, parameters and defaults, computing lazily on dask."""

from lazyconn.maskers.nifti_labels_masker import NiftiLabelsMasker
from lazyconn.maskers.nifti_maps_masker import NiftiMapsMasker
from lazyconn.maskers.nifti_spheres_masker import NiftiSpheresMasker

__all__ = ["NiftiLabelsMasker", "NiftiMapsMasker", "NiftiSpheresMasker"]
