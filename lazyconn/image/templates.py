"""MNI152 template and brain mask, as ``nilearn.datasets.load_mni152_template`` / ``_brain_mask``.

The 1 mm ICBM152 2009a T1 template ships in ``lazyconn/data`` (the file nilearn ships).
"""

from __future__ import annotations

import functools
from pathlib import Path

import dask.array as da
import nibabel as nib
import numpy as np

from lazyconn.config import default_chunks
from lazyconn.exceptions import ParameterError
from lazyconn.image._lazyimage import LazyImage
from lazyconn.image.image import new_img_like
from lazyconn.image.resampling import resample_img

__all__ = ["MNI152_FILE_PATH", "load_mni152_brain_mask", "load_mni152_template"]

MNI152_FILE_PATH = (
    Path(__file__).resolve().parent.parent / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
)


def _check_resolution(resolution):
    ok = resolution is None or (
        isinstance(resolution, (int, float, np.integer, np.floating))
        and not isinstance(resolution, bool)
        and np.isfinite(resolution)
        and resolution >= 0
    )
    if not ok:
        raise ParameterError(
            f"resolution={resolution!r} is not valid; expected None or a voxel size in mm > 0."
        )
    return resolution or 1


@functools.lru_cache(maxsize=3)
def _template(resolution):
    """(read-only float32 voxels, affine, header) of the template at ``resolution``, cached."""
    img = nib.load(MNI152_FILE_PATH)
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


def load_mni152_template(resolution=None) -> LazyImage:
    """The skull-stripped MNI152 T1 template, float32 scaled to [0, 1] (nilearn's semantics).

    ``resolution`` (mm, default 1): other values resample with a 3x3 affine
    ``eye(3) * resolution`` (bounding box + 1 voxel, cubic, clipped), as nilearn does, giving
    e.g. (99, 117, 95) at 2 mm. The template is package data, read (and resampled) eagerly
    once per resolution and cached. Difference: the header's data dtype is float32 (nilearn
    keeps uint8, which would quantise the template if saved).
    """
    data, affine, header = _template(float(_check_resolution(resolution)))
    return LazyImage(da.from_array(data, chunks=default_chunks(data.shape, data.dtype)), affine, header)


def load_mni152_brain_mask(resolution=None, threshold=0.2) -> LazyImage:
    """Whole-brain mask: template voxels strictly above ``threshold``, int8 (as nilearn)."""
    template = load_mni152_template(resolution=resolution)
    return new_img_like(template, (template.data > threshold).astype(np.int8))
