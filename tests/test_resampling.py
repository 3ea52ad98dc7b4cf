"""resample_img / resample_to_img: parity with nilearn 0.14.1, laziness, errors."""

import nibabel as nib
import numpy as np
import pytest
from nilearn import image as nimage

from lazyconn import image as limage
from lazyconn.exceptions import (
    BoundingBoxError,
    DimensionError,
    LazyconnWarning,
    ParameterError,
)
from lazyconn.testing.imaging import (
    grid_affine,
    inaccessible_image,
    lazy_uneven,
    synthetic_epi,
)
from lazyconn.testing.laziness import raise_if_dask_computes
from lazyconn.testing.reference import quiet


def _sheared(aff):
    return aff @ np.array([[1, 0.1, 0, 0.5], [0, 0.95, 0.05, 0], [0, 0, 1.1, 0.3], [0, 0, 0, 1]])


TARGETS = {
    "4x4+shape": (np.diag([2.0, 2.5, 2.0, 1.0]), (9, 10, 11)),
    "3x3": (np.diag([2.0, 2.5, 4.0]), None),
    "4x4-no-shape": (_sheared(grid_affine()), None),
    "offset+shape": (
        np.array([[2.5, 0, 0, -14], [0, 2.0, 0, -10], [0, 0, 3.0, -3], [0, 0, 0, 1]]),
        (8, 14, 9),
    ),
}


def _nilearn(*args, **kwargs):
    return quiet(nimage.resample_img, *args, **kwargs)


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("interpolation", ["continuous", "linear", "nearest"])
@pytest.mark.parametrize("clip", [True, False])
def test_resample_img_matches_nilearn(epi_img, target, interpolation, clip):
    img, lazy = epi_img
    ta, ts = TARGETS[target]
    expected = _nilearn(img, ta, ts, interpolation=interpolation, clip=clip)
    result = limage.resample_img(lazy, ta, ts, interpolation=interpolation, clip=clip)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result.affine, expected.affine, rtol=0, atol=1e-12)
    assert result.dtype == np.asanyarray(expected.dataobj).dtype == np.float32
    # the same scipy call per volume on the same data: bit-identical
    np.testing.assert_array_equal(np.asarray(result.data), np.asanyarray(expected.dataobj))


@pytest.mark.parametrize("interpolation", ["continuous", "linear", "nearest"])
def test_resample_to_img_matches_nilearn_3d_and_fill_value(rng, interpolation):
    src = synthetic_epi((13, 11, 12), rng)
    target = nib.Nifti1Image(np.zeros((8, 9, 10), np.int8), np.diag([4.0, 3.5, 4.0, 1.0]))
    for fill_value in (0.0, -7.5):
        expected = nimage.resample_to_img(
            src, target, interpolation=interpolation, fill_value=fill_value
        )
        result = limage.resample_to_img(
            lazy_uneven(src), target, interpolation=interpolation, fill_value=fill_value
        )
        np.testing.assert_array_equal(result.affine, target.affine)
        np.testing.assert_array_equal(np.asarray(result.data), np.asanyarray(expected.dataobj))


def test_resample_int_data_casts_like_nilearn(rng):
    data = (rng.random((7, 8, 9)) * 100).astype(np.int16)
    img = nib.Nifti1Image(data, grid_affine())
    ta = np.diag([2.0, 2.0, 2.0, 1.0])
    with pytest.warns(UserWarning, match="Casting data from int16 to float32"):
        expected = nimage.resample_img(img, ta, (9, 9, 9))
    with pytest.warns(LazyconnWarning, match="Casting data from int16 to float32"):
        result = limage.resample_img(lazy_uneven(img), ta, (9, 9, 9))
    assert result.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(result.data), np.asanyarray(expected.dataobj))
    nearest = limage.resample_img(lazy_uneven(img), ta, (9, 9, 9), interpolation="nearest")
    assert nearest.dtype == np.int16
    np.testing.assert_array_equal(
        np.asarray(nearest.data),
        np.asanyarray(nimage.resample_img(img, ta, (9, 9, 9), interpolation="nearest").dataobj),
    )


def test_resample_non_finite_extrapolated_and_put_back(rng):
    img = synthetic_epi((13, 11, 12, 3), rng)
    data = np.asarray(img.dataobj).copy()
    data[6, 5, 6, 1] = np.nan
    data[2, 3, 4, :] = np.inf
    img = nib.Nifti1Image(data, img.affine)
    ta, ts = TARGETS["offset+shape"]
    with pytest.warns(RuntimeWarning, match="NaNs or infinite values"):
        expected = nimage.resample_img(img, ta, ts, clip=False)
    result = np.asarray(limage.resample_img(lazy_uneven(img), ta, ts, clip=False).data)
    exp = np.asanyarray(expected.dataobj)
    assert np.isnan(exp).any()
    np.testing.assert_array_equal(np.isnan(result), np.isnan(exp))
    np.testing.assert_allclose(result[~np.isnan(exp)], exp[~np.isnan(exp)], rtol=1e-6, atol=1e-6)


def test_resample_same_grid_is_the_image_and_none_target(rng):
    img = lazy_uneven(synthetic_epi((7, 8, 9, 20), rng))
    assert limage.resample_img(img, img.affine, img.shape[:3]) is img
    assert limage.resample_img(img) is img
    assert limage.resample_to_img(img, img) is img


def test_resample_is_lazy_and_reads_no_voxel():
    img = inaccessible_image((13, 11, 12, 15))
    target = inaccessible_image((7, 8, 9, 20), affine=np.diag([4.0, 4.0, 4.0, 1.0]))
    with raise_if_dask_computes():
        for interpolation in ("continuous", "linear", "nearest"):
            out = limage.resample_to_img(img, target, interpolation=interpolation, clip=True)
            assert out.shape == (7, 8, 9, 15)
        out3 = limage.resample_img(img, np.diag([2.0, 2.0, 2.0]))
    assert out3.ndim == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target_shape": (3, 3, 3)}, ParameterError, "without target_affine"),
        ({"target_affine": np.eye(3), "target_shape": (3, 3, 3)}, ParameterError, "anchor vector"),
        (
            {"target_affine": np.eye(4), "target_shape": (3, 3)},
            ParameterError,
            r"target_shape=\(3, 3\)",
        ),
        ({"target_affine": np.eye(2)}, DimensionError, r"target_affine has shape \(2, 2\)"),
        (
            {"target_affine": np.eye(4), "interpolation": "cubic"},
            ParameterError,
            "interpolation='cubic'",
        ),
    ],
)
def test_resample_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        limage.resample_img(inaccessible_image((7, 8, 9, 20)), **kwargs)


def test_resample_bounding_box_error():
    far = np.eye(4)
    far[:3, 3] = 1000
    with pytest.raises(BoundingBoxError, match="does not contain any of the data"):
        limage.resample_img(inaccessible_image((7, 8, 9, 20)), far)
