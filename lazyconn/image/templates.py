"""MNI152 templates and masks, as ``nilearn.datasets.load_mni152_*``.

The 1 mm ICBM152 2009a T1, grey-matter and white-matter templates ship in ``lazyconn/data``
(the files nilearn ships).
"""

from __future__ import annotations

import functools
from pathlib import Path

import dask.array as da
import nibabel as nib
import numpy as np
from scipy.ndimage import binary_closing

from lazyconn._docs import fill_doc
from lazyconn._utils import check_real
from lazyconn.config import default_chunks
from lazyconn.image._lazyimage import LazyImage
from lazyconn.image._niimg import new_img_like
from lazyconn.image.resampling import resample_img

__all__ = [
    "GM_MNI152_FILE_PATH",
    "MNI152_FILE_PATH",
    "WM_MNI152_FILE_PATH",
    "load_mni152_brain_mask",
    "load_mni152_gm_mask",
    "load_mni152_gm_template",
    "load_mni152_template",
    "load_mni152_wm_mask",
    "load_mni152_wm_template",
]

_DATA = Path(__file__).resolve().parent.parent / "data"
MNI152_FILE_PATH = _DATA / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
GM_MNI152_FILE_PATH = _DATA / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
WM_MNI152_FILE_PATH = _DATA / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
_FILES = {"t1": MNI152_FILE_PATH, "gm": GM_MNI152_FILE_PATH, "wm": WM_MNI152_FILE_PATH}


def _check_resolution(resolution):
    check_real(
        "resolution",
        resolution,
        low=0,
        allow_none=True,
        expected="None or a voxel size in mm (None and 0 mean 1 mm, as in nilearn)",
    )
    return resolution or 1


@functools.lru_cache(maxsize=6)
def _template(kind, resolution):
    """(read-only float32 voxels, affine, header) of a template at ``resolution``, cached."""
    img = nib.load(_FILES[kind])
    data = np.asarray(img.dataobj).astype(np.float32)
    data /= data.max()
    template = LazyImage(
        da.from_array(data, chunks=default_chunks(data.shape, data.dtype)), img.affine, img.header
    )
    if resolution != 1:
        template = resample_img(template, np.eye(3) * resolution)
        data = np.asarray(template.data.compute())
    data.flags.writeable = False
    return data, template.affine, template.header


def _load_template(kind, resolution):
    data, affine, header = _template(kind, float(_check_resolution(resolution)))
    return LazyImage(
        da.from_array(data, chunks=default_chunks(data.shape, data.dtype)), affine, header
    )


@fill_doc
def load_mni152_template(resolution=None) -> LazyImage:
    """The skull-stripped MNI152 T1 template, float32 scaled to [0, 1] (nilearn's semantics).

    At 2 mm the grid is (99, 117, 95), as nilearn's. Difference: the header's data dtype is
    float32 (nilearn keeps uint8, which would quantise the template if saved).

    Parameters
    ----------
    %(resolution)s

    Returns
    -------
    %(template_returns)s
    """
    return _load_template("t1", resolution)


@fill_doc
def load_mni152_gm_template(resolution=None) -> LazyImage:
    """The MNI152 grey-matter template, float32 scaled to [0, 1].

    Parameters
    ----------
    %(resolution)s

    Returns
    -------
    %(template_returns)s
    """
    return _load_template("gm", resolution)


@fill_doc
def load_mni152_wm_template(resolution=None) -> LazyImage:
    """The MNI152 white-matter template, float32 scaled to [0, 1].

    Parameters
    ----------
    %(resolution)s

    Returns
    -------
    %(template_returns)s
    """
    return _load_template("wm", resolution)


@fill_doc
def load_mni152_brain_mask(resolution=None, threshold=0.2) -> LazyImage:
    """Whole-brain mask: template voxels strictly above ``threshold``, int8 (as nilearn).

    Parameters
    ----------
    %(resolution)s
    threshold : float, default=0.2
        Template values strictly above it are in the mask.

    Returns
    -------
    LazyImage
        int8, lazy (a comparison on the cached template).
    """
    template = load_mni152_template(resolution=resolution)
    return new_img_like(template, (template.data > threshold).astype(np.int8))


def _tissue_mask(kind, resolution, threshold, n_iter):
    # binary_closing is global (iterated dilations): it runs in numpy on the cached template.
    data, affine, _ = _template(kind, float(_check_resolution(resolution)))
    mask = binary_closing((data > threshold).astype(np.int8), iterations=n_iter)
    return new_img_like(_load_template(kind, resolution), mask, affine)  # bool -> uint8


@fill_doc
def load_mni152_gm_mask(resolution=None, threshold=0.2, n_iter=2) -> LazyImage:
    """Grey-matter mask: GM template > ``threshold``, then ``binary_closing`` (as nilearn).

    Parameters
    ----------
    %(resolution)s
    %(tissue_mask_params)s

    Returns
    -------
    %(tissue_mask_returns)s
    """
    return _tissue_mask("gm", resolution, threshold, n_iter)


@fill_doc
def load_mni152_wm_mask(resolution=None, threshold=0.2, n_iter=2) -> LazyImage:
    """White-matter mask: WM template > ``threshold``, then ``binary_closing`` (as nilearn).

    Parameters
    ----------
    %(resolution)s
    %(tissue_mask_params)s

    Returns
    -------
    %(tissue_mask_returns)s
    """
    return _tissue_mask("wm", resolution, threshold, n_iter)
