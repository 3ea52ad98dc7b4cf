"""Mask steps of seed 004 (ROI extraction): dilation, erosion, connected components equal
scipy.ndimage; threshold_img / binarize_img / math_img / intersect_masks equal nilearn on a
-log10(p) map and a ventral-temporal-like mask."""

import warnings

import nibabel as nib
import numpy as np
import pytest
from nilearn import image as nimage
from nilearn import masking as nmasking
from scipy import ndimage

from lazyconn import image as limage
from lazyconn import masking as lmasking
from lazyconn.exceptions import (
    DimensionError,
    GridMismatchError,
    LazyconnWarning,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.testing.imaging import grid_affine, inaccessible_image, lazy_uneven
from lazyconn.testing.laziness import raise_if_dask_computes

SHAPE = (13, 11, 12)
STRUCTURES = {
    "default": None,
    "26-connected": np.ones((3, 3, 3)),
    "18-connected": ndimage.generate_binary_structure(3, 2),
}


@pytest.fixture
def blobs(rng):
    """Scattered voxels and a few blobs, like a thresholded statistical map."""
    data = np.zeros(SHAPE, dtype=np.float32)
    data[2:5, 2:4, 3:6] = 1
    data[8:11, 6:9, 7:10] = 1
    data[rng.random(SHAPE) > 0.93] = 1
    data[0, 0, 0] = np.nan  # not in the mask
    return nib.Nifti1Image(data, grid_affine())


def _truth(img):
    return np.nan_to_num(np.asanyarray(img.dataobj)) != 0


@pytest.mark.parametrize("structure", list(STRUCTURES), ids=str)
@pytest.mark.parametrize("iterations", [1, 2, 0])
def test_dilation_and_erosion_equal_scipy(blobs, structure, iterations):
    struct = STRUCTURES[structure]
    lazy = lazy_uneven(blobs)
    for func, ref in [
        (limage.binary_dilation_img, ndimage.binary_dilation),
        (limage.binary_erosion_img, ndimage.binary_erosion),
    ]:
        result = func(lazy, structure=struct, iterations=iterations)
        expected = ref(_truth(blobs), structure=struct, iterations=iterations)
        assert result.dtype == np.int8 and result.chunks == lazy.chunks
        np.testing.assert_array_equal(result.data.compute(), expected.astype(np.int8))
        np.testing.assert_array_equal(result.affine, blobs.affine)


@pytest.mark.parametrize("shape", [(13, 11, 12), (1, 4, 5), (3, 1, 1), (7, 6)])
@pytest.mark.parametrize("fill", [0.2, 0.9, 1.0])
def test_face_neighbour_morphology_by_slices_equals_scipy(rng, shape, fill):
    """The slice-operation path (default structure, border 0, iterations >= 1: the EPI
    masks' opening) gives scipy's result bit for bit, edges and thin axes included."""
    from lazyconn.ops.morphology import cross_morphology

    mask = rng.random(shape) < fill
    for iterations in (1, 2, 4):
        for name, ref in [
            ("erosion", ndimage.binary_erosion),
            ("dilation", ndimage.binary_dilation),
        ]:
            got = cross_morphology(mask, name, iterations)
            np.testing.assert_array_equal(got, ref(mask, iterations=iterations))


def test_border_value_as_scipy(blobs):
    result = limage.binary_erosion_img(blobs, border_value=1).data.compute()
    np.testing.assert_array_equal(result, ndimage.binary_erosion(_truth(blobs), border_value=1))


@pytest.mark.parametrize("structure", list(STRUCTURES), ids=str)
def test_connected_components_equal_scipy(blobs, structure):
    struct = STRUCTURES[structure]
    labels_img, n = limage.connected_components_img(lazy_uneven(blobs), structure=struct)
    expected, n_expected = ndimage.label(_truth(blobs), structure=struct)
    assert n == n_expected > 2
    assert labels_img.dtype == np.int32
    np.testing.assert_array_equal(labels_img.data.compute(), expected)


def test_dilation_is_lazy():
    with raise_if_dask_computes():
        out = limage.binary_erosion_img(
            limage.binary_dilation_img(inaccessible_image(SHAPE), iterations=2)
        )
    assert out.shape == SHAPE


def test_morphology_bad_input(blobs):
    run = nib.Nifti1Image(np.zeros((*SHAPE, 3), dtype=np.float32), grid_affine())
    with pytest.raises(
        DimensionError, match=r"mask_img has shape \(13, 11, 12, 3\) \(4-D\); expected a 3-D"
    ):
        limage.binary_dilation_img(run)
    with pytest.raises(DimensionError, match=r"mask_img has shape .*expected a 3-D image"):
        limage.connected_components_img(run)
    with pytest.raises(
        ParameterError, match=r"structure has shape \(3, 3\); expected a non-empty 3-D"
    ):
        limage.binary_dilation_img(blobs, structure=np.ones((3, 3)))
    with pytest.raises(ParameterError, match=r"structure has shape \(3, 3\)"):
        limage.connected_components_img(blobs, structure=np.ones((3, 3)))
    with pytest.raises(ParameterTypeError, match=r"iterations=1.5 is not valid; expected an int"):
        limage.binary_erosion_img(blobs, iterations=1.5)
    with pytest.raises(ParameterError, match=r"border_value=2 is not valid; expected 0 or 1"):
        limage.binary_erosion_img(blobs, border_value=2)


# --- the seed's other mask steps against nilearn -----------------------------------------------
@pytest.fixture
def log_p_img(rng):
    """-log10(p) map as the seed makes it: NaN -> 0, clipped at 10, with blobs above 5."""
    data = -np.log10(rng.uniform(1e-12, 1, size=SHAPE))
    data[3:6, 3:6, 3:6] = 8.0
    data = np.clip(data, 0, 10)
    return nib.Nifti1Image(data.astype(np.float32), grid_affine())


@pytest.fixture
def vt_img():
    data = np.zeros(SHAPE, dtype=np.int16)
    data[2:9, 2:8, 2:9] = 1
    return nib.Nifti1Image(data, grid_affine())


def _quiet(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


def test_seed_mask_steps_equal_nilearn(log_p_img, vt_img):
    lazy_p, lazy_vt = lazy_uneven(log_p_img), lazy_uneven(vt_img)
    # threshold at 5, binarize, intersect with the VT mask, in nilearn's functions
    thr = limage.threshold_img(lazy_p, 5.0, two_sided=False)
    np.testing.assert_array_equal(
        thr.data.compute(), nimage.threshold_img(log_p_img, 5.0, two_sided=False).get_fdata()
    )
    binary = limage.binarize_img(lazy_p, 5.0)
    expected_bin = nimage.binarize_img(log_p_img, 5.0)
    np.testing.assert_array_equal(binary.data.compute(), expected_bin.get_fdata())
    both = limage.math_img("np.logical_and(a, b)", a=binary, b=lazy_vt)
    expected_both = nimage.math_img("np.logical_and(a, b)", a=expected_bin, b=vt_img)
    np.testing.assert_array_equal(both.data.compute(), expected_both.get_fdata())
    inter = lmasking.intersect_masks([binary, lazy_vt], threshold=1, connected=False)
    expected_inter = nmasking.intersect_masks([expected_bin, vt_img], threshold=1, connected=False)
    np.testing.assert_array_equal(inter.data.compute(), expected_inter.get_fdata())
    # then the scipy steps, on images
    dilated = limage.binary_dilation_img(inter)
    np.testing.assert_array_equal(
        dilated.data.compute(), ndimage.binary_dilation(expected_inter.get_fdata() != 0)
    )


def test_threshold_leaving_no_voxel_warns_and_gives_empty_mask(log_p_img):
    with pytest.warns(UserWarning, match="must not exceed"):
        nimage.binarize_img(log_p_img, 11.0)
    with pytest.warns(LazyconnWarning, match=r"must not exceed 8.0.*no voxel is kept"):
        empty = limage.binarize_img(lazy_uneven(log_p_img), 11.0)
    assert empty.data.compute().sum() == 0
    with pytest.warns(LazyconnWarning, match="must not exceed"):
        limage.threshold_img(log_p_img, 12.0, two_sided=False)


def test_intersection_and_mask_inputs_checked(log_p_img, vt_img):
    other = nib.Nifti1Image(np.asanyarray(vt_img.dataobj), np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(
        GridMismatchError, match=r"mask_imgs\[0\].*mask_imgs\[1\].*not on the same"
    ):
        lmasking.intersect_masks([vt_img, other])
    run = nib.Nifti1Image(np.zeros((*SHAPE, 4), dtype=np.int8), grid_affine())
    with pytest.raises(DimensionError, match=r"mask_imgs\[1\] has shape .*expected a 3-D image"):
        lmasking.intersect_masks([vt_img, run])
    with pytest.raises(DimensionError, match=r"mask_img has shape .*expected a 3-D image"):
        limage.threshold_img(log_p_img, 1.0, mask_img=run)
