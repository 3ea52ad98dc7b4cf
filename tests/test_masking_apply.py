"""apply_mask / unmask: parity with nilearn, C voxel order, laziness, errors."""

import itertools

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
from dask.core import get_dependencies
from hypothesis import given, settings
from hypothesis import strategies as st
from nilearn import masking as nmasking

from lazyconn import masking as lmasking
from lazyconn.exceptions import (
    DimensionError,
    GridMismatchError,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.image import load
from lazyconn.ops import spatial
from lazyconn.ops.voxels import block_positions, c_positions, gather, scatter, smooth_gather
from lazyconn.testing.imaging import (
    brain_blob,
    grid_affine,
    inaccessible_image,
    lazy_uneven,
    synthetic_epi,
)
from lazyconn.testing.laziness import inaccessible_dask_array, raise_if_dask_computes
from lazyconn.testing.reference import assert_smoothing_close, smoothed_in_mask


def _mask_img(shape3, rng, dtype=np.uint8, affine=None):
    mask = brain_blob(shape3, 0.4) & (rng.random(shape3) > 0.2)
    return nib.Nifti1Image(mask.astype(dtype), grid_affine() if affine is None else affine)


@pytest.mark.parametrize("smoothing_fwhm", [None, 5, 8.5])
@pytest.mark.parametrize("dtype", ["f", np.float64])
def test_apply_mask_matches_nilearn(epi_img, rng, smoothing_fwhm, dtype):
    img, lazy = epi_img
    mask = _mask_img(img.shape[:3], rng)
    expected = nmasking.apply_mask(img, mask, dtype=dtype, smoothing_fwhm=smoothing_fwhm)
    result = lmasking.apply_mask(
        lazy, mask, dtype=dtype, smoothing_fwhm=smoothing_fwhm, compute=False
    )
    assert isinstance(result, da.Array)
    assert result.dtype == expected.dtype
    assert len(result.chunks[0]) == 1  # whole time axis per chunk
    # without smoothing: the same values; smoothed: within float32 rounding (BLAS products)
    same = np.testing.assert_array_equal if smoothing_fwhm is None else assert_smoothing_close
    same(result.compute(), expected)
    # the default is numpy, as nilearn
    computed = lmasking.apply_mask(lazy, mask, dtype=dtype, smoothing_fwhm=smoothing_fwhm)
    assert type(computed) is np.ndarray and computed.dtype == expected.dtype
    same(computed, expected)


@pytest.mark.parametrize("smoothing_fwhm", [5, 8.5, "fast"])
def test_smoothing_only_the_masks_box_equals_nilearns_whole_volume(rng, smoothing_fwhm):
    from lazyconn.masking import _smoothing_box

    img = synthetic_epi((24, 22, 20, 12), rng)
    lazy = load(img, chunks=((5, 11, 8), (9, 13), (4, 16), (12,)))
    shape = img.shape[:3]
    mask = np.zeros(shape, np.uint8)
    # An off-centre box touching the x = 0 face, with holes: cropped on 5 faces.
    mask[0:5, 6:12, 7:12] = 1
    mask[2, 8, 9] = mask[0, 6, 7] = 0
    mask_img = nib.Nifti1Image(mask, img.affine)
    box = _smoothing_box(mask.astype(bool), img.affine, smoothing_fwhm)
    assert box is not None and box[0].start == 0
    assert all(b.stop - b.start < n for b, n in zip(box[1:], shape[1:], strict=True))
    if smoothing_fwhm == "fast":  # nilearn's apply_mask takes numbers only
        from nilearn.image import smooth_img

        expected = nmasking.apply_mask(smooth_img(img, "fast"), mask_img)
    else:
        expected = nmasking.apply_mask(img, mask_img, smoothing_fwhm=smoothing_fwhm)
    result = lmasking.apply_mask(lazy, mask_img, smoothing_fwhm=smoothing_fwhm)
    assert_smoothing_close(result, expected)


def test_smoothing_box():
    from lazyconn.masking import _smoothing_box

    mask = np.zeros((20, 20, 20), bool)
    mask[5:8, 0:3, 10:20] = True
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    # fwhm 6 mm at 2 mm: sigma 1.27 voxels, half-width int(4 * 1.27 + 0.5) = 5
    assert _smoothing_box(mask, affine, 6) == (slice(0, 13), slice(0, 8), slice(5, 20))
    assert _smoothing_box(mask, affine, "fast") == (slice(4, 9), slice(0, 4), slice(9, 20))
    assert _smoothing_box(mask, affine, 40) is None  # the box is the whole grid
    assert _smoothing_box(np.zeros_like(mask), affine, 6) is None
    assert _smoothing_box(mask, affine, -1) is None  # smooth_array refuses it


@pytest.mark.parametrize("target_bytes", [1, 400, 4000, None])
def test_gather_c_order_any_chunk_size(rng, target_bytes):
    x = rng.standard_normal((13, 11, 12, 6)).astype(np.float32)
    mask = rng.random((13, 11, 12)) > 0.5
    arr = da.from_array(x, chunks=((5, 8), (4, 7), (3, 4, 5), (6,)))
    out = gather(arr, mask, target_bytes=target_bytes)
    np.testing.assert_array_equal(out.compute(), x[mask].T)
    # chunks never straddle an x-block: each depends on one x-slab only
    bounds = np.cumsum((0,) + out.chunks[1])
    slab_edges = [0, int(mask[:5].sum()), int(mask.sum())]
    assert set(slab_edges) <= set(bounds.tolist())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "chunks", "sigmas"),
    [
        # uneven blocks, some thinner than the half-width (terms reach two blocks away)
        ((13, 11, 12, 5), ((5, 8), (2, 2, 7), (3, 4, 5), (2, 3)), [0.8, 1.9, 0.6]),
        # one axis unsmoothed; a kernel wider than an axis (several reflections)
        ((6, 15, 11, 3), ((3, 3), (8, 7), (11,), (3,)), [4.0, 0.0, 1.1]),
        # one block
        ((9, 8, 7, 4), ((9,), (8,), (7,), (4,)), [1.0, 1.0, 1.0]),
    ],
)
@pytest.mark.parametrize("order", ["C", "F"])
def test_smooth_gather_equals_scipy_smoothing_then_mask(
    rng, monkeypatch, shape, chunks, sigmas, dtype, order
):
    x = (100 + 10 * rng.standard_normal(shape)).astype(dtype)
    x[1, 2, 3, 0] = np.nan  # NaN and inf count as 0, as nilearn's smoothing does
    x[-1, -1, -1, -1] = np.inf
    mask = rng.random(shape[:3]) > 0.4
    expected = smoothed_in_mask(x, mask, sigmas)
    arr = da.from_array(x, chunks=chunks)
    arr = arr.map_blocks(np.asfortranarray if order == "F" else np.ascontiguousarray)
    monkeypatch.setattr(spatial, "SPREAD_SLAB_BYTES", 1)  # one volume per slab
    got = smooth_gather(arr, mask, sigmas, target_bytes=200)
    assert got.chunks[0] == (shape[3],) and got.dtype == dtype
    assert_smoothing_close(got.compute(), expected)
    # each block is read by one task, which needs no other block; its time chunks are
    # taken in order (each after the block's previous one: a .nii.gz inflates once)
    dsk = dict(got.__dask_graph__())
    spread = [k for k in dsk if isinstance(k, tuple) and "spread" in k[0]]
    deps = {k: get_dependencies(dsk, k) for k in spread}
    blocks = {k: {d for d in ds if "spread" not in d[0]} for k, ds in deps.items()}
    assert all(len(b) == 1 for b in blocks.values())
    assert len({d for b in blocks.values() for d in b}) == len(spread)
    for k, ds in deps.items():
        assert ds - blocks[k] == ({(*k[:-1], k[-1] - 1)} if k[-1] else set())


def test_gather_scatter_block_order_roundtrip(rng):
    x = rng.standard_normal((7, 8, 9, 4))
    mask = rng.random((7, 8, 9)) > 0.6
    chunks = ((3, 4), (5, 3), (2, 4, 3), (4,))
    arr = da.from_array(x, chunks=chunks)
    xb = gather(arr, mask, order="block")
    pos = block_positions(mask, chunks[:3])
    np.testing.assert_array_equal(xb.compute()[:, pos[mask]], x[mask].T)
    back = scatter(xb, pos, ((4, 3), (8,), (5, 4))).compute()
    np.testing.assert_array_equal(back, np.where(mask[..., None], x, 0))


def test_apply_mask_3d_image_gives_1d(rng):
    img = synthetic_epi((13, 11, 12), rng)
    mask = _mask_img((13, 11, 12), rng)
    expected = nmasking.apply_mask(img, mask)
    result = lmasking.apply_mask(load(img, chunks=((5, 8), (4, 7), (3, 4, 5))), mask)
    assert result.shape == expected.shape == (int(np.asarray(mask.dataobj).sum()),)
    np.testing.assert_array_equal(result, expected)


def test_apply_mask_int_data_and_list_of_3d(rng):
    shape = (7, 8, 9)
    vols = [
        nib.Nifti1Image((rng.random(shape) * 100).astype(np.int16), grid_affine())
        for _ in range(4)
    ]
    mask = _mask_img(shape, rng, dtype=np.int32)
    expected = nmasking.apply_mask(vols, mask)
    result = lmasking.apply_mask([lazy_uneven(v) for v in vols], mask)
    assert result.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(result, expected)


def test_apply_mask_non_finite(rng):
    img = synthetic_epi((7, 8, 9, 20), rng)
    data = np.asarray(img.dataobj).copy()
    blob = brain_blob((7, 8, 9), 0.4)
    i, j, k = np.argwhere(blob)[3]
    data[i, j, k, 2] = np.nan
    data[i, j, k, 5] = np.inf
    img = nib.Nifti1Image(data, img.affine)
    mask = nib.Nifti1Image(blob.astype(np.uint8), img.affine)
    lazy = lazy_uneven(img)
    np.testing.assert_array_equal(lmasking.apply_mask(lazy, mask), nmasking.apply_mask(img, mask))
    # ensure_finite=False: non-finite values propagate, as in nilearn
    expected = nmasking.apply_mask(img, mask, ensure_finite=False)
    result = lmasking.apply_mask(lazy, mask, ensure_finite=False)
    assert np.isnan(result).sum() == 1 and np.isinf(result).sum() == 1
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("ndim", [1, 2])
def test_unmask_matches_nilearn(rng, ndim):
    mask = _mask_img((13, 11, 12), rng)
    n = int(np.asarray(mask.dataobj).sum())
    X = rng.standard_normal((15, n) if ndim == 2 else (n,)).astype(np.float32)
    expected = nmasking.unmask(X, mask).get_fdata(dtype=np.float32)
    for x in (X, da.from_array(X, chunks=(-1, 37) if ndim == 2 else 37)):
        result = lmasking.unmask(x, mask)
        assert result.shape == expected.shape and result.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(result.data), expected)


def test_unmask_bool_becomes_uint8_and_list(rng):
    mask = _mask_img((7, 8, 9), rng)
    n = int(np.asarray(mask.dataobj).sum())
    X = rng.random((3, n)) > 0.5
    result = lmasking.unmask([X, X[0]], mask)
    assert [r.ndim for r in result] == [4, 3]
    assert result[0].dtype == np.uint8
    np.testing.assert_array_equal(
        np.asarray(result[0].data), np.asanyarray(nmasking.unmask(X, mask).dataobj)
    )


def test_apply_unmask_roundtrip_restores_in_mask_voxels(epi_img, rng):
    img, lazy = epi_img
    mask = _mask_img(img.shape[:3], rng)
    back = lmasking.unmask(lmasking.apply_mask(lazy, mask), mask)
    m = np.asarray(mask.dataobj).astype(bool)
    np.testing.assert_array_equal(
        np.asarray(back.data), np.where(m[..., None], np.asarray(img.dataobj), 0)
    )


def test_apply_mask_and_unmask_are_lazy(rng):
    img = inaccessible_image((13, 11, 12, 15))
    mask = _mask_img((13, 11, 12), rng)
    n = int(np.asarray(mask.dataobj).sum())
    with raise_if_dask_computes():
        X = lmasking.apply_mask(img, mask, smoothing_fwhm=6, compute=False)
        back = lmasking.unmask(X, mask)
        other = lmasking.unmask(inaccessible_dask_array((15, n), (15, 40)), mask)
    assert X.shape == (15, n)
    assert back.shape == other.shape == (13, 11, 12, 15)


# --- errors ------------------------------------------------------------------------------
def test_apply_mask_grid_mismatch(rng):
    img = inaccessible_image((13, 11, 12, 15))
    shifted = grid_affine()
    shifted[0, 3] += 1
    with pytest.raises(GridMismatchError, match=r"mask_img \(shape \(13, 11, 12\).*imgs \(shape"):
        lmasking.apply_mask(img, _mask_img((13, 11, 12), rng, affine=shifted))
    with pytest.raises(GridMismatchError, match=r"mask_img \(shape \(7, 8, 9\).*\(13, 11, 12\)"):
        lmasking.apply_mask(img, _mask_img((7, 8, 9), rng))


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.zeros((7, 8, 9)), "mask_img is invalid as it is empty"),
        (np.full((7, 8, 9), 2.0), None),
        (np.arange(7 * 8 * 9).reshape(7, 8, 9) % 3, "mask_img is not made of 2 values"),
    ],
)
def test_apply_mask_bad_masks(values, match):
    img = inaccessible_image((7, 8, 9, 20))
    if match is None:  # one non-zero value only: a valid full mask
        assert lmasking.apply_mask(
            img, nib.Nifti1Image(values, grid_affine(), dtype=np.int32), compute=False
        ).shape == (20, 504)
        return
    with pytest.raises(ParameterError, match=match):
        lmasking.apply_mask(img, nib.Nifti1Image(values, grid_affine(), dtype=np.int32))


def test_mask_without_zero_background():
    values = np.where(np.arange(504).reshape(7, 8, 9) % 2, 1, 2)
    with pytest.raises(ParameterError, match="background of the mask must be represented with 0"):
        lmasking.apply_mask(
            inaccessible_image((7, 8, 9, 20)),
            nib.Nifti1Image(values, grid_affine(), dtype=np.int32),
        )


def test_unmask_errors(rng):
    mask = _mask_img((7, 8, 9), rng)
    n = int(np.asarray(mask.dataobj).sum())
    with pytest.raises(DimensionError, match="Masked data X must be 2D or 1D array"):
        lmasking.unmask(np.zeros((2, 3, n)), mask)
    with pytest.raises(ParameterTypeError, match=rf"expected {n} voxels"):
        lmasking.unmask(np.zeros((2, n + 1)), mask)
    with pytest.raises(DimensionError, match=r"mask_img has shape \(7, 8, 9, 2\)"):
        lmasking.unmask(np.zeros(n), nib.Nifti1Image(np.ones((7, 8, 9, 2)), grid_affine()))


def test_positions_helpers(rng):
    mask = rng.random((5, 6, 7)) > 0.5
    pos = c_positions(mask)
    assert (pos[mask] == np.arange(mask.sum())).all() and (pos[~mask] == -1).all()
    bpos = block_positions(mask, ((2, 3), (6,), (7,)))
    np.testing.assert_array_equal(bpos, pos)  # y and z whole: block order is C order


# --- properties (hypothesis): any shape, any chunking, any mask --------------------------


@st.composite
def _chunked_case(draw):
    shape = tuple(draw(st.integers(1, 7)) for _ in range(3)) + (draw(st.integers(1, 4)),)
    chunks = []
    for n in shape[:3]:
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=3))) if n > 1 else []
        edges = [0, *cuts, n]
        chunks.append(tuple(b - a for a, b in itertools.pairwise(edges)))
    seed = draw(st.integers(0, 2**16))
    density = draw(st.sampled_from([0.0, 0.3, 1.0]))
    order = draw(st.sampled_from(["C", "block"]))
    target = draw(st.sampled_from([1, 64, None]))
    return shape, tuple(chunks) + ((shape[3],),), seed, density, order, target


@settings(max_examples=25, deadline=None)
@given(_chunked_case())
def test_gather_scatter_property(case):
    shape, chunks, seed, density, order, target = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    mask = rng.random(shape[:3]) < density
    mask.flat[seed % mask.size] = True  # masks are never empty
    arr = da.from_array(x, chunks=chunks)
    got = gather(arr, mask, order=order, target_bytes=target)
    pos = c_positions(mask) if order == "C" else block_positions(mask, chunks[:3])
    np.testing.assert_array_equal(got.compute(scheduler="sync")[:, pos[mask]], x[mask].T)
    back = scatter(got, pos, chunks[:3]).compute(scheduler="sync")
    np.testing.assert_array_equal(back, np.where(mask[..., None], x, 0))
