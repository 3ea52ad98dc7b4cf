"""A smoothed run selects and averages volumes before smoothing, with nilearn's results.

Smoothing filters each volume alone and linearly, so ``index_img(smooth_img(x), i)`` is
``smooth_img(index_img(x, i))``, ``mean_img(smooth_img(x))`` is ``smooth_img(mean_img(x))``
and a t-test of volumes of ``get_data(smooth_img(x), compute=False)`` needs only those
volumes smoothed. Each is compared with nilearn's (smoothing first) on the same input,
within float32 rounding, and its graph is checked to smooth only what it uses.
"""

import warnings

import dask
import nibabel as nib
import numpy as np
import pytest
from nilearn import image as nimage
from scipy import stats as sstats

from lazyconn import image as limage
from lazyconn import stats
from lazyconn.image import RunArray, get_data
from lazyconn.image._runarray import volume_selection
from lazyconn.testing.imaging import lazy_uneven, synthetic_epi
from lazyconn.testing.reference import assert_smoothing_close

SHAPE = (13, 11, 12, 15)
LABELS = np.array(["face", "house", "rest", "face", "house"] * 3)


@pytest.fixture
def run(rng):
    """(nibabel run with a NaN and an inf voxel, the same run lazily, unevenly chunked)."""
    img = synthetic_epi(SHAPE, rng)
    data = np.asarray(img.dataobj).copy()
    data[3, 4, 5, 2] = np.nan  # smooth_img zeroes non-finite values before filtering
    data[6, 5, 4, 7] = np.inf
    img = nib.Nifti1Image(data, img.affine, img.header)
    return img, lazy_uneven(img)


def _smoothed_shapes(x) -> set[tuple[int, ...]]:
    """Shapes of the arrays that the graph of ``x`` smooths (its smoothing layers)."""
    layers = x.__dask_graph__().layers
    return {
        layer.collection_annotations["shape"]
        for name, layer in layers.items()
        if name.startswith("gaussian-smooth") and layer.collection_annotations
    }


@pytest.mark.parametrize("fwhm", [6, [4, None, 7], "fast"])
@pytest.mark.parametrize(
    "index",
    [LABELS == "face", [14, 0, 3], slice(2, 9, 3), 4],
    ids=["mask", "ints", "slice", "int"],
)
def test_index_img_of_a_smoothed_run_smooths_the_selected_volumes(run, fwhm, index):
    img, lazy = run
    expected = nimage.index_img(nimage.smooth_img(img, fwhm), index).get_fdata(dtype=np.float32)
    result = limage.index_img(limage.smooth_img(lazy, fwhm), index)
    assert_smoothing_close(np.asarray(result.data), expected)
    if fwhm != "fast":
        n_selected = expected.shape[3:]
        assert _smoothed_shapes(result.data) == {SHAPE[:3] + n_selected}


@pytest.mark.parametrize("fwhm", [6, "fast"])
def test_mean_img_of_a_smoothed_run_smooths_the_mean(run, fwhm):
    img, lazy = run
    expected = nimage.mean_img(nimage.smooth_img(img, fwhm), copy_header=True)
    result = limage.mean_img(limage.smooth_img(lazy, fwhm))
    assert result.dtype == expected.get_data_dtype()
    # the mean of float32 volumes is rounded once more than each volume: 2x the tolerance
    assert_smoothing_close(np.asarray(result.data), expected.get_fdata(), factor=16.0)
    if fwhm != "fast":
        assert _smoothed_shapes(result.data) == {SHAPE[:3]}
    # the selection of a selection, then its mean: still one smoothing of one volume
    picked = limage.index_img(limage.smooth_img(lazy, fwhm), LABELS != "rest")
    expected = nimage.mean_img(
        nimage.index_img(nimage.smooth_img(img, fwhm), LABELS != "rest"), copy_header=True
    )
    result = limage.mean_img(limage.index_img(picked, slice(None)))
    assert_smoothing_close(np.asarray(result.data), expected.get_fdata(), factor=16.0)


@pytest.mark.parametrize("equal_var", [True, False])
def test_ttest_of_a_smoothed_runs_volumes_smooths_only_those(run, equal_var):
    img, lazy = run
    smoothed = nimage.get_data(nimage.smooth_img(img, 6))
    face, house = LABELS == "face", LABELS == "house"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant voxels outside the brain
        expected = sstats.ttest_ind(
            smoothed[..., face], smoothed[..., house], axis=-1, equal_var=equal_var
        )
    fmri_data = get_data(limage.smooth_img(lazy, 6), compute=False)
    assert isinstance(fmri_data, RunArray)
    assert volume_selection(fmri_data[..., face]).volumewise is not None
    result = stats.ttest_ind(
        fmri_data[..., face], fmri_data[..., house], axis=-1, equal_var=equal_var
    )
    assert _smoothed_shapes(result.pvalue) == {SHAPE[:3] + (int((face | house).sum()),)}
    t, p = dask.compute(*result)
    # float32 smoothing in a different order (fewer volumes): t to float32 rounding
    finite = np.isfinite(expected.statistic)
    np.testing.assert_array_equal(np.isfinite(t), finite)
    np.testing.assert_allclose(t[finite], expected.statistic[finite], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(p[finite], expected.pvalue[finite], rtol=1e-3, atol=1e-6)
    # the whole run smoothed first (a plain dask array): the same maps
    plain = limage.smooth_img(lazy, 6).data
    again = stats.ttest_ind(plain[..., face], plain[..., house], axis=-1, equal_var=equal_var)
    assert _smoothed_shapes(again.pvalue) == {SHAPE}
    np.testing.assert_allclose(again.statistic.compute(), t, rtol=1e-4, atol=1e-3)


def test_other_images_do_not_carry_the_smoothing(run):
    _, lazy = run
    smoothed = limage.smooth_img(lazy, 6)
    assert smoothed._volumewise is not None
    # new voxels from the smoothed run (with_data, math, cleaning) are plain images
    assert smoothed.with_data(smoothed.data + 1)._volumewise is None
    assert limage.math_img("img * 2", img=smoothed)._volumewise is None
    assert limage.smooth_img(lazy, None)._volumewise is None
    assert limage.index_img(lazy, [1, 2])._volumewise is None
