"""The zarr store format: lossless round trips, layout, completion marker."""

import gzip
import json
import os
from pathlib import Path

import dask
import nibabel as nib
import numpy as np
import pytest
import zarr

import lazyconn
from lazyconn.exceptions import IncompleteStoreError
from lazyconn.io import store as store_mod
from lazyconn.testing.laziness import raise_if_dask_computes

UNEVEN = (4, 5, 6, 20)


def _nii_bytes(path):
    data = Path(path).read_bytes()
    return gzip.decompress(data) if path.endswith(".gz") else data


@pytest.mark.parametrize("name", ["run.nii", "run.nii.gz"])
@pytest.mark.parametrize(
    "dtype, slope, inter", [(np.float32, None, None), (np.int16, 0.5, 3.0), (">i2", 2.0, -1.0)]
)
def test_nifti_zarr_nifti_is_bit_identical(make_nifti, tmp_path, name, dtype, slope, inter):
    path, ref = make_nifti(name, dtype=dtype, slope=slope, inter=inter)
    store = str(tmp_path / "run.zarr")
    lazyconn.load(path).to_zarr(store, chunks=UNEVEN)
    img = lazyconn.load(store)
    assert img.chunks == ((4, 3), (5, 3), (6, 3), (20,))
    assert img.dtype == ref.dtype
    np.testing.assert_array_equal(img.data.compute(), ref)
    np.testing.assert_array_equal(img.affine, nib.load(path).affine)
    assert img.t_r == 2.0
    out = str(tmp_path / "back.nii")
    img.to_nifti(out)
    # Same header bytes (every field, extensions), same stored integers and scaling.
    assert _nii_bytes(out) == _nii_bytes(path)
    back = nib.load(out)
    assert back.dataobj.slope == nib.load(path).dataobj.slope
    np.testing.assert_array_equal(back.dataobj[...], ref)


def test_in_memory_image_round_trip(tmp_path, rng, affine):
    data = rng.standard_normal((7, 8, 9, 20)).astype(np.float32)
    nimg = nib.Nifti1Image(data, affine)
    nimg.header.set_zooms((3, 3, 3, 1.5))
    lazy = lazyconn.load(nimg, chunks=UNEVEN)
    store = str(tmp_path / "mem.zarr")
    lazy.to_zarr(store)
    img = lazyconn.load(store)
    np.testing.assert_array_equal(img.data.compute(), data)
    np.testing.assert_array_equal(img.affine, affine)
    assert img.t_r == 1.5
    # A derived image (no source file) is stored with a fresh header of its own dtype.
    derived = img.with_data(img.data * 2 + 1)
    derived.to_zarr(str(tmp_path / "derived.zarr"))
    back = lazyconn.load(str(tmp_path / "derived.zarr"))
    np.testing.assert_array_equal(back.data.compute(), data * 2 + 1)
    nifti = str(tmp_path / "derived.nii.gz")
    derived.to_nifti(nifti)
    np.testing.assert_array_equal(nib.load(nifti).get_fdata(dtype=np.float32), data * 2 + 1)
    np.testing.assert_array_equal(nib.load(nifti).affine, affine)


def test_store_layout_and_metadata(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii.gz", dtype=np.int16, slope=0.5, inter=3.0)
    store = str(tmp_path / "run.zarr")
    lazyconn.load(path).to_zarr(store, chunks=UNEVEN)
    group = zarr.open_group(store, mode="r")
    assert group.metadata.zarr_format == 3
    voxels = group["0"]
    assert voxels.shape == (20, 9, 8, 7)  # OME-Zarr axis order t, z, y, x
    assert voxels.chunks == (20, 6, 5, 4)  # whole time axis in every chunk
    assert voxels.dtype == np.int16  # the file's integers, scaling kept apart
    assert voxels.metadata.dimension_names == ("t", "z", "y", "x")
    meta = group.attrs["lazyconn"]
    assert meta["complete"] is True
    assert meta["scl_slope"] == 0.5 and meta["scl_inter"] == 3.0
    assert meta["t_r"] == 2.0
    np.testing.assert_array_equal(meta["affine"], nib.load(path).affine)
    header = bytes(np.asarray(group["nifti"][...]))
    assert header == _nii_bytes(path)[:352]
    ome = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ome["axes"]] == ["t", "z", "y", "x"]
    assert ome["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 3.0, 3.0, 3.0]
    # Stored raw integers are nibabel's unscaled values.
    unscaled = np.asarray(nib.load(path).dataobj.get_unscaled())
    np.testing.assert_array_equal(np.asarray(voxels[...]).transpose(3, 2, 1, 0), unscaled)


def test_completion_marker_is_written_last(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii")
    # An unmodified file takes the streaming conversion: nothing is written (or deleted)
    # before the graph is computed.
    store = str(tmp_path / "run.zarr")
    delayed = lazyconn.load(path).to_zarr(store, chunks=UNEVEN, compute=False)
    assert not os.path.exists(store)
    delayed.compute()
    assert lazyconn.load(store).shape == (7, 8, 9, 20)
    # A computed image: metadata exists, marked incomplete, before any voxel is written.
    other = str(tmp_path / "other.zarr")
    img = lazyconn.load(path)
    delayed = img.with_data(img.data * 1).to_zarr(other, chunks=UNEVEN, compute=False)
    with pytest.raises(IncompleteStoreError, match=r"other\.zarr.*incomplete lazyconn store"):
        lazyconn.load(other)
    assert not os.path.exists(os.path.join(other, "0", "c"))
    delayed.compute()
    assert lazyconn.load(other).shape == (7, 8, 9, 20)


def test_store_load_is_lazy_and_pickles(make_nifti, tmp_path):
    import pickle

    path, ref = make_nifti("run.nii")
    store = str(tmp_path / "run.zarr")
    lazyconn.load(path).to_zarr(store, chunks=UNEVEN)
    with raise_if_dask_computes():
        img = lazyconn.load(store)
        graph = img.data.mean(axis=-1)
    back = pickle.loads(pickle.dumps(graph))
    with dask.config.set(scheduler="sync"):
        np.testing.assert_allclose(back.compute(), ref.mean(-1), rtol=1e-6)
    # Re-chunking on load keeps values.
    np.testing.assert_array_equal(lazyconn.load(store, chunks=(3, 3, 9, 20)).data.compute(), ref)


def test_3d_store(make_nifti, tmp_path):
    path, ref = make_nifti("vol.nii.gz", shape=(7, 8, 9))
    store = str(tmp_path / "vol.zarr")
    lazyconn.load(path).to_zarr(store, chunks=(4, 5, 6))
    group = zarr.open_group(store, mode="r")
    assert group["0"].shape == (9, 8, 7)
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)


def test_default_codec_is_blosc_lz4_shuffle(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii")
    store = str(tmp_path / "run.zarr")
    lazyconn.load(path).to_zarr(store)
    meta = json.loads(Path(store, "0", "zarr.json").read_text())
    blosc = next(c for c in meta["codecs"] if c["name"] == "blosc")["configuration"]
    assert (blosc["cname"], blosc["clevel"], blosc["shuffle"]) == ("lz4", 5, "shuffle")
    assert store_mod.DEFAULT_COMPRESSOR == {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}
    # No compression is available too.
    lazyconn.load(path).to_zarr(str(tmp_path / "raw.zarr"), compressor=None)
    np.testing.assert_array_equal(
        lazyconn.load(str(tmp_path / "raw.zarr")).data.compute(),
        lazyconn.load(store).data.compute(),
    )


@pytest.mark.parametrize("compressor", ["default", None])
@pytest.mark.parametrize(
    "shape, chunks", [((20, 17, 11, 64), (12, 9, 6, 64)), ((70, 65, 60), (48, 40, 40))]
)
def test_whole_chunks_are_decoded_into_one_buffer(
    make_nifti, tmp_path, monkeypatch, shape, chunks, compressor
):
    """A local store's whole-chunk reads (every task of ``img.data``) give zarr's values,
    edge chunks included (the 3-D case is partial along its first stored axis too), each
    decoded into the array it returns: one chunk-sized buffer, where zarr's read of a Blosc
    chunk holds two (a new decoded buffer, then the copy into its output). Chunk files are
    mapped here (MAP_MIN=1), so the compressed bytes are not Python allocations."""
    import tracemalloc

    from lazyconn.io import _dask

    monkeypatch.setattr(store_mod, "MAP_MIN", 1)

    path, ref = make_nifti("run.nii", shape=shape)
    store = str(tmp_path / "run.zarr")
    lazyconn.load(path).to_zarr(store, chunks=chunks, compressor=compressor)
    decoded = []
    real = store_mod.read_chunk
    monkeypatch.setattr(_dask, "read_chunk", lambda *a: decoded.append(a[1]) or real(*a))
    img = lazyconn.load(store)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(img.data.compute(), ref)
    n_chunks = int(np.prod([-(-s // c) for s, c in zip(shape, chunks, strict=True)]))
    assert len(set(decoded)) == len(decoded) == n_chunks
    array = zarr.open_group(store, mode="r")["0"]
    reader = _dask._CheckedZarr(store_mod.open_store(store).array, "run.zarr")
    assert reader.in_place
    chunk_bytes = int(np.prod(array.chunks)) * array.dtype.itemsize

    def traced_peak(read, key):
        """The least traced peak of 3 reads after a warm-up one (other threads of a test
        session allocate too while tracemalloc runs)."""
        read(key)
        peaks = []
        for _ in range(3):
            tracemalloc.start()
            out = read(key)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        return out, min(peaks) / chunk_bytes

    for coords in [(0,) * len(shape), tuple(n - 1 for n in array.cdata_shape)]:
        key = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(coords, array.chunks, array.shape, strict=True)
        )
        expected, theirs = traced_peak(array.__getitem__, key)
        out, ours = traced_peak(reader.__getitem__, key)
        np.testing.assert_array_equal(out, expected)
        assert out.flags.c_contiguous and out.flags.writeable
        assert ours < 1.15, (ours, theirs)
        if compressor is not None and not any(coords):  # a whole Blosc chunk
            assert theirs > 1.8, theirs  # zarr's read: its decoded buffer, then the copy


@pytest.mark.parametrize("compressor", ["default", None])
def test_chunks_read_in_pieces_of_frames(make_nifti, tmp_path, monkeypatch, compressor):
    """``voxel_frames`` reads a store's chunks as pieces of whole time frames (Blosc blocks
    decoded a few at a time, a frame split between two pieces carried to the next), voxels
    in each block's F order; edge chunks are cut to the array. Without Blosc (or for a
    chunk it cannot decode in pieces) the chunk comes whole. Any other array: None."""
    from lazyconn.io import _dask

    monkeypatch.setattr(store_mod, "FRAMES_BYTES", 1)  # one Blosc block at a time
    path, _ = make_nifti("run.nii", shape=(20, 17, 11, 128))
    store = str(tmp_path / "run.zarr")
    # 20 x 17 x 6 voxels x 128 frames: 1 MB chunks, two 512 kB Blosc blocks of 64.25 frames
    lazyconn.load(path).to_zarr(store, chunks=(20, 17, 6, 128), compressor=compressor)
    img = lazyconn.load(store)
    frames = _dask.voxel_frames(img.data)
    assert frames is not None
    assert _dask.voxel_frames(img.data + 0) is None
    assert _dask.voxel_frames(lazyconn.load(path).data) is None
    n_pieces = []
    for block in np.ndindex(*img.data.numblocks):
        want = img.data.blocks[block].compute()
        pieces = [p.copy() for p in frames(block)]  # each piece is valid until the next
        n_pieces.append(len(pieces))
        got = np.concatenate(pieces)
        np.testing.assert_array_equal(got, want.reshape(-1, want.shape[-1], order="F").T)
    # several blocks per chunk with Blosc (pieces of fewer frames than the chunk)
    assert min(n_pieces) > 1 if compressor is not None else set(n_pieces) == {1}


def test_a_chunk_is_decoded_a_slab_of_volumes_at_a_time(make_nifti, tmp_path):
    """``voxel_frames(...).slabs`` (how the streamed pass reads a local store's block):
    any slab of volumes of a part of a chunk, edge chunks included, equals the stored
    values; without Blosc there is none (the block is read whole)."""
    from lazyconn.io import _dask

    path, ref = make_nifti("run.nii", shape=(13, 11, 9, 30))
    store = str(tmp_path / "run.zarr")
    lazyconn.load(path).to_zarr(store, chunks=(8, 6, 5, 30))
    frames = _dask.voxel_frames(lazyconn.load(store).data)
    # a part of the (edge) last chunk along x, and of the first along y and z
    block = frames.slabs((1, 0, 0, 0), (slice(1, 4), slice(1, 6), slice(0, 5)))
    assert block.shape == (3, 5, 5, 30) and block.dtype == ref.dtype
    for t0, t1 in [(0, 7), (7, 30), (12, 13), (29, 30), (3, 3)]:
        np.testing.assert_array_equal(block[..., t0:t1], ref[9:12, 1:6, 0:5, t0:t1])
    with pytest.raises(IndexError, match=r"\[\.\.\., t0:t1\] only; got \(0, 1\)"):
        block[0, 1]
    lazyconn.load(path).to_zarr(str(tmp_path / "raw.zarr"), chunks=(8, 6, 5, 30), compressor=None)
    raw = _dask.voxel_frames(lazyconn.load(str(tmp_path / "raw.zarr")).data)
    assert raw.slabs((0, 0, 0, 0), (slice(0, 8), slice(0, 6), slice(0, 5))) is None
