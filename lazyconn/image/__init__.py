"""Image model: LazyImage, ``load`` and image functions with nilearn's names."""

from lazyconn.image._cleaning import clean_img, high_variance_confounds
from lazyconn.image._lazyimage import LazyArrayProxy, LazyImage
from lazyconn.image._load import load
from lazyconn.image._niimg import check_same_fov, get_data, new_img_like
from lazyconn.image._runarray import RunArray
from lazyconn.image._volumes import (
    check_niimg,
    check_niimg_3d,
    check_niimg_4d,
    concat_imgs,
    coord_transform,
    copy_img,
    crop_img,
    iter_img,
    largest_connected_component_img,
    reorder_img,
    swap_img_hemispheres,
)
from lazyconn.image.image import (
    binarize_img,
    index_img,
    math_img,
    mean_img,
    smooth_img,
    threshold_img,
)
from lazyconn.image.morphology import (
    binary_dilation_img,
    binary_erosion_img,
    connected_components_img,
)
from lazyconn.image.resampling import resample_img, resample_to_img
from lazyconn.image.templates import (
    load_mni152_brain_mask,
    load_mni152_gm_mask,
    load_mni152_gm_template,
    load_mni152_template,
    load_mni152_wm_mask,
    load_mni152_wm_template,
)

__all__ = [
    "LazyArrayProxy",
    "LazyImage",
    "RunArray",
    "binarize_img",
    "binary_dilation_img",
    "binary_erosion_img",
    "check_niimg",
    "check_niimg_3d",
    "check_niimg_4d",
    "check_same_fov",
    "clean_img",
    "concat_imgs",
    "connected_components_img",
    "coord_transform",
    "copy_img",
    "crop_img",
    "get_data",
    "high_variance_confounds",
    "index_img",
    "iter_img",
    "largest_connected_component_img",
    "load",
    "load_mni152_brain_mask",
    "load_mni152_gm_mask",
    "load_mni152_gm_template",
    "load_mni152_template",
    "load_mni152_wm_mask",
    "load_mni152_wm_template",
    "math_img",
    "mean_img",
    "new_img_like",
    "reorder_img",
    "resample_img",
    "resample_to_img",
    "smooth_img",
    "swap_img_hemispheres",
    "threshold_img",
]
