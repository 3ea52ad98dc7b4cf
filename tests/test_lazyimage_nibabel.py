"""LazyImage behaves as a nibabel image (same calls, same results as nibabel/nilearn)."""

import pickle

import dask.array as da
import nibabel as nib
import numpy as np
import pytest

import lazyconn
from lazyconn.exceptions import ParameterError
from lazyconn.testing.imaging import inaccessible_image, lazy_uneven, synthetic_epi
from lazyconn.testing.laziness import inaccessible_dask_array, raise_if_dask_computes


@pytest.fixture
def pair(rng):
    img = synthetic_epi((7, 8, 9, 20), rng)
    return img, lazy_uneven(img)


@pytest.mark.parametrize(
    "call",
    [
        lambda im: im.get_fdata(),
        lambda im: im.get_fdata(dtype=np.float32),
        lambda im: np.asarray(im.dataobj),
        lambda im: np.asanyarray(im.dataobj, dtype=np.float64),
        lambda im: im.dataobj[2:5, ..., 3],
        lambda im: im.dataobj[..., -1],
        lambda im: im.slicer[1:5, ::2, :, 3:7].get_fdata(),
        lambda im: im.slicer[..., 4].get_fdata(),
        lambda im: im.slicer[1:5].affine,
        lambda im: im.get_data_dtype(),
        lambda im: (im.ndim, im.shape, im.dataobj.shape, im.dataobj.ndim),
        lambda im: im.header.get_data_shape(),
        lambda im: im.header.get_zooms(),
        lambda im: im.header.get_best_affine(),
    ],
)
def test_nibabel_calls_as_nibabel(pair, call):
    img, lazy = pair
    expected, result = call(img), call(lazy)
    if isinstance(expected, np.ndarray):
        assert result.dtype == expected.dtype
        np.testing.assert_array_equal(result, expected)
    else:
        assert result == expected


def test_is_a_nifti1image_and_pickles(pair, tmp_path):
    img, lazy = pair
    img.to_filename(tmp_path / "run.nii")
    on_disk = nib.load(tmp_path / "run.nii")
    for im in (on_disk, lazy):
        assert nib.is_proxy(im.dataobj) and not im.in_memory
    assert isinstance(lazy, nib.Nifti1Image)
    assert isinstance(lazy.dataobj, lazyconn.image.LazyArrayProxy)
    back = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(back.get_fdata(), lazy.get_fdata())


def test_nothing_is_read_until_voxels_are_asked_for():
    lazy = inaccessible_image((7, 8, 9, 20))
    with raise_if_dask_computes():
        sliced = lazy.slicer[1:4, :, 2:6, 3:9]
        assert sliced.shape == (3, 8, 4, 6)
        assert lazy.get_data_dtype() == np.float32
        assert lazy.dataobj.shape == (7, 8, 9, 20)
        assert lazy.header.get_data_shape() == (7, 8, 9, 20)
    with pytest.raises(RuntimeError, match="InaccessibleArray"):
        lazy.get_fdata()


def test_dataobj_slice_reads_only_its_chunks(affine):
    # The second half along x cannot be read: slicing the first half must not touch it.
    readable = da.ones((4, 8, 9, 5), chunks=(4, 8, 9, 5), dtype=np.float32)
    unreadable = inaccessible_dask_array((3, 8, 9, 5), ((3,), (8,), (9,), (5,)))
    lazy = lazyconn.LazyImage(da.concatenate([readable, unreadable], axis=0), affine)
    np.testing.assert_array_equal(lazy.dataobj[:4, 2, :, 1], np.ones((4, 9), np.float32))
    np.testing.assert_array_equal(lazy.slicer[:4].get_fdata(), np.ones((4, 8, 9, 5)))
    with pytest.raises(RuntimeError, match="InaccessibleArray"):
        np.asarray(lazy.dataobj)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_to_filename_and_nib_save(pair, tmp_path, suffix):
    img, lazy = pair
    img.to_filename(tmp_path / f"nib{suffix}")
    lazy.to_filename(tmp_path / f"lazy{suffix}")
    nib.save(lazyconn.image.smooth_img(lazy, 4), tmp_path / f"saved{suffix}")
    expected = nib.load(tmp_path / f"nib{suffix}")
    result = nib.load(tmp_path / f"lazy{suffix}")
    np.testing.assert_array_equal(result.get_fdata(), expected.get_fdata())
    np.testing.assert_array_equal(result.affine, expected.affine)
    assert result.get_data_dtype() == expected.get_data_dtype()
    assert nib.load(tmp_path / f"saved{suffix}").shape == img.shape


def test_to_filename_rejects_unknown_keywords(pair, tmp_path):
    with pytest.raises(ParameterError, match=r"unsupported keyword arguments \['dtype'\]"):
        pair[1].to_filename(tmp_path / "x.nii", dtype=np.int16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8, np.int32])
def test_header_as_nibabel_for_new_images(rng, affine, dtype):
    data = (rng.standard_normal((5, 6, 7)) * 10).astype(dtype)
    img, lazy = nib.Nifti1Image(data, affine), lazyconn.LazyImage(data, affine)
    assert lazy.get_data_dtype() == img.get_data_dtype()
    for field in ("dim", "pixdim", "sform_code", "qform_code", "srow_x", "srow_y", "srow_z"):
        np.testing.assert_array_equal(lazy.header[field], img.header[field])


def test_bool_voxels_are_uint8_in_the_header(affine):
    lazy = lazyconn.LazyImage(np.ones((3, 4, 5, 2), dtype=bool), affine)
    assert lazy.get_data_dtype() == np.uint8
    assert lazy.dtype == bool


def test_nilearn_image_functions_accept_lazy_images(pair):
    nimage = pytest.importorskip("nilearn.image")
    img, lazy = pair
    for func in (nimage.mean_img, lambda im: nimage.index_img(im, 3)):
        np.testing.assert_allclose(
            func(lazy).get_fdata(), func(img).get_fdata(), rtol=1e-6, atol=1e-6
        )


@pytest.mark.slow
@pytest.mark.parametrize("plot", ["plot_epi", "plot_stat_map", "plot_roi"])
def test_nilearn_plotting_accepts_lazy_images(pair, plot):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    _, lazy = pair
    mean = lazyconn.image.mean_img(lazy)
    if plot == "plot_roi":
        mean = lazyconn.image.math_img("(img > 50).astype('int8')", img=mean)
    display = getattr(plotting, plot)(mean, display_mode="ortho", cut_coords=(0, 0, 0))
    try:
        assert display.axes
    finally:
        display.close()
        plt.close("all")


def _array_results(module, img, mask):
    image = module.image
    return {
        "get_data": image.get_data(img),
        "apply_mask": module.masking.apply_mask(img, mask),
        "high_variance_confounds": image.high_variance_confounds(img, n_confounds=2),
    }


def test_arrays_are_numpy_as_nilearn(rng):
    """README's rule: where nilearn returns numpy, so does lazyconn (compute=False: dask)."""
    pytest.importorskip("nilearn")
    import nilearn
    import nilearn.image
    import nilearn.masking

    img = synthetic_epi((7, 8, 9, 20), rng)
    mask = nib.Nifti1Image((np.asarray(img.dataobj)[..., 0] > 50).astype(np.uint8), img.affine)
    expected = _array_results(nilearn, img, mask)
    result = _array_results(lazyconn, lazy_uneven(img), mask)
    for name, exp in expected.items():
        res = result[name]
        assert type(res) is type(exp) is np.ndarray, name
        assert res.dtype == exp.dtype, name
        signs = np.sign((exp * res).sum(0)) if name == "high_variance_confounds" else 1
        np.testing.assert_allclose(res * signs, exp, rtol=1e-5, atol=1e-6)
        # what nilearn code does with these arrays
        assert bool((res > 0).any()) == bool((exp > 0).any())
        assert np.allclose(np.asarray((res * signs).tolist()), exp, rtol=1e-5, atol=1e-6)
        idx = np.flatnonzero(np.abs(exp.ravel()) > 1)[:5]
        np.testing.assert_allclose((res * signs).ravel()[idx], exp.ravel()[idx], rtol=1e-5)
    lazy = lazyconn.masking.apply_mask(inaccessible_image((7, 8, 9, 20)), mask, compute=False)
    assert isinstance(lazy, da.Array) and lazy.shape == expected["apply_mask"].shape
