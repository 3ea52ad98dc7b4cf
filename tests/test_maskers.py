"""Region maskers (spheres, labels, maps): shared suite + masker-specific behaviour vs nilearn."""

import warnings

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
from nilearn import maskers as nilearn_maskers

from lazyconn.exceptions import GridMismatchError, ParameterError
from lazyconn.image import LazyImage
from lazyconn.maskers import (
    MultiNiftiLabelsMasker,
    MultiNiftiMapsMasker,
    NiftiLabelsMasker,
    NiftiMapsMasker,
    NiftiSpheresMasker,
)
from lazyconn.ops.spheres import sphere_voxels
from lazyconn.ops.weights import n_chunks_touched, region_weights, smooth_adjoint
from lazyconn.testing.maskers import (
    N_T,
    SHAPE,
    TOL,
    UNEVEN,
    MaskerSuite,
    lazy,
    quiet,
    tiny_affine,
    tiny_run,
)

# seeds in world mm on the tiny grid (origin (-10, -12, -9), 3 mm voxels); two touch borders
SEEDS = [(-10.0, -12.0, -9.0), (0.0, 0.0, 0.0), (8.0, 9.0, 10.0), (5.0, -3.0, 14.0)]


def tiny_labels(seed=0):
    rng = np.random.default_rng(seed)
    return nib.Nifti1Image(rng.integers(0, 5, SHAPE).astype(np.int16), tiny_affine())


def tiny_maps(seed=0, negative=False):
    rng = np.random.default_rng(seed)
    lab = np.asarray(tiny_labels(seed).dataobj)
    maps = np.stack([(lab == i) * rng.random(SHAPE) for i in range(1, 5)], -1)
    maps[..., 0] += 0.1 * rng.random(SHAPE)  # overlapping, well-conditioned
    if negative:
        maps[..., 1] -= 0.05
    return nib.Nifti1Image(maps.astype(np.float32), tiny_affine())


class TestSpheresSuite(MaskerSuite):
    lazy_cls = NiftiSpheresMasker
    reference_cls = nilearn_maskers.NiftiSpheresMasker

    def region_kwargs(self):
        return dict(seeds=SEEDS, radius=4.0)


class TestLabelsSuite(MaskerSuite):
    lazy_cls = NiftiLabelsMasker
    reference_cls = nilearn_maskers.NiftiLabelsMasker

    def region_kwargs(self):
        return dict(labels_img=tiny_labels())


class TestMapsSuite(MaskerSuite):
    lazy_cls = NiftiMapsMasker
    reference_cls = nilearn_maskers.NiftiMapsMasker
    # nilearn's float32 lstsq is 1.2e-4 away from its own float64 result on the "clean"
    # case; lazyconn (float64 normal equations) is 1.5e-5 away from it.
    tol = 3e-4

    def region_kwargs(self):
        return dict(maps_img=tiny_maps())


class TestMultiLabelsSuite(TestLabelsSuite):
    lazy_cls = MultiNiftiLabelsMasker
    reference_cls = nilearn_maskers.MultiNiftiLabelsMasker
    multi = True


class TestMultiMapsSuite(TestMapsSuite):
    lazy_cls = MultiNiftiMapsMasker
    reference_cls = nilearn_maskers.MultiNiftiMapsMasker
    multi = True


@pytest.mark.parametrize(
    ("ours", "theirs", "kwargs"),
    [
        (
            NiftiLabelsMasker,
            nilearn_maskers.NiftiLabelsMasker,
            lambda: {"labels_img": tiny_labels()},
        ),
        (NiftiMapsMasker, nilearn_maskers.NiftiMapsMasker, lambda: {"maps_img": tiny_maps()}),
        (
            MultiNiftiLabelsMasker,
            nilearn_maskers.MultiNiftiLabelsMasker,
            lambda: {"labels_img": tiny_labels()},
        ),
    ],
)
def test_transform_single_imgs_and_transform_imgs_like_nilearn(ours, theirs, kwargs):
    run = tiny_run()
    vols = [nib.Nifti1Image(np.asarray(run.dataobj)[..., i], run.affine) for i in range(4)]
    ref = quiet(theirs(**kwargs()).fit, run)
    masker = ours(**kwargs()).fit(lazy(run))
    for imgs in (run, vols):
        np.testing.assert_allclose(
            masker.transform_single_imgs(imgs), quiet(ref.transform_single_imgs, imgs), atol=TOL
        )
    assert hasattr(masker, "transform_imgs") == hasattr(ref, "transform_imgs")
    if hasattr(ref, "transform_imgs"):
        for got, exp in zip(
            masker.transform_imgs([run, run]), quiet(ref.transform_imgs, [run, run]), strict=True
        ):
            np.testing.assert_allclose(got, exp, atol=TOL)
    if hasattr(ref, "labels_"):
        assert masker.labels_ == ref.labels_


def nilearn_masker(name, **kwargs):
    return getattr(nilearn_maskers, name)(**kwargs)


# ---------------------------------------------------------------------------- spheres
def _nilearn_spheres(seeds, affine, shape, radius, mask):
    from nilearn.maskers.nifti_spheres_masker import apply_mask_and_get_affinity

    img = nib.Nifti1Image(np.zeros(shape + (1,), np.float32), affine)
    mimg = None if mask is None else nib.Nifti1Image(mask.astype(np.int8), affine)
    _, adj = apply_mask_and_get_affinity(seeds, img, radius, True, mask_img=mimg)
    cand = np.flatnonzero(mask.ravel()) if mask is not None else np.arange(np.prod(shape))
    adj = adj.tocsr()
    return [np.sort(cand[adj[i].indices]) for i in range(len(seeds))]


@pytest.mark.parametrize("trial", range(24))
def test_sphere_voxels_exactly_as_nilearn(trial):
    rng = np.random.default_rng(100 + trial)
    shape = tuple(int(s) for s in rng.integers(6, 13, 3))
    affine = np.diag(list(rng.choice([1.0, 2.0, 2.5, 3.0], 3)) + [1.0])
    affine[:3, 3] = rng.choice([-10.0, -9.5, 0.0, 5.25], 3)  # half-integer world grids too
    if trial % 3 == 0:
        affine[0, 1] = 0.3  # sheared grid
    corner = affine[:3, :3] @ np.array(shape) + affine[:3, 3]
    lo, hi = np.minimum(affine[:3, 3], corner), np.maximum(affine[:3, 3], corner)
    seeds = [list(np.round(rng.uniform(lo, hi), trial % 2)) for _ in range(4)]
    radius = [None, 2.0, 3.0, 4.5][trial % 4]
    mask = rng.random(shape) > 0.3 if trial % 4 == 1 else None
    try:
        expected = _nilearn_spheres(seeds, affine, shape, radius, mask)
    except ValueError:
        with pytest.raises(ParameterError, match="These spheres are empty"):
            sphere_voxels(seeds, affine, shape, radius, mask=mask, allow_overlap=True)
        return
    got = sphere_voxels(seeds, affine, shape, radius, mask=mask, allow_overlap=True)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(g, e)


def test_nearest_voxel_rounds_half_to_even():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -10.0
    # world 1.0 -> index 5.5 -> 6 ; world 3.0 -> 6.5 -> 6
    (a,), (b,) = sphere_voxels(
        [(1.0, 1.0, 1.0), (3.0, 3.0, 3.0)], affine, (10, 10, 10), None, allow_overlap=True
    )
    assert a == b == np.ravel_multi_index((6, 6, 6), (10, 10, 10))


def test_truncated_coordinate_quirk_adds_second_voxel():
    affine = np.eye(4)
    affine[:3, 3] = -9.5  # world centres at half-integers
    seeds = [(0.9, 0.9, 0.9)]  # nearest: world 0.5; int(-0.5) == int(0.9) == 0 adds world -0.5
    expected = _nilearn_spheres(seeds, affine, (20, 20, 20), None, None)
    got = sphere_voxels(seeds, affine, (20, 20, 20), None)
    assert got[0].size == 2
    np.testing.assert_array_equal(got[0], expected[0])


def test_seed_outside_image_error():
    masker = NiftiSpheresMasker([(0.0, 0.0, 0.0), (200.0, 0.0, 0.0)], radius=3.0)
    with pytest.raises(ParameterError, match=r"These spheres are empty: \[1\].*outside the image"):
        masker.fit(lazy(tiny_run()))


def test_overlapping_spheres_error_and_allow_overlap():
    seeds = [(0.0, 0.0, 0.0), (3.0, 0.0, 0.0)]
    with pytest.raises(ParameterError, match=r"Overlap detected between spheres: seeds \[0, 1\]"):
        NiftiSpheresMasker(seeds, radius=4.0).fit(lazy(tiny_run()))
    img = tiny_run()
    ref = quiet(
        nilearn_masker(
            "NiftiSpheresMasker", seeds=seeds, radius=4.0, allow_overlap=True
        ).fit_transform,
        img,
    )
    got = NiftiSpheresMasker(seeds, radius=4.0, allow_overlap=True).fit_transform(lazy(img))
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL)


def test_spheres_with_mask_match_nilearn():
    rng = np.random.default_rng(3)
    mask = nib.Nifti1Image((rng.random(SHAPE) > 0.4).astype(np.int8), tiny_affine())
    img = tiny_run()
    kw = dict(seeds=SEEDS, radius=5.0, mask_img=mask, smoothing_fwhm=5)
    ref = quiet(nilearn_masker("NiftiSpheresMasker", **kw).fit_transform, img)
    got = NiftiSpheresMasker(**kw).fit_transform(lazy(img))
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL)
    sig = got[:3]
    ref_img = quiet(nilearn_masker("NiftiSpheresMasker", **kw).fit(img).inverse_transform, sig)
    ours_img = NiftiSpheresMasker(**kw).fit(lazy(img)).inverse_transform(sig)
    np.testing.assert_allclose(ours_img.get_fdata(), ref_img.get_fdata(), rtol=1e-6)


def test_integer_image_means_truncated_like_nilearn():
    rng = np.random.default_rng(4)
    img = nib.Nifti1Image(rng.integers(0, 100, SHAPE + (12,)).astype(np.int16), tiny_affine())
    ref = quiet(nilearn_masker("NiftiSpheresMasker", seeds=SEEDS, radius=5.0).fit_transform, img)
    got = NiftiSpheresMasker(SEEDS, radius=5.0).fit_transform(lazy(img))
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)  # truncated means: exact


def test_seeds_validation_messages():
    with pytest.raises(ParameterError, match="Seed #1 is of length 2 instead of 3"):
        NiftiSpheresMasker([(0, 0, 0), (1, 2)]).fit()
    with pytest.raises(ParameterError, match="Given seed list is of type"):
        NiftiSpheresMasker(3).fit()


# ---------------------------------------------------------------------------- smoothing
@pytest.mark.parametrize("fwhm", [4.0, 6.0, 30.0, (4.0, None, 8.0), "fast"])
def test_smoothing_adjoint_identity(fwhm):
    """<W, S X> == <S* W, X> with S nilearn's own smoothing, including at the image edges."""
    from nilearn.image.image import smooth_array

    rng = np.random.default_rng(5)
    affine = np.diag([3.0, 2.0, 2.5, 1.0])
    x, w = rng.standard_normal((2,) + SHAPE)
    lhs = np.sum(w * smooth_array(x, affine, fwhm))
    rhs = np.sum(smooth_adjoint(w, (0, 0, 0), SHAPE, affine, fwhm) * x)
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("fwhm", [6.0, 12.0, "fast"])
def test_local_weights_match_smoothing_data_at_borders(fwhm):
    """Regions touching the image border: X @ smooth*(W) == smooth(X) @ W (nilearn smoothing)."""
    from nilearn.image.image import smooth_array

    rng = np.random.default_rng(6)
    affine = np.diag([3.0, 2.0, 2.5, 1.0])
    data = rng.standard_normal(SHAPE + (5,))
    regions = [np.array([0, 1, 9]), np.array([100, 101, 200]), np.array([np.prod(SHAPE) - 1])]
    w = region_weights(regions, SHAPE, affine, fwhm)
    got = (w.T @ data.reshape(-1, 5)).T
    sm = smooth_array(data, affine, fwhm).reshape(-1, 5)
    expected = np.stack([sm[r].sum(axis=0) for r in regions], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_reduction_reads_only_chunks_with_weights():
    run = lazy(tiny_run())
    w = region_weights([np.array([0])], SHAPE)
    assert n_chunks_touched(run.data, w) == 1


# ---------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    "strategy", ["sum", "median", "minimum", "maximum", "standard_deviation", "variance"]
)
def test_labels_strategies_match_nilearn(strategy):
    img = tiny_run()
    kw = dict(labels_img=tiny_labels(), strategy=strategy, smoothing_fwhm=5)
    ref = quiet(nilearn_masker("NiftiLabelsMasker", **kw).fit_transform, img)
    got = NiftiLabelsMasker(**kw).fit_transform(lazy(img))
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL)


def test_labels_background_label_and_mask_match_nilearn():
    img = tiny_run()
    rng = np.random.default_rng(8)
    mask = nib.Nifti1Image((rng.random(SHAPE) > 0.3).astype(np.int8), tiny_affine())
    kw = dict(labels_img=tiny_labels(), background_label=2, mask_img=mask)
    ref_masker = nilearn_masker("NiftiLabelsMasker", **kw)
    ref = quiet(ref_masker.fit_transform, img)
    ours = NiftiLabelsMasker(**kw)
    got = ours.fit_transform(lazy(img))
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL)
    assert list(ours.get_feature_names_out()) == list(ref_masker.get_feature_names_out())
    inv_ref = quiet(ref_masker.inverse_transform, ref[:2])
    np.testing.assert_allclose(
        ours.inverse_transform(got[:2]).get_fdata(), inv_ref.get_fdata(), rtol=TOL, atol=TOL
    )


def test_labels_removed_by_the_mask_are_not_regions():
    lab = np.asarray(tiny_labels().dataobj)
    mask = nib.Nifti1Image((lab != 3).astype(np.int8), tiny_affine())
    kw = dict(labels_img=tiny_labels(), mask_img=mask)
    ref = nilearn_masker("NiftiLabelsMasker", **kw)
    expected = quiet(ref.fit_transform, tiny_run())
    ours = NiftiLabelsMasker(**kw)
    with pytest.warns(UserWarning, match=r"following labels were removed: \[3\]"):
        got = ours.fit_transform(lazy(tiny_run()))
    np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL)
    assert ours.n_elements_ == ref.n_elements_ == 3
    assert list(ours.get_feature_names_out()) == list(ref.get_feature_names_out())


def test_labels_on_other_grid_without_resampling_error():
    other = nib.Nifti1Image(np.asarray(tiny_labels().dataobj), np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(GridMismatchError, match=r"labels_img .* not on the same voxel grid"):
        NiftiLabelsMasker(other, resampling_target=None).fit(lazy(tiny_run()))


def test_labels_no_label_error():
    empty = nib.Nifti1Image(np.zeros(SHAPE, np.int16), tiny_affine())
    with pytest.raises(ParameterError, match="labels_img has no label"):
        NiftiLabelsMasker(empty).fit()


# ---------------------------------------------------------------------------- maps
def test_maps_allow_overlap_false_zeroes_negative_values_like_nilearn():
    img = tiny_run()
    lab = np.asarray(tiny_labels().dataobj)
    maps = np.stack([(lab == i) * 1.0 for i in range(1, 5)], -1).astype(np.float32)
    maps[..., 1] -= 0.05 * (lab == 0)  # negatives where no other map is positive
    mimg = nib.Nifti1Image(maps, tiny_affine())
    kw = dict(maps_img=mimg, allow_overlap=False)
    ref = quiet(nilearn_masker("NiftiMapsMasker", **kw).fit_transform, img)
    got = NiftiMapsMasker(**kw).fit_transform(lazy(img))
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL)
    with pytest.raises(ParameterError, match="Overlap detected in the maps"):
        NiftiMapsMasker(tiny_maps(), allow_overlap=False).fit_transform(lazy(img))


def test_maps_with_mask_and_inverse_match_nilearn():
    img = tiny_run()
    rng = np.random.default_rng(9)
    mask = nib.Nifti1Image((rng.random(SHAPE) > 0.3).astype(np.int8), tiny_affine())
    kw = dict(maps_img=tiny_maps(), mask_img=mask, smoothing_fwhm=6)
    ref_masker = nilearn_masker("NiftiMapsMasker", **kw)
    ref = quiet(ref_masker.fit_transform, img)
    ours = NiftiMapsMasker(**kw)
    got = ours.fit_transform(lazy(img))
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL)
    # the fitted maps are a copy (nilearn deep-copies them): not the user's array
    given = np.asarray(kw["maps_img"].dataobj)
    assert not np.shares_memory(np.asarray(ours.fit().maps_img_.dataobj), given)
    inv_ref = quiet(ref_masker.inverse_transform, ref[:2])
    np.testing.assert_allclose(
        ours.inverse_transform(ref[:2]).get_fdata(), inv_ref.get_fdata(), rtol=1e-5, atol=1e-5
    )


def test_maps_on_other_grid_without_resampling_error():
    maps = tiny_maps()
    other = nib.Nifti1Image(np.asarray(maps.dataobj), np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(GridMismatchError, match=r"maps_img .* not on the same voxel grid"):
        NiftiMapsMasker(other, resampling_target=None).fit(lazy(tiny_run()))


def test_maps_no_map_error():
    empty = nib.Nifti1Image(np.zeros(SHAPE + (2,), np.float32), tiny_affine())
    with pytest.raises(ParameterError, match="maps_img contains no map"):
        NiftiMapsMasker(empty).fit()


def test_maps_lazy_result_is_one_pass():
    """The (T, K) graph reads every chunk once: one task per chunk feeds the reduction."""
    run = lazy(tiny_run())
    out = NiftiMapsMasker(tiny_maps()).fit(run).transform(run, compute=False)
    graph = dict(out.__dask_graph__())
    reads = [k for k in graph if isinstance(k, tuple) and k[0] == run.data.name]
    partials = [k for k in graph if isinstance(k, tuple) and "region-partial" in str(k[0])]
    assert len(partials) == len(reads) == run.data.npartitions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(out.compute()).all()


def test_threads_starting_together_build_one_plan(monkeypatch):
    """Subjects on dask's threads start together: one builds the grid's plan, the others
    wait for it (each built its own copy before)."""
    import threading
    import time

    run = lazy(tiny_run())
    masker = NiftiMapsMasker(tiny_maps()).fit()
    built, plan = [], NiftiMapsMasker._plan

    def slow_plan(self, img4):
        built.append(1)
        time.sleep(0.05)  # both threads are inside _get_plan by then
        return plan(self, img4)

    monkeypatch.setattr(NiftiMapsMasker, "_plan", slow_plan)
    plans = []
    threads = [
        threading.Thread(target=lambda: plans.append(masker._get_plan(run))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len(plans) == 2 and plans[0] is plans[1]


def test_uneven_time_chunks_supported():
    img = tiny_run()
    data = da.from_array(np.asarray(img.dataobj), chunks=(4, 4, 5, 15))
    got = NiftiLabelsMasker(tiny_labels()).fit_transform(LazyImage(data, img.affine))
    ref = quiet(nilearn_masker("NiftiLabelsMasker", labels_img=tiny_labels()).fit_transform, img)
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL)


def test_slabs_inside_a_chunk_give_the_same_sums(monkeypatch):
    """Chunks are converted to float64 a slab of voxels at a time; slabs must not matter."""
    import lazyconn.ops.weights as weights_module

    run = lazy(tiny_run(), chunks=(7, 8, 9, 40))  # one chunk of 504 voxels
    w = region_weights([np.arange(0, 500, 3), np.array([5, 17, 400])], SHAPE, tiny_affine(), 6)
    whole = weights_module.region_reduce(run.data, w).compute()
    monkeypatch.setattr(weights_module, "_SLAB_VOXELS", 37)
    slabs = weights_module.region_reduce(run.data, w).compute()
    expected = (w.T @ np.asarray(tiny_run().dataobj, dtype=np.float64).reshape(-1, 40)).T
    np.testing.assert_allclose(slabs, expected, rtol=1e-12)
    np.testing.assert_allclose(whole, expected, rtol=1e-12)


@pytest.mark.parametrize("dense", [False, True])
def test_blocks_read_in_pieces_of_frames_give_the_same_sums(monkeypatch, dense, tmp_path):
    """A block read as pieces of time frames (a store's chunks, ``frames=``) gives the
    sums of the whole block (bit-equal with sparse weights: each product column is
    independent; with dense ones BLAS may round differently) and counts its non-finite
    values; a masker on a store reads its chunks in pieces and matches the in-memory run."""
    import dask.local

    import lazyconn
    import lazyconn.ops.weights as weights_module

    data = np.asarray(tiny_run().dataobj).copy()
    data[2, 3, 4, 5:9] = np.nan  # read as zeros, counted
    data[6, 7, 8, 0] = np.inf
    run = lazy(nib.Nifti1Image(data, tiny_affine()))
    regions = [np.arange(0, 500, 3), np.array([5, 17, 400])]
    if dense:  # more than a quarter of each block's weights non-zero
        regions = [np.arange(504), np.arange(0, 504, 2)]
    w = region_weights(regions, SHAPE, tiny_affine(), 6)
    monkeypatch.setattr(weights_module, "_SLAB_VOXELS", 37)

    def frames(block):  # the block in F voxel order, 7 frames at a time (as a store's)
        x = np.asarray(run.data.blocks[block]).reshape(-1, N_T, order="F").T
        return (x[t : t + 7] for t in range(0, N_T, 7))

    whole = weights_module.region_reduce(run.data, w)
    pieces = weights_module.region_reduce(run.data, w, frames=frames)
    graph = dict(pieces.__dask_graph__())
    tasks = [k for k in graph if str(k[0]).startswith(weights_module.FRAMES_TASKS)]
    assert run.data.name not in {k[0] for k in graph if isinstance(k, tuple)}
    assert len(tasks) == weights_module.n_chunks_touched(run.data, w)
    outs = dask.local.get_sync(graph, tasks)  # (partial, count) per block
    assert sum(count for _, count in outs) == 5
    if not dense:
        np.testing.assert_array_equal(pieces.compute(), whole.compute())
        return
    np.testing.assert_allclose(pieces.compute(), whole.compute(), rtol=1e-13)
    store = str(tmp_path / "run.zarr")
    lazyconn.load(tiny_run()).to_zarr(store, chunks=UNEVEN)
    masker = NiftiMapsMasker(tiny_maps(), smoothing_fwhm=6).fit()
    lazy_signals = masker.transform(lazyconn.load(store), compute=False)
    assert any(str(k[0]).startswith(weights_module.FRAMES_TASKS) for k in lazy_signals.dask)
    np.testing.assert_allclose(
        lazy_signals.compute(), masker.transform(lazy(tiny_run())), rtol=1e-10
    )


@pytest.mark.parametrize("kind", ["labels", "maps"])
def test_regions_resampled_to_the_data_like_nilearn(kind):
    """Regions on a coarser grid are resampled onto the data (nearest / linear) as nilearn."""
    coarse = np.diag([6.0, 6.0, 6.0, 1.0])
    coarse[:3, 3] = tiny_affine()[:3, 3]
    if kind == "labels":
        lab = np.random.default_rng(11).integers(0, 4, (4, 4, 5)).astype(np.int16)
        regions = nib.Nifti1Image(lab, coarse)
        kw, name, cls = dict(labels_img=regions), "NiftiLabelsMasker", NiftiLabelsMasker
    else:
        maps = np.random.default_rng(11).random((4, 4, 5, 3)).astype(np.float32)
        regions = nib.Nifti1Image(maps, coarse)
        kw, name, cls = dict(maps_img=regions), "NiftiMapsMasker", NiftiMapsMasker
    img = tiny_run()
    expected = quiet(nilearn_masker(name, **kw).fit_transform, img)
    np.testing.assert_allclose(cls(**kw).fit_transform(lazy(img)), expected, rtol=TOL, atol=TOL)
    with pytest.warns(UserWarning, match="at transform time"):
        late = cls(**kw).fit().transform(lazy(img))
    np.testing.assert_allclose(late, expected, rtol=TOL, atol=TOL)


def test_spheres_mask_on_another_grid_is_resampled_nearest_like_nilearn():
    coarse = np.diag([6.0, 6.0, 6.0, 1.0])
    coarse[:3, 3] = tiny_affine()[:3, 3]
    mask = (np.random.default_rng(12).random((4, 4, 5)) > 0.2).astype(np.int8)
    kw = dict(seeds=SEEDS, radius=5.0, mask_img=nib.Nifti1Image(mask, coarse))
    img = tiny_run()
    expected = quiet(nilearn_masker("NiftiSpheresMasker", **kw).fit_transform, img)
    got = NiftiSpheresMasker(**kw).fit_transform(lazy(img))
    np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL)
