"""lazyconn.regions vs nilearn 0.14.1: identical regions / indices, signals within rounding."""

import itertools
import warnings

import dask
import dask.array as da
import nibabel as nib
import numpy as np
import pytest
from nilearn import regions as nilearn_regions
from nilearn.connectome import ConnectivityMeasure as NilearnConnectivity

from lazyconn.connectome import ConnectivityMeasure
from lazyconn.exceptions import (
    DimensionError,
    GridMismatchError,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.group import GroupConnectome
from lazyconn.image import LazyImage
from lazyconn.ops.segmentation import peak_local_max, random_walker
from lazyconn.regions import (
    RegionExtractor,
    connected_label_regions,
    connected_regions,
    img_to_signals_labels,
    img_to_signals_maps,
    signals_to_img_labels,
    signals_to_img_maps,
)
from lazyconn.testing.laziness import inaccessible_dask_array, raise_if_dask_computes
from lazyconn.testing.maskers import MaskerSuite, quiet, tiny_affine
from lazyconn.testing.regions import (
    MAPS_SHAPE,
    gaussian_blob,
    maps_affine,
    planted_maps,
    run_on_maps_grid,
)


def lazy(img, chunks=(11, 9, 8)):
    """A LazyImage over uneven spatial chunks (whole time axis)."""
    data = np.asanyarray(img.dataobj)
    c = chunks[:3] + ((data.shape[3],) if data.ndim == 4 else ())
    return LazyImage(da.from_array(data, chunks=c), img.affine, img.header)


def assert_same_regions(ours, ref):
    """Identical region images (values and dtype) and index_."""
    a = np.asanyarray(ours.regions_img_.dataobj)
    b = np.asanyarray(ref.regions_img_.dataobj)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.signbit(a), np.signbit(b))  # -0.0 where nilearn has it
    np.testing.assert_array_equal(ours.regions_img_.affine, ref.regions_img_.affine)
    assert list(ours.index_) == [int(i) for i in ref.index_]


def both(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = nilearn_regions.RegionExtractor(**kw).fit()
    return RegionExtractor(**kw).fit(), ref


# ------------------------------------------------------------------- region images
# The thresholds of each strategy keep the two blobs of map 0 touching (one component,
# two random-walker regions) and the tiny blob of map 1 around the 1350 mm³ limit.
STRATEGIES = [
    ("ratio_n_voxels", 0.3),
    ("ratio_n_voxels", 0.6),
    ("img_value", 0.15),
    ("percentile", 95),
]


@pytest.mark.parametrize(
    ("strategy", "extractor", "two_sided", "min_region_size"),
    [
        (s, e, t, m)
        for s, e, t, m in itertools.product(
            STRATEGIES, ["local_regions", "connected_components"], [False, True], [100, 1350, 3000]
        )
    ],
    ids=lambda v: f"{v[0]}-{v[1]}" if isinstance(v, tuple) else str(v),
)
def test_regions_identical_to_nilearn(strategy, extractor, two_sided, min_region_size):
    kw = dict(
        maps_img=planted_maps(),
        thresholding_strategy=strategy[0],
        threshold=strategy[1],
        extractor=extractor,
        two_sided=two_sided,
        min_region_size=min_region_size,
    )
    ours, ref = both(**kw)
    assert_same_regions(ours, ref)
    assert ours.n_elements_ == ref.n_elements_ == len(ref.index_)
    # the masker's maps are the regions themselves, not a second copy held for transforms
    assert np.shares_memory(np.asarray(ours.maps_img_.dataobj), ours.regions_img_.dataobj)


def test_the_choices_matter_on_these_maps():
    """The planted maps separate the options (else the grid above would prove little)."""
    kw = dict(maps_img=planted_maps(), thresholding_strategy="img_value", threshold=0.15)
    lr = RegionExtractor(**kw, extractor="local_regions", min_region_size=1350).fit()
    cc = RegionExtractor(**kw, extractor="connected_components", min_region_size=1350).fit()
    assert lr.index_.count(0) == 2 and cc.index_.count(0) == 1  # touching blobs split
    # local_regions drops the negative blobs (no seed), connected_components keeps them
    two = RegionExtractor(**kw, extractor="connected_components", two_sided=True).fit()
    assert len(two.index_) > len(cc.index_)
    small = RegionExtractor(**kw, extractor="connected_components", min_region_size=100).fit()
    big = RegionExtractor(**kw, extractor="connected_components", min_region_size=3000).fit()
    assert len(small.index_) > len(big.index_)  # regions below the minimum are dropped


@pytest.mark.parametrize("fwhm", [None, 4.0, 9])
def test_smoothing_of_seeds_identical(fwhm):
    ours, ref = both(
        maps_img=planted_maps(),
        thresholding_strategy="img_value",
        threshold=0.15,
        smoothing_fwhm=fwhm,
        min_region_size=300,
    )
    assert_same_regions(ours, ref)


@pytest.mark.parametrize("other_grid", [False, True])
@pytest.mark.parametrize(
    "strategy", [("ratio_n_voxels", 0.6), ("percentile", 90), ("img_value", 0.1)]
)
def test_mask_identical(strategy, other_grid):
    mask = np.zeros(MAPS_SHAPE, dtype=np.int8)
    mask[:, :15, :] = 1  # cuts through map 1's negative blob and map 2's pair
    mask_img = nib.Nifti1Image(mask, maps_affine())
    if other_grid:  # a 2 mm mask: nearest-resampled onto the maps by both libraries
        aff = maps_affine().copy()
        aff[:3, :3] /= 2
        big = np.repeat(np.repeat(np.repeat(mask, 2, 0), 2, 1), 2, 2)
        mask_img = nib.Nifti1Image(big, aff)
    ours, ref = both(
        maps_img=planted_maps(),
        mask_img=mask_img,
        thresholding_strategy=strategy[0],
        threshold=strategy[1],
        min_region_size=300,
    )
    assert_same_regions(ours, ref)


def test_maps_with_nan_and_path_input(tmp_path):
    img = planted_maps()
    data = np.asarray(img.dataobj).copy()
    data[0, 0, :3, 1] = np.nan
    path = tmp_path / "maps.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), path)
    ours, ref = both(maps_img=str(path), threshold=0.6, min_region_size=300)
    assert_same_regions(ours, ref)


@pytest.mark.parametrize("extract_type", ["local_regions", "connected_components"])
def test_connected_regions_function(extract_type):
    img = planted_maps()
    data = np.asarray(img.dataobj).copy()
    data[np.abs(data) < 0.2] = 0
    maps = nib.Nifti1Image(data, img.affine)
    got, index = connected_regions(maps, 500, extract_type, smoothing_fwhm=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp, exp_index = nilearn_regions.connected_regions(maps, 500, extract_type, 6)
    np.testing.assert_array_equal(got.get_fdata(), exp.get_fdata())
    assert got.get_data_dtype() == exp.get_data_dtype()
    assert index == list(exp_index)
    # a single 3-D map is one map; a lazy input gives the same
    one, idx = connected_regions(
        lazy(nib.Nifti1Image(data[..., 0], img.affine)), 500, extract_type
    )
    np.testing.assert_array_equal(one.get_fdata(), got.get_fdata()[..., : idx.count(0)])


def test_connected_regions_nothing_left_warns_like_nilearn():
    with pytest.warns(UserWarning, match="No supra threshold regions"):
        assert connected_regions(planted_maps(), min_region_size=1e9) == (None, None)


# ------------------------------------------------------------------- the kernels
def test_random_walker_identical_to_nilearn_copy():
    from nilearn._utils.ndimage import peak_local_max as nilearn_peaks
    from nilearn._utils.segmentation import random_walker as nilearn_rw
    from scipy import ndimage

    vol = np.asarray(planted_maps().dataobj)[..., 0].astype(np.float64)
    vol[vol < 0.1] = 0
    peaks = peak_local_max(vol)
    np.testing.assert_array_equal(peaks, nilearn_peaks(vol))
    seeds, n = ndimage.label(peaks)
    assert n >= 2
    # every voxel active (no mask), then inactive voxels; float64 and float32 maps (the
    # pipeline's): lazyconn builds only the kept edges, nilearn all of them, then drops some
    for active in (seeds.copy(), np.where(vol == 0, -1, seeds)):
        for dtype in (np.float64, np.float32):
            x = vol.astype(dtype)
            np.testing.assert_array_equal(random_walker(x, active), nilearn_rw(x, active))


def test_random_walker_degenerate_inputs_warn():
    vol = np.ones((4, 5, 6))
    with pytest.warns(UserWarning, match="no seed label"):
        out = random_walker(vol, np.zeros((4, 5, 6), dtype=int))
    assert not out.any()
    with pytest.warns(UserWarning, match="No zero valued areas"):
        random_walker(vol, np.ones((4, 5, 6), dtype=int))
    with pytest.raises(DimensionError, match=r"expected a 3-D map"):
        labels = np.zeros((4, 5), dtype=int)
        labels[0, 0] = 1
        random_walker(np.ones((4, 5)), labels)


# ------------------------------------------------------------------- labels
def labels_image():
    data = np.zeros((12, 10, 9), dtype=np.int16)
    data[1:4, 1:4, 1:4] = 1  # one 27-voxel block...
    data[5:6, 5:6, 5:6] = 1  # ...and a lone voxel of the same label
    data[6:7, 6:7, 6:7] = 1  # diagonal neighbour of the lone voxel
    data[8:11, 1:3, 1:8] = 3
    data[8:11, 5:9, 1:8] = 3  # label 3 in two separate slabs
    data[1:3, 7:9, 6:8] = 7
    return nib.Nifti1Image(data, tiny_affine())


@pytest.mark.parametrize("connect_diag", [True, False])
@pytest.mark.parametrize("min_size", [None, 27.0, 100.0])
def test_connected_label_regions_identical(connect_diag, min_size):
    names = ["one", "three", "seven"]
    got, got_names = connected_label_regions(labels_image(), min_size, connect_diag, names)
    exp, exp_names = nilearn_regions.connected_label_regions(
        labels_image(), min_size, connect_diag, names
    )
    assert got.get_data_dtype() == exp.get_data_dtype()
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(exp.dataobj))
    assert got_names == exp_names
    plain = connected_label_regions(lazy(labels_image(), (5, 4, 4)), min_size, connect_diag)
    np.testing.assert_array_equal(np.asarray(plain.dataobj), np.asarray(exp.dataobj))


def test_connected_label_regions_bad_input():
    data = np.asarray(labels_image().dataobj).astype(np.float32)
    data[0, 0, 0] = 2.5
    with pytest.raises(ParameterError, match=r"labels_img holds non-integer values \(\[2\.5\]\)"):
        connected_label_regions(nib.Nifti1Image(data, tiny_affine()))
    data[0, 0, 0] = -3
    with pytest.raises(ParameterError, match=r"negative values as labels \(\[-3\.0\]\)"):
        connected_label_regions(nib.Nifti1Image(data, tiny_affine()))
    with pytest.raises(ParameterError, match=r"labels has 2 names but labels_img has 3"):
        connected_label_regions(labels_image(), labels=["a", "b"])
    with pytest.raises(ParameterTypeError, match=r"min_size='big' has type str"):
        connected_label_regions(labels_image(), min_size="big")
    with pytest.raises(ParameterTypeError, match=r"connect_diag=1 has type int"):
        connected_label_regions(labels_image(), connect_diag=1)
    with pytest.raises(DimensionError, match="expected a 3-D image"):
        connected_label_regions(planted_maps())


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(threshold=4.0),
            ParameterError,
            r"threshold=4\.0 is not valid for thresholding_strategy='ratio_n_voxels'; expected a number > 0 and <= the number of maps \(n_maps=3\)",
        ),
        (
            dict(threshold=0),
            ParameterError,
            r"threshold=0 is not valid for thresholding_strategy='ratio_n_voxels'",
        ),
        (
            dict(threshold=120, thresholding_strategy="percentile"),
            ParameterError,
            r"threshold=120 is not valid for thresholding_strategy='percentile'; expected a percentile between 0 and 100",
        ),
        (
            dict(threshold=-1, thresholding_strategy="img_value", two_sided=True),
            ParameterError,
            r"threshold=-1 .*two_sided=True; expected a value >= 0",
        ),
        (
            dict(threshold="50%"),
            ParameterError,
            r"threshold='50%' is not valid; expected a number",
        ),
        (dict(threshold=None), ParameterError, r"threshold=None is not valid; expected a number"),
        (
            dict(thresholding_strategy="auto"),
            ParameterError,
            r"thresholding_strategy='auto' is not valid; expected one of 'ratio_n_voxels', 'img_value', 'percentile'",
        ),
        (
            dict(extractor="watershed"),
            ParameterError,
            r"extractor='watershed' is not valid; expected one of 'connected_components', 'local_regions'",
        ),
        (
            dict(two_sided="yes"),
            ParameterTypeError,
            r"two_sided='yes' has type str; expected True or False",
        ),
        (
            dict(min_region_size="1350"),
            ParameterTypeError,
            r"min_region_size='1350' has type str; expected a number",
        ),
        (
            dict(min_region_size=-5),
            ParameterError,
            r"min_region_size=-5 is not valid; expected a volume >= 0",
        ),
        (
            dict(min_region_size=1e7),
            ParameterError,
            r"No region left: after thresholding \(thresholding_strategy='ratio_n_voxels', threshold=1\.0: \d+ non-zero entries\) no region is larger than min_region_size=10000000\.0 mm³",
        ),
        (dict(maps_img=None), ParameterError, r"maps_img=None; expected a 4-D image of maps"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    kw = {"maps_img": planted_maps(), **kwargs}
    with pytest.raises(error, match=match):
        RegionExtractor(**kw).fit()


def test_bad_parameters_are_errors_in_nilearn_too():
    """Where nilearn raises, lazyconn raises the same builtin class (ValueError here)."""
    for kw in (
        dict(threshold=4.0),
        dict(threshold=120, thresholding_strategy="percentile"),
        dict(threshold="50%"),
        dict(thresholding_strategy="auto"),
    ):
        with pytest.raises(ValueError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nilearn_regions.RegionExtractor(planted_maps(), **kw).fit()
        with pytest.raises(ValueError):
            RegionExtractor(planted_maps(), **kw).fit()


def test_3d_maps_rejected():
    img = planted_maps()
    three_d = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine)
    with pytest.raises(
        DimensionError, match=r"maps_img has shape \(32, 24, 20\) \(3-D\); expected a 4-D image"
    ):
        RegionExtractor(three_d).fit()


# ------------------------------------------------------------------- transform
EXTRACTOR = dict(
    thresholding_strategy="img_value",
    threshold=0.15,
    extractor="local_regions",
    min_region_size=300,
)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        dict(standardize="zscore_sample", detrend=True),
        dict(smoothing_fwhm=None, standardize="zscore_sample"),
    ],
)
def test_transform_like_nilearn(extra):
    run = run_on_maps_grid()
    confounds = np.random.default_rng(1).standard_normal((30, 2))
    kw = dict(maps_img=planted_maps(), **EXTRACTOR, **extra)
    ours, ref = both(**kw)
    expected = quiet(ref.transform, run, confounds=confounds)
    got = ours.transform(lazy(run), confounds=confounds)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=2e-4)


def test_transform_resamples_runs_on_another_grid_like_nilearn():
    run = run_on_maps_grid()
    aff = run.affine.copy()
    aff[:3, 3] += 2.0  # half a voxel off: maps resampled (linear) onto the data's grid
    run = nib.Nifti1Image(np.asarray(run.dataobj), aff)
    kw = dict(maps_img=planted_maps(), **EXTRACTOR, standardize="zscore_sample")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = nilearn_regions.RegionExtractor(**kw)
        expected = ref.fit_transform(run)
    ours = RegionExtractor(**kw)
    got = ours.fit_transform(lazy(run))
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=2e-4)
    assert_same_regions(ours, ref)  # regions are extracted on the maps' own grid


def test_transform_lazy_and_many_runs_in_one_compute():
    runs = [lazy(run_on_maps_grid(seed=s)) for s in range(3)]
    ext = RegionExtractor(planted_maps(), **EXTRACTOR, standardize="zscore_sample").fit()
    unread = [r.with_data(inaccessible_dask_array(r.shape, r.data.chunks, r.dtype)) for r in runs]
    with raise_if_dask_computes():
        lazy_out = [ext.transform(r, compute=False) for r in unread]
    assert all(isinstance(x, da.Array) for x in lazy_out)
    with raise_if_dask_computes(max_computes=1):
        out = dask.compute(*[ext.transform(r, compute=False) for r in runs])
    for o, r in zip(out, runs, strict=True):
        np.testing.assert_array_equal(o, ext.transform(r))
    # a list of runs is one run of 3-D images for a single-run masker (nilearn's DimensionError)
    with pytest.raises(DimensionError, match=r"imgs\[0\] has shape .* \(4-D\)"):
        ext.transform(runs)


def test_group_connectome_with_region_extractor(tmp_path):
    runs = [run_on_maps_grid(seed=s) for s in range(3)]
    for i, r in enumerate(runs):
        nib.save(r, tmp_path / f"sub-{i}.nii.gz")
    paths = [str(tmp_path / f"sub-{i}.nii.gz") for i in range(3)]
    kw = dict(maps_img=planted_maps(), **EXTRACTOR, standardize="zscore_sample")
    group = GroupConnectome(
        RegionExtractor(**kw), ConnectivityMeasure(kind="correlation"), progress=False
    ).fit(paths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = nilearn_regions.RegionExtractor(**kw).fit()
        series = [ref.transform(p) for p in paths]
    conn = NilearnConnectivity(kind="correlation")
    expected = conn.fit_transform(series)
    np.testing.assert_allclose(group.subject_matrices_, expected, atol=1e-4)
    np.testing.assert_allclose(group.group_matrix_, conn.mean_, atol=1e-4)


# ------------------------------------------------------------------- masker suite
def suite_maps():
    """Maps on the suite's tiny 7x8x9 grid (3 mm) with blobs large enough to survive."""
    shape = (7, 8, 9)
    m = np.stack(
        [
            gaussian_blob(shape, (1.5, 2, 2), 1.5) + gaussian_blob(shape, (5, 6, 7), 1.2, -0.8),
            gaussian_blob(shape, (4, 5, 3), 1.8, 0.9),
        ],
        -1,
    )
    return nib.Nifti1Image(m.astype(np.float32), tiny_affine())


class TestRegionExtractorSuite(MaskerSuite):
    lazy_cls = RegionExtractor
    reference_cls = nilearn_regions.RegionExtractor
    tol = 3e-4  # float32 lstsq in nilearn, as for NiftiMapsMasker

    def region_kwargs(self):
        return dict(
            maps_img=suite_maps(),
            thresholding_strategy="img_value",
            threshold=0.1,
            two_sided=True,
            extractor="connected_components",
            min_region_size=54,
        )


# ------------------------------------------------------------------- signal extraction
def labelled_run():
    rng = np.random.default_rng(2)
    data = (rng.standard_normal((12, 10, 9, 15)) + 3).astype(np.float32)
    return nib.Nifti1Image(data, tiny_affine())


def mask_image(shape=(12, 10, 9)):
    mask = np.zeros(shape, dtype=np.int8)
    mask[:, :6] = 1  # drops label 7 and half of label 3
    return nib.Nifti1Image(mask, tiny_affine())


@pytest.mark.parametrize("strategy", ["mean", "sum", "median", "maximum", "variance"])
@pytest.mark.parametrize("masked", [False, True])
def test_img_to_signals_labels(strategy, masked):
    mask = mask_image() if masked else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp, exp_labels, exp_atlas = nilearn_regions.img_to_signals_labels(
            labelled_run(), labels_image(), mask_img=mask, strategy=strategy
        )
        got, labels, atlas = img_to_signals_labels(
            lazy(labelled_run(), (5, 4, 4)), labels_image(), mask_img=mask, strategy=strategy
        )
    assert got.dtype == exp.dtype and got.flags.f_contiguous
    np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-5)
    assert labels == [int(v) for v in exp_labels]
    np.testing.assert_array_equal(np.asarray(atlas.dataobj), np.asarray(exp_atlas.dataobj))
    if masked:
        with pytest.warns(UserWarning, match=r"the following labels were removed: \{7\}"):
            back = signals_to_img_labels(got, labels_image(), mask_img=mask)
    else:
        back = signals_to_img_labels(got, labels_image())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp_back = nilearn_regions.signals_to_img_labels(exp, labels_image(), mask_img=mask)
    np.testing.assert_allclose(back.get_fdata(), exp_back.get_fdata(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_img_to_signals_maps(masked):
    run = run_on_maps_grid(n_t=12)
    maps = planted_maps()
    mask = None
    if masked:
        m = np.zeros(MAPS_SHAPE, dtype=np.int8)
        m[:, :15] = 1
        mask = nib.Nifti1Image(m, maps_affine())
    exp, exp_labels = nilearn_regions.img_to_signals_maps(run, maps, mask_img=mask)
    got, labels = img_to_signals_maps(lazy(run), maps, mask_img=mask)
    np.testing.assert_allclose(got, exp, rtol=2e-4, atol=2e-4)
    assert labels == list(exp_labels)
    r = lazy(run)
    unread = r.with_data(inaccessible_dask_array(r.shape, r.data.chunks, r.dtype))
    assert isinstance(img_to_signals_maps(unread, maps, compute=False)[0], da.Array)
    back = signals_to_img_maps(got, maps, mask_img=mask)
    exp_back = nilearn_regions.signals_to_img_maps(exp, maps, mask_img=mask)
    np.testing.assert_allclose(back.get_fdata(), exp_back.get_fdata(), rtol=1e-3, atol=1e-3)
    one = signals_to_img_maps(got[0], maps)
    assert one.shape == MAPS_SHAPE


def test_signal_functions_bad_input():
    run = run_on_maps_grid(n_t=5)
    other = nib.Nifti1Image(np.asarray(run.dataobj)[:-1], run.affine)
    with pytest.raises(
        GridMismatchError,
        match=r"imgs \(shape \(31, 24, 20\)\) and maps_img \(shape \(32, 24, 20\)\) are not on the same voxel grid",
    ):
        img_to_signals_maps(other, planted_maps())
    with pytest.raises(GridMismatchError, match=r"imgs \(shape \(12, 10, 9\)\) and labels_img"):
        img_to_signals_labels(labelled_run(), nib.Nifti1Image(np.ones((12, 10, 8)), tiny_affine()))
    with pytest.raises(
        ParameterError, match=r"signals has shape \(4, 2\); expected \(n_scans, 3\)"
    ):
        signals_to_img_labels(np.zeros((4, 2)), labels_image())
    with pytest.raises(
        ParameterError, match=r"region_signals has shape \(4, 2\); expected \(n_scans, 3\)"
    ):
        signals_to_img_maps(np.zeros((4, 2)), planted_maps())
    with pytest.raises(ParameterError, match=r"order='K' is not valid"):
        img_to_signals_labels(labelled_run(), labels_image(), order="K")


def test_region_connectome_one_call(tmp_path, monkeypatch):
    from lazyconn.group import pipeline, region_connectome
    from lazyconn.group import regions as group_regions

    runs = [run_on_maps_grid(seed=s) for s in range(3)]
    conf = [np.random.default_rng(s).standard_normal((30, 2)) for s in range(3)]
    kw = dict(**EXTRACTOR, standardize="zscore_sample")
    events = []
    fit_regions, fit_group = RegionExtractor.fit, pipeline.GroupConnectome.fit
    monkeypatch.setattr(group_regions, "release_freed_memory", lambda: events.append("trim"))
    monkeypatch.setattr(
        RegionExtractor, "fit", lambda *a, **k: events.append("regions") or fit_regions(*a, **k)
    )
    monkeypatch.setattr(
        pipeline.GroupConnectome,
        "fit",
        lambda *a, **k: events.append("subjects") or fit_group(*a, **k),
    )
    out = region_connectome(
        [lazy(r) for r in runs],
        planted_maps(),
        RegionExtractor(**kw),
        confounds=conf,
        progress=False,
    )
    # the subjects start on a trimmed heap, not on the one the region extraction freed
    assert events == ["regions", "trim", "subjects"]
    assert out.decomposition is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = nilearn_regions.RegionExtractor(planted_maps(), **kw).fit()
        series = [ref.transform(r, confounds=c) for r, c in zip(runs, conf, strict=True)]
    assert_same_regions(out.extractor, ref)
    expected = NilearnConnectivity(kind="correlation").fit(series).mean_
    np.testing.assert_allclose(out.mean_matrix, expected, atol=1e-4)
    with pytest.raises(
        ParameterTypeError,
        match=r"extractor=.* has type NiftiMapsMasker; expected a lazyconn.regions.RegionExtractor",
    ):
        from lazyconn.maskers import NiftiMapsMasker

        region_connectome([lazy(runs[0])], planted_maps(), NiftiMapsMasker())


# ------------------------------------------------------------------- planted-truth scores
def test_match_regions_and_connectome_recovery(tmp_path):
    from lazyconn.datasets.recovery import connectome_recovery, match_regions

    labels = np.zeros((10, 10, 10), dtype=np.int32)
    labels[1:4, 1:4, 1:4] = 1  # 27 voxels
    labels[6:9, 6:9, 6:9] = 2
    labels[1:3, 6:9, 1:3] = 3
    labels_img = nib.Nifti1Image(labels, np.eye(4))
    regions = np.zeros((10, 10, 10, 3), dtype=np.float32)
    regions[..., 0] = labels == 2  # exact
    regions[1:4, 1:4, 1:3, 1] = 0.5  # 18 of region 1's 27 voxels: Dice 2*18/45 = 0.8
    regions[0, 0, 0, 2] = 1.0  # overlaps nothing
    got = match_regions(nib.Nifti1Image(regions, np.eye(4)), labels_img)
    np.testing.assert_allclose(got.dice, [0.8, 1.0, 0.0])
    np.testing.assert_array_equal(got.match, [1, 0, -1])
    assert got.mean_dice == pytest.approx(0.6)
    # from files (lazyconn.load), the planted labels on a coarser grid (resampled, nearest)
    nib.save(nib.Nifti1Image(regions, np.eye(4)), tmp_path / "regions.nii")
    coarse = nib.Nifti1Image(labels[::2, ::2, ::2], np.diag([2.0, 2.0, 2.0, 1.0]))
    nib.save(coarse, tmp_path / "labels.nii")
    from_files = match_regions(tmp_path / "regions.nii", tmp_path / "labels.nii")
    ref = match_regions(nib.Nifti1Image(regions, np.eye(4)), coarse)
    np.testing.assert_array_equal(from_files.dice_matrix, ref.dice_matrix)
    assert from_files.dice_matrix.shape == (3, 3) and from_files.dice_matrix.max() > 0
    truth = np.array([[1, 0.5, 0.2], [0.5, 1, -0.3], [0.2, -0.3, 1]])
    matrix = np.array([[1, 0.4, 0], [0.4, 1, 0], [0, 0, 1]])
    rec = connectome_recovery(matrix, got.match, truth)
    assert (
        rec.n_pairs == 1 and rec.mae == pytest.approx(0.1) and rec.coverage == pytest.approx(2 / 3)
    )
    full = connectome_recovery(truth, np.arange(3), truth)
    assert full.r == pytest.approx(1.0) and full.mae == 0
    with pytest.raises(
        ParameterError, match=r"regions_img has shape \(10, 10, 10\); expected a 4-D"
    ):
        match_regions(labels_img, labels_img)
    with pytest.raises(ParameterError, match=r"truth has shape \(3, 3\) but match has 2 entries"):
        connectome_recovery(matrix, np.arange(2), truth)


#: The clients _GivenMaps was fitted with.
_SEEN_CLIENTS = []


class _GivenMaps:
    """A decomposition stand-in that records the client it was fitted with (its maps: the
    planted ones), to see which cluster region_connectome hands it."""

    def __init__(self, client=None):
        self.client = client

    def get_params(self, deep=False):
        return {"client": self.client}

    def set_params(self, **params):
        self.client = params["client"]
        return self

    def fit(self, imgs, confounds=None):
        _SEEN_CLIENTS.append(self.client)
        self.components_img_ = planted_maps()
        return self


@pytest.mark.slow
@pytest.mark.cluster
def test_region_connectome_starts_one_cluster_for_the_whole_workflow():
    import distributed

    from lazyconn.group import region_connectome

    runs = [run_on_maps_grid(seed=s) for s in range(2)]
    _SEEN_CLIENTS.clear()
    out = region_connectome(
        [lazy(r) for r in runs],
        _GivenMaps(client="local"),
        RegionExtractor(**EXTRACTOR),
        client="local",
        n_workers=1,
        progress=False,
    )
    # the decomposition ran on the group's cluster (one LocalCluster started, not two)
    (used,) = _SEEN_CLIENTS
    assert isinstance(used, distributed.Client)
    assert out.group.dashboard_link_ == used.dashboard_link
    # the parameters are given back as they were, not as the closed cluster's client
    assert out.decomposition.client == "local" and out.group.client == "local"
    assert set(out.timings) == {"connect", "decomposition", "regions", "connectomes", "total"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = nilearn_regions.RegionExtractor(planted_maps(), **EXTRACTOR).fit()
        series = [ref.transform(r) for r in runs]
    expected = NilearnConnectivity(kind="correlation").fit(series).mean_
    np.testing.assert_allclose(out.mean_matrix, expected, atol=1e-4)
