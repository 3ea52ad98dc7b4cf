"""A store marked complete is complete: missing chunks, flipped bytes, concurrent writers.

Converted stores and the GroupConnectome results store, locally and on S3 (moto).
"""

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

import lazyconn
from lazyconn.exceptions import ChecksumError, IntegrityWarning, MissingChunkError
from lazyconn.group._cache import ResultStore
from lazyconn.group.pipeline import GroupConnectome
from lazyconn.maskers import NiftiSpheresMasker
from lazyconn.testing.group import TINY_SEEDS, tiny_study
from lazyconn.testing.storage import with_flipped_bit

CHUNKS = (4, 5, 6)


def _chunk_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file() and "/0/c/" in p.as_posix())


@pytest.fixture
def converted(make_nifti, tmp_path):
    path, ref = make_nifti("run.nii.gz")
    store = tmp_path / "run.zarr"
    lazyconn.convert(path, store, chunks=CHUNKS, progress=False)
    return store, ref


def test_completion_record_lists_what_was_written(converted):
    store, ref = converted
    meta = zarr.open_group(store, mode="r").attrs["lazyconn"]
    assert meta["complete"] is True
    assert meta["chunks_written"] == len(_chunk_files(store)) > 1
    assert meta["checksum"] == "crc32c"
    codecs = zarr.open_group(store, mode="r")["0"].metadata.codecs
    assert type(codecs[-1]).__name__ == "Crc32cCodec"
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)


def test_missing_chunk_of_a_complete_store_is_an_error(converted):
    store, _ = converted
    lost = _chunk_files(store)[1]
    lost.unlink()
    key = lost.relative_to(store).as_posix()
    img = lazyconn.load(store)  # opening reads no chunk
    with pytest.raises(
        MissingChunkError, match=rf"store '.*run.zarr' .* chunk '{key}' is missing"
    ):
        img.data.compute()


def test_flipped_byte_is_a_checksum_error(converted):
    store, _ = converted
    victim = _chunk_files(store)[0]
    victim.write_bytes(with_flipped_bit(victim.read_bytes()))
    with pytest.raises(ChecksumError, match=r"store '.*run.zarr': chunk \(0, 0, 0, 0\) .* crc32c"):
        lazyconn.load(store).data.compute()


@pytest.mark.parametrize("how", ["pieces", "mapped"])
@pytest.mark.parametrize("where", ["first", "middle", "last", "crc"])
def test_checksum_checked_as_read(converted, monkeypatch, where, how):
    """A local chunk's crc32c is computed as its file is read: copied in pieces (small here
    so that a chunk spans many) or mapped (large chunks; every chunk here): a flipped byte
    anywhere, or in the stored crc itself, fails."""
    from lazyconn.io import store as store_mod

    monkeypatch.setattr(store_mod, "VERIFY_PIECE", 64)
    monkeypatch.setattr(store_mod, "MAP_MIN", 1 if how == "mapped" else 2**40)
    store, ref = converted
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)
    victim = _chunk_files(store)[-1]
    data = victim.read_bytes()
    assert len(data) > 3 * 64
    at = {"first": 0, "middle": len(data) // 2, "last": len(data) - 5, "crc": len(data) - 1}
    victim.write_bytes(with_flipped_bit(data, at[where], bit=0x10))
    index = tuple(int(i) for i in victim.relative_to(store / "0" / "c").parts)
    with pytest.raises(ChecksumError, match=rf"run.zarr': chunk \({', '.join(map(str, index))}\)"):
        lazyconn.load(store).data.compute()


@pytest.mark.parametrize("how", ["pieces", "mapped"])
def test_truncated_chunk_is_a_checksum_error(converted, monkeypatch, how):
    from lazyconn.io import store as store_mod

    monkeypatch.setattr(store_mod, "MAP_MIN", 1 if how == "mapped" else 2**40)
    store, _ = converted
    victim = _chunk_files(store)[0]
    victim.write_bytes(victim.read_bytes()[:-7])
    with pytest.raises(ChecksumError, match=r"chunk \(0, 0, 0, 0\) .* crc32c"):
        lazyconn.load(store).data.compute()


def test_local_chunks_are_checksummed_once(converted, monkeypatch):
    """The store verifies each local chunk as it reads it, piece by piece; zarr's codec
    does not check it a second time."""
    import google_crc32c

    from lazyconn.io import store as store_mod

    monkeypatch.setattr(store_mod, "VERIFY_PIECE", 64)
    monkeypatch.setattr(store_mod, "MAP_MIN", 2**40)
    store, ref = converted
    calls = []
    real_crc = store_mod.crc32c
    monkeypatch.setattr(store_mod, "crc32c", lambda b, c=0: calls.append(len(b)) or real_crc(b, c))
    # zarr's own check (google_crc32c) never runs on the store's verified bytes
    monkeypatch.setattr(google_crc32c, "value", lambda b: calls.append(-1))
    monkeypatch.setattr(google_crc32c, "extend", lambda c, b: calls.append(-1))
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)
    files = _chunk_files(store)
    assert max(calls) <= 64 and sum(calls) == sum(f.stat().st_size - 4 for f in files)


def test_large_chunks_are_mapped_and_checksummed_once(converted, monkeypatch):
    """Chunk files of MAP_MIN bytes or more are read through a mapping (no copy), their
    crc32c computed once over it; the values equal the file's."""
    import google_crc32c

    from lazyconn.io import store as store_mod

    monkeypatch.setattr(store_mod, "MAP_MIN", 1)
    store, ref = converted
    mapped, calls = [], []
    real_mapped, real_crc = store_mod._mapped, store_mod.crc32c
    monkeypatch.setattr(store_mod, "_mapped", lambda h, n: mapped.append(n) or real_mapped(h, n))
    monkeypatch.setattr(store_mod, "crc32c", lambda b, c=0: calls.append(len(b)) or real_crc(b, c))
    monkeypatch.setattr(google_crc32c, "value", lambda b: calls.append(-1))  # zarr's check
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)
    sizes = sorted(f.stat().st_size for f in _chunk_files(store))
    assert sorted(mapped) == sizes and sorted(calls) == [n - 4 for n in sizes]


@pytest.mark.parametrize("size", [0, 1, 7, 4096, 1 << 20, 3_000_001])
def test_crc32c_over_numpy_buffers_equals_google_crc32c(size):
    """lazyconn's crc32c (google-crc32c's C library through ctypes, which releases the GIL)
    gives google-crc32c's values, whole and continued over pieces at odd offsets."""
    import google_crc32c

    from lazyconn.io._crc import _crc32c_extend, crc32c

    if google_crc32c.implementation == "c":
        assert _crc32c_extend() is not None  # the GIL-free call is the one in use
    data = np.random.default_rng(size).integers(0, 256, size + 3, dtype=np.uint8)[3:]
    expected = google_crc32c.value(data.tobytes())
    assert crc32c(data) == expected
    cut = size // 3
    assert crc32c(data[cut:], crc32c(data[:cut])) == expected
    read_only = data.view()
    read_only.flags.writeable = False
    assert crc32c(read_only) == expected


def test_checksum_checked_through_fsspec_too(converted):
    """A store read through fsspec (as from a bucket) keeps zarr's own crc32c check."""
    store, _ = converted
    victim = _chunk_files(store)[0]
    victim.write_bytes(with_flipped_bit(victim.read_bytes()))
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.put(str(store), "/checked/run.zarr", recursive=True)
    try:
        with pytest.raises(ChecksumError, match=r"run.zarr': chunk \(0, 0, 0, 0\) .* crc32c"):
            lazyconn.load("memory://checked/run.zarr").data.compute()
    finally:
        memory.rm("/checked", recursive=True)


@pytest.mark.parametrize("how", ["copied", "mapped"])
def test_checksums_are_verified_per_array(converted, monkeypatch, how):
    """The voxels without crc32c next to a temporal mean with it (a store rewritten by
    another tool): each array is read as its own codecs say."""
    from lazyconn.io import store as store_mod

    monkeypatch.setattr(store_mod, "MAP_MIN", 1 if how == "mapped" else 2**40)
    store, ref = converted
    group = zarr.open_group(store, mode="r+")
    assert "mean" in group.array_keys()
    old = group["0"]
    values = old[...]
    del group["0"]
    new = group.create_array(
        "0", shape=old.shape, dtype=old.dtype, chunks=old.chunks, fill_value=0
    )
    new[...] = values
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)


def test_to_zarr_store_is_checked_too(make_nifti, tmp_path):
    path, ref = make_nifti("run.nii")
    out = tmp_path / "copy.zarr"
    import nibabel as nib

    in_memory = nib.Nifti1Image(np.asarray(ref, dtype=np.float32), nib.load(path).affine)
    lazyconn.load(in_memory).to_zarr(out, chunks=CHUNKS)
    assert zarr.open_group(out, mode="r").attrs["lazyconn"]["chunks_written"] > 1
    _chunk_files(out)[-1].unlink()
    with pytest.raises(MissingChunkError, match=r"copy.zarr"):
        lazyconn.load(out).data.compute()


def test_store_without_checksum_still_reads(make_nifti, tmp_path):
    """Stores written before checksums (no crc32c codec, no record) stay readable."""
    from lazyconn.io import store as store_mod

    path, ref = make_nifti("run.nii")
    out = tmp_path / "old.zarr"
    import nibabel as nib

    header = nib.load(path).header
    raw_header = header.binaryblock + b"\0" * (int(header.get_data_offset()) - 348)
    array = store_mod.create_store(str(out), header_bytes=raw_header, chunks=CHUNKS)
    group = zarr.open_group(out, mode="r+")
    del group["0"]
    old = group.create_array(
        "0", shape=array.shape, dtype=array.dtype, chunks=array.chunks, fill_value=0
    )
    old[...] = np.asarray(nib.load(path).dataobj).T
    meta = dict(group.attrs["lazyconn"])
    meta["complete"] = True
    group.attrs["lazyconn"] = meta
    np.testing.assert_array_equal(lazyconn.load(out).data.compute(), ref)


# --- the results store ------------------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("study"), n_subjects=3, shape=(8, 9, 10, 30))


def _group(**kw):
    masker = NiftiSpheresMasker(TINY_SEEDS, radius=6, standardize="zscore_sample", t_r=2.0)
    return GroupConnectome(masker, progress=False, **kw)


def _entry(root, key):
    return f"{root}/{key}.result"


@pytest.mark.s3
@pytest.mark.slow
def test_results_store_on_s3_resumes_and_verifies(study, s3_bucket):
    """Same completion, resume and verification as a local cache_dir."""
    import s3fs

    paths, confounds = study
    bucket, options = s3_bucket
    cache = f"{bucket}/cache"
    first = _group(cache_dir=cache, storage_options=options).fit(paths, confounds=confounds)
    assert first.n_cached_ == 0
    again = _group(cache_dir=cache, storage_options=options).fit(paths, confounds=confounds)
    assert again.n_cached_ == 3
    np.testing.assert_array_equal(again.subject_matrices_, first.subject_matrices_)
    fs = s3fs.S3FileSystem(**options)
    store = ResultStore(cache, options)
    assert "***" in repr(store.storage_options) and options["secret"] not in repr(store)
    root = cache[len("s3://") :]
    # A truncated entry (a store whose PUT is not atomic, a crash), a flipped byte and a
    # deleted entry: never zeros, never wrong numbers, computed again.
    truncated, flipped, deleted = store.keys()
    data = fs.cat_file(_entry(root, truncated))
    fs.pipe_file(_entry(root, truncated), data[: len(data) // 2])
    data = fs.cat_file(_entry(root, flipped))
    fs.pipe_file(_entry(root, flipped), with_flipped_bit(data, len(data) - 20))
    fs.rm(_entry(root, deleted))
    with pytest.warns(IntegrityWarning) as caught:
        third = _group(cache_dir=cache, storage_options=options).fit(paths, confounds=confounds)
    messages = sorted(str(w.message) for w in caught if w.category is IntegrityWarning)
    assert len(messages) == 2
    for key in (truncated, flipped):
        assert any(re.search(rf"s3://.*/cache.*'{key}'.*crc32c", m) for m in messages)
    assert third.n_cached_ == 0
    np.testing.assert_allclose(third.subject_matrices_, first.subject_matrices_, atol=1e-12)
    assert store.keys() == sorted([truncated, flipped, deleted])


@pytest.mark.s3
@pytest.mark.slow
def test_results_store_on_s3_costs_a_few_requests_per_subject(study, s3_bucket, monkeypatch):
    """Counted S3 API calls of the results store: one PUT per computed subject, one listing
    per run and one GET per cached subject, plus a constant per store opening (was 12 PUTs,
    30 HEADs and 30 GETs per subject over a run and its re-run: zarr metadata per entry)."""
    import collections

    import aiobotocore.client

    paths, confounds = study
    bucket, options = s3_bucket
    calls = collections.Counter()
    real = aiobotocore.client.AioBaseClient._make_api_call

    async def counting(self, operation, params):
        calls[operation] += 1
        return await real(self, operation, params)

    monkeypatch.setattr(aiobotocore.client.AioBaseClient, "_make_api_call", counting)
    cache = f"{bucket}/cache"
    first = _group(cache_dir=cache, storage_options=options).fit(paths, confounds=confounds)
    run = dict(calls)
    calls.clear()
    again = _group(cache_dir=cache, storage_options=options).fit(paths, confounds=confounds)
    rerun = dict(calls)
    assert first.n_cached_ == 0 and again.n_cached_ == len(paths) == 3
    # run: open (GET mark, GET zarr.json: both absent; PUT mark), one listing, 3 PUTs
    assert run == {"GetObject": 2, "PutObject": 1 + 3, "ListObjectsV2": 1}, run
    # re-run: open (GET mark), one listing, 3 GETs
    assert rerun == {"GetObject": 1 + 3, "ListObjectsV2": 1}, rerun


def test_results_store_flipped_byte_recomputed(study, tmp_path):
    paths, confounds = study
    cache = tmp_path / "cache"
    first = _group(cache_dir=cache).fit(paths, confounds=confounds)
    key = ResultStore(cache).keys()[0]
    entry = cache / f"{key}.result"
    entry.write_bytes(
        with_flipped_bit(entry.read_bytes(), entry.stat().st_size - 12)
    )  # in the values
    with pytest.warns(IntegrityWarning, match=rf"'{key}' of subject 'sub-0\d'.* crc32c"):
        again = _group(cache_dir=cache).fit(paths, confounds=confounds)
    assert again.n_cached_ == 2
    np.testing.assert_allclose(again.subject_matrices_, first.subject_matrices_, atol=1e-12)


def test_results_store_lost_bytes_recomputed_not_zeros(study, tmp_path):
    """A cached entry that lost its tail is never read as zeros or as part of a result."""
    paths, confounds = study
    cache = tmp_path / "cache"
    first = _group(cache_dir=cache).fit(paths, confounds=confounds)
    key = ResultStore(cache).keys()[0]
    entry = cache / f"{key}.result"
    entry.write_bytes(entry.read_bytes()[:-100])
    with pytest.warns(IntegrityWarning, match=rf"'{key}'.*failed verification"):
        again = _group(cache_dir=cache).fit(paths, confounds=confounds)
    assert again.n_cached_ == 2
    np.testing.assert_allclose(again.subject_matrices_, first.subject_matrices_, atol=1e-12)


_RACE_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from lazyconn.group._cache import ResultStore
    root, me, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(rounds):
        open(os.path.join(root, f"ready-{i}-{me}"), "w").close()
        end = time.time() + 60
        while time.time() < end and not all(  # both processes go at the same moment
            os.path.exists(os.path.join(root, f"ready-{i}-{w}")) for w in "ab"
        ):
            pass
        store = ResultStore(os.path.join(root, f"cache-{i}"))  # new cache_dir each round
        store.put("key", np.arange(6.0).reshape(2, 3) + i, {"subject": "s"})
    """
)


@pytest.mark.slow
def test_two_processes_create_and_fill_a_new_cache_dir_at_once(tmp_path):
    """Two fits starting at once on a new cache_dir: creating the store and putting the same
    key from two processes, over many rounds (before the fix about a third of the rounds
    crashed one of them with ContainsGroupError, ContainsArrayError or FileNotFoundError)."""
    rounds = 30
    script = tmp_path / "race.py"
    script.write_text(_RACE_SCRIPT)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), name, str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in "ab"
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()[-2000:]
            assert b"Warning" not in err, err.decode()[-2000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for i in range(rounds):
        store = ResultStore(tmp_path / f"cache-{i}")
        assert store.keys() == ["key"]
        np.testing.assert_array_equal(store.get("key")[0], np.arange(6.0).reshape(2, 3) + i)
