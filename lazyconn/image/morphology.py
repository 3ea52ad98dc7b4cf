"""Mask morphology on images: dilation, erosion and connected-component labelling.

The image-level form of the ``scipy.ndimage`` steps of nilearn's "ROI extraction" example
(``binary_dilation`` of a thresholded map, then ``label`` to split it into regions). Masks
are 3-D (a 4-D image raises DimensionError); voxels are "in" where non-zero and finite.
"""

from __future__ import annotations

import numpy as np

from lazyconn._utils import rechunk
from lazyconn.exceptions import ParameterError
from lazyconn.image._lazyimage import LazyImage
from lazyconn.image._niimg import load_3d, new_img_like
from lazyconn.ops import morphology, spatial

__all__ = ["binary_dilation_img", "binary_erosion_img", "connected_components_img"]

_PARAMETERS = """
    Parameters
    ----------
    mask_img : 3-D image
        The mask: a LazyImage, nibabel image, path or store (a 4-D image with one volume
        is taken as 3-D). Non-zero finite voxels are in the mask; NaN/inf are not.
    structure : array_like of 3 dimensions, optional
        Structuring element, as scipy (default: ``generate_binary_structure(3, 1)``, the
        6-connected cross).
    iterations : int, default 1
        Repetitions; below 1, repeat until the mask no longer changes (as scipy).
    border_value : {0, 1}, default 0
        Value of the voxels outside the volume, as scipy.

    Returns
    -------
    LazyImage
        int8 mask (0/1) on the grid of ``mask_img``, lazy (one task over the volume).
"""


def _check_border_value(border_value):
    if isinstance(border_value, bool) or border_value not in (0, 1):
        raise ParameterError(f"border_value={border_value!r} is not valid; expected 0 or 1.")
    return int(border_value)


def _morph(mask_img, operation, structure, iterations, border_value) -> LazyImage:
    structure = morphology.check_structure(structure)
    iterations = morphology.check_iterations(iterations)
    border_value = _check_border_value(border_value)
    img = load_3d(mask_img, "mask_img")
    data = spatial.ensure_finite(img.data)
    out = morphology.binary_morphology(data, operation, structure, iterations, border_value)
    return new_img_like(img, rechunk(out, img.data.chunks), img.affine)


def binary_dilation_img(mask_img, structure=None, iterations=1, border_value=0) -> LazyImage:
    return _morph(mask_img, "dilation", structure, iterations, border_value)


def binary_erosion_img(mask_img, structure=None, iterations=1, border_value=0) -> LazyImage:
    return _morph(mask_img, "erosion", structure, iterations, border_value)


binary_dilation_img.__doc__ = (
    """Binary dilation of a mask image, equal to ``scipy.ndimage.binary_dilation``.
"""
    + _PARAMETERS
)
binary_erosion_img.__doc__ = (
    """Binary erosion of a mask image, equal to ``scipy.ndimage.binary_erosion``.
"""
    + _PARAMETERS
)


def connected_components_img(mask_img, structure=None) -> tuple[LazyImage, int]:
    """Label the connected components of a mask image, as ``scipy.ndimage.label``.

    Parameters
    ----------
    mask_img : 3-D image
        The mask (non-zero finite voxels are in it); a 4-D image raises DimensionError.
    structure : array_like of 3 dimensions, optional
        Connectivity, as scipy (default: 6-connected; ``np.ones((3, 3, 3))`` for
        26-connected).

    Returns
    -------
    labels_img : LazyImage
        int32 labels image on the grid of ``mask_img``: 0 is background, components are
        numbered 1..n in scipy's order (first voxel in C order), ready for
        ``NiftiLabelsMasker``.
    n_labels : int
        The number of components.

    Notes
    -----
    Unlike the other image functions this one computes (the count is a number, not a lazy
    value); a mask is one volume, so it is cheap.
    """
    structure = morphology.check_structure(structure)
    img = load_3d(mask_img, "mask_img")
    data = spatial.ensure_finite(img.data)
    labels, n = morphology.label_components(np.asarray(data.compute()), structure)
    return new_img_like(img, labels, img.affine), n
